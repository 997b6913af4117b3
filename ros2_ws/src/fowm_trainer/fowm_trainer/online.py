"""The online trainer's state, without ROS: agent, offline and online buffers, the balanced sampler,
the update budget, signed weight blobs and checkpoints.

FOWM's online loop is "collect an episode, then do len(episode) * utd updates on batches drawn
offline_fraction from the offline buffer and the rest from the online one". Here the episodes come
from the robot (bags or live topics) while training runs: each new online episode adds
round(len * utd) updates to a budget that a training thread spends. All state changes happen under
one lock, so the node's threads (ingestion, training, the executor) can share it.

A checkpoint holds the agent (weights, optimisers, RNG), the online buffer, the sampler's RNG, the
budget, the push version and the identity of every online episode ingested, so a restarted trainer
neither loses nor repeats an episode: bags ingested after the last checkpoint are ingested again
(their identities are not in it), those before it are skipped. The offline buffer is rebuilt from
its bags at start (it can be large and never changes).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fowm_core.agent import FOWMAgent
from fowm_core.buffer import BalancedSampler, Episode, EpisodeBuffer
from fowm_core.config import FOWMConfig
from fowm_core.specs import ObservationSpec
from fowm_core.weights import (
    load_checkpoint,
    load_weights,
    load_weights_into,
    save_checkpoint,
    sign_weights,
    weights_sha256,
    weights_to_bytes,
)

ACTION_DIM = 4


def episode_identity(episode: Episode) -> str:
    """sha256 over an episode's arrays: the identity of an episode that came without a bag."""
    h = hashlib.sha256()
    for k in sorted(episode.obs):
        h.update(np.ascontiguousarray(episode.obs[k]).tobytes())
    h.update(episode.action.tobytes())
    h.update(episode.reward.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class SignedWeights:
    """A weights blob ready to publish and commit."""

    version: int
    blob: bytes
    sha256: str
    signature: str  # hex HMAC-SHA256 ("" when no key is configured)
    num_updates: int


class OnlineTrainer:
    """Balanced offline/online training on episodes that arrive while it trains."""

    def __init__(
        self,
        cfg: FOWMConfig,
        obs_spec: ObservationSpec,
        offline_episodes: list[Episode],
        online_capacity: int,
        seed: int = 0,
    ) -> None:
        self.cfg = cfg
        self.agent = FOWMAgent(cfg, obs_spec, ACTION_DIM)
        h = cfg.optim.horizon
        self.offline = EpisodeBuffer.holding(obs_spec, ACTION_DIM, offline_episodes, h)
        self.online = EpisodeBuffer(obs_spec, ACTION_DIM, online_capacity, h)
        self.sampler = BalancedSampler(self.offline, self.online, cfg.schedule.offline_fraction, seed=seed)
        self.lock = threading.Lock()
        self.budget = 0  # updates owed to the episodes ingested so far
        self.version = 0  # version of the last weights handed out for a push
        self.ingested: list[str] = []  # identities of online episodes, in ingestion order
        self._known: set[str] = set()

    # ------------------------------------------------------------------ data
    def knows(self, identity: str) -> bool:
        with self.lock:
            return identity in self._known

    def add_online(self, episode: Episode, identity: str) -> bool:
        """Store an online episode and owe round(len * utd) updates for it; False if already known."""
        with self.lock:
            if identity in self._known:
                return False
            self.online.add(episode)
            self.ingested.append(identity)
            self._known.add(identity)
            self.budget += max(1, round(len(episode) * self.cfg.schedule.utd))
            return True

    @property
    def can_train(self) -> bool:
        return self.budget > 0 and (self.offline.num_episodes > 0 or self.online.num_episodes > 0)

    # ------------------------------------------------------------------ training
    def update(self) -> dict[str, float]:
        """One update on a balanced batch (spends one unit of budget). Call from one thread only."""
        replay = self.cfg.replay
        alpha, beta = (replay.alpha, replay.beta) if replay.prioritised else (0.0, 0.0)
        with self.lock:
            n_off, _ = self.sampler.split(self.cfg.optim.batch_size)
            batch = self.sampler.sample(self.cfg.optim.batch_size, alpha, beta)  # gathered copies
        device = self.cfg.device
        metrics = self.agent.update(batch if device == "cpu" else batch.to(device))
        with self.lock:
            priority = getattr(self.agent, "td_priority", None)
            if replay.prioritised and priority is not None and batch.index is not None:
                # Routed by the split this batch was drawn with: an episode may have arrived meanwhile.
                index, priority = np.asarray(batch.index), np.asarray(priority).reshape(-1)
                if n_off:
                    self.offline.update_priorities(index[:n_off], priority[:n_off])
                if n_off < len(index):
                    self.online.update_priorities(index[n_off:], priority[n_off:])
            self.budget = max(0, self.budget - 1)
        return metrics

    def signed_weights(self, key: bytes | None) -> SignedWeights:
        """The current weights as a blob with the next version, sha256 and signature."""
        blob = weights_to_bytes(self.agent)
        with self.lock:
            self.version += 1
            version = self.version
        signature = sign_weights(blob, key, version) if key else ""
        return SignedWeights(version, blob, weights_sha256(blob), signature, self.agent.num_updates)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Checkpoint (atomic). Call from the training thread, between updates (the agent is only
        changed there). The buffer and sampler are snapshotted under the lock and written outside
        it, so episodes can keep arriving while a large online buffer is written."""
        with self.lock:
            extra = dict(budget=self.budget, version=self.version, ingested=list(self.ingested))
            online, sampler = _Snapshot(self.online.state_dict()), _Snapshot(self.sampler.state_dict())
        save_checkpoint(path, self.agent, {"online": online}, sampler, extra=extra)

    def load(self, path: str | Path) -> None:
        with self.lock:
            extra = load_checkpoint(path, self.agent, {"online": self.online}, self.sampler)
            self.budget = int(extra["budget"])
            self.version = int(extra["version"])
            self.ingested = list(extra["ingested"])
            self._known = set(self.ingested)

    def load_weights(self, path: str | Path) -> None:
        """Start from pretrained weights (e.g. fowm-pretrain's weights.safetensors): new Adam
        optimisers, update count 0."""
        with self.lock:
            load_weights_into(self.agent, path)

    def load_pretrained(self, path: str | Path) -> bool:
        """Start from fowm-pretrain's checkpoint: its weights, update count and random streams, and
        its Adam optimisers unless the config's `schedule.fresh_online_optimisers` asks for new ones
        (the official code's online phase continues its offline agent, optimisers included). The
        checkpoint's offline buffer is not taken (the offline bags fill this trainer's). Returns
        whether the optimisers were resumed."""
        resume = not self.cfg.schedule.fresh_online_optimisers
        with self.lock:
            load_checkpoint(path, self.agent)
            if not resume:
                self.agent.reset_optimisers()
        return resume

    def check_weights_equal(self, path: str | Path) -> None:
        """ValueError unless the weights file `path` holds exactly this trainer's weights (the
        planner starts from init_weights while the trainer starts from init_checkpoint: they must
        be one model)."""
        theirs, own = load_weights(path).tensors, self.agent.get_weights()
        differ = sorted(k for k in set(theirs) | set(own) if k not in theirs or k not in own
                        or not torch.equal(theirs[k], own[k]))  # fmt: skip
        if differ:
            raise ValueError(
                f"init_weights {path} and init_checkpoint hold different weights ({len(differ)} tensors "
                f"differ, e.g. {differ[0]}): give the weights.safetensors written with that checkpoint"
            )


class _Snapshot:
    """A state_dict taken earlier, handed to save_checkpoint in place of the live object."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def checkpoint_extra(path: str | Path) -> dict[str, Any]:
    """The `extra` of a trainer checkpoint (for tools and tests)."""
    return torch.load(path, map_location="cpu", weights_only=True)["extra"]
