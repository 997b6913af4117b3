"""Episode storage and sampling of H+1-step training windows.

`EpisodeBuffer` keeps whole episodes in preallocated numpy arrays (a ring of observation
slots, oldest episodes evicted first). A window may start at any step of an episode, as in the
official FOWM code; steps past the episode's end are padding that the update masks. Windows are
drawn uniformly or, as the official code trains (`per: true` on both buffers), with prioritised
replay: P(window) ~ priority^alpha, with importance weights (N P)^-beta / max in the batch and
priorities set from the Q-ensemble's TD error by `update_priorities`.
`BalancedSampler` draws each batch from an offline and an online buffer in a fixed ratio.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fowm_core.specs import Batch, ObservationSpec

NPZ_FORMAT_VERSION = 1
PRIORITY_EPS = 1e-6  # added to every priority so no window becomes unreachable (official value)
PRIORITY_MAX = 1e4  # TD errors are clipped here before they become priorities (official value)


@dataclass
class Episode:
    """One recorded episode of T transitions.

    obs[k]:     (T+1, *spec.shape)  uint8 images, float32 states; obs[k][t] precedes action[t]
    action:     (T, A) float32
    reward:     (T,) float32
    terminated: the last transition ended the task (true terminal, bootstrapping stops)
    truncated:  the episode was cut by a time limit (no terminal; bootstrapping continues)
    """

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # free-form, e.g. {"success": True}; not stored

    def __post_init__(self) -> None:
        self.action = np.asarray(self.action, dtype=np.float32)
        self.reward = np.asarray(self.reward, dtype=np.float32)
        if self.action.ndim != 2 or self.action.shape[0] < 1:
            raise ValueError(f"Episode.action must be (T, A) with T >= 1, got shape {self.action.shape}")
        steps = self.action.shape[0]
        if self.reward.shape != (steps,):
            raise ValueError(f"Episode.reward must be ({steps},) like action, got shape {self.reward.shape}")
        if not np.all(np.isfinite(self.action)):
            raise ValueError("Episode.action contains NaN or Inf")
        if not np.all(np.isfinite(self.reward)):
            raise ValueError("Episode.reward contains NaN or Inf")
        if not self.obs:
            raise ValueError("Episode.obs is empty")
        for k, x in self.obs.items():
            x = np.asarray(x)
            if x.shape[:1] != (steps + 1,):
                raise ValueError(
                    f"Episode.obs['{k}'] must have T+1={steps + 1} steps (one more than actions), "
                    f"got shape {x.shape}"
                )
            if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
                raise ValueError(f"Episode.obs['{k}'] contains NaN or Inf")
            self.obs[k] = x
        self.terminated = bool(self.terminated)
        self.truncated = bool(self.truncated)

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @property
    def episode_return(self) -> float:
        return float(self.reward.sum())

    def check_spec(self, obs_spec: ObservationSpec, action_dim: int) -> None:
        """Raise ValueError if this episode does not fit `obs_spec` / `action_dim`."""
        if self.action.shape[1] != action_dim:
            raise ValueError(f"Episode.action has {self.action.shape[1]} dims, expected {action_dim}")
        missing = set(obs_spec.modalities) - set(self.obs)
        if missing:
            raise ValueError(f"Episode.obs lacks modalities {sorted(missing)}")
        for k, spec in obs_spec.modalities.items():
            x = self.obs[k]
            if x.shape[1:] != spec.shape:
                raise ValueError(f"Episode.obs['{k}'] has step shape {x.shape[1:]}, expected {spec.shape}")
            if x.dtype != spec.np_dtype:
                raise ValueError(f"Episode.obs['{k}'] has dtype {x.dtype}, expected {spec.dtype}")


class EpisodeBuffer:
    """Bounded store of whole episodes; samples H+1-step windows that never cross episodes.

    An episode of T transitions takes T+1 observation slots (its last slot holds the final
    observation and a zero action). Slots form a ring: an episode that does not fit before the
    end of the arrays starts again at slot 0, and every episode it overlaps is evicted, which is
    always the oldest ones. Memory is fixed at construction: capacity_steps slots of each array.

    Valid window starts: every step s < T of every episode. Steps past the episode's end repeat
    the final observation with zero action and reward, and `Batch.ended` flags the episode's last
    transition, after which the model masks every loss term, so padding is never learned from.
    The late steps of an episode, where rewards concentrate, are thus trained as often as the rest.
    Each slot also holds the replay priority of the window that starts there.
    """

    def __init__(self, obs_spec: ObservationSpec, action_dim: int, capacity_steps: int, horizon: int) -> None:
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if capacity_steps < horizon + 1:
            raise ValueError(f"capacity_steps must be at least horizon+1={horizon + 1}, got {capacity_steps}")
        self.obs_spec = obs_spec
        self.action_dim = int(action_dim)
        self.capacity_steps = int(capacity_steps)
        self.horizon = int(horizon)
        self._obs = {
            k: np.zeros((capacity_steps, *s.shape), dtype=s.np_dtype) for k, s in obs_spec.modalities.items()
        }
        self._action = np.zeros((capacity_steps, action_dim), dtype=np.float32)
        self._reward = np.zeros((capacity_steps,), dtype=np.float32)
        self._priority = np.ones((capacity_steps,), dtype=np.float64)
        # Episodes in insertion order (oldest first): start slot, transitions T, terminated flag.
        self._starts: list[int] = []
        self._lengths: list[int] = []
        self._terminated: list[bool] = []
        self._write = 0  # next free slot
        self._episodes_added = 0
        self._index_cache: tuple[np.ndarray, ...] | None = None

    # ---------------------------------------------------------------- contents
    @property
    def num_episodes(self) -> int:
        return len(self._starts)

    @property
    def num_transitions(self) -> int:
        return int(sum(self._lengths))

    @property
    def episodes_added(self) -> int:
        """Episodes ever added, including evicted ones."""
        return self._episodes_added

    @property
    def num_windows(self) -> int:
        """How many distinct H-step windows can be sampled right now."""
        return int(self._index()[3][-1]) if self._starts else 0

    def __len__(self) -> int:
        return self.num_transitions

    def add(self, episode: Episode) -> None:
        """Store `episode` (copied), evicting the oldest episodes if it does not fit."""
        episode.check_spec(self.obs_spec, self.action_dim)
        steps = len(episode)
        slots = steps + 1
        if slots > self.capacity_steps:
            raise ValueError(f"episode of {steps} steps needs {slots} slots > capacity {self.capacity_steps}")
        start = self._write
        if start + slots > self.capacity_steps:
            # Wrap: the skipped tail [start, capacity) holds the oldest episodes; evict them too.
            self._evict(lambda s, n: s + n + 1 > start)
            start = 0
        self._evict(lambda s, n: s < start + slots and s + n + 1 > start)
        end = start + slots
        for k, store in self._obs.items():
            store[start:end] = episode.obs[k]
        self._action[start : end - 1] = episode.action
        self._action[end - 1] = 0.0
        self._reward[start : end - 1] = episode.reward
        self._reward[end - 1] = 0.0
        # New windows get the highest priority stored so far, so each is drawn soon (official rule).
        self._priority[start : end - 1] = self._max_priority()
        self._starts.append(start)
        self._lengths.append(steps)
        self._terminated.append(episode.terminated)
        self._write = end % self.capacity_steps
        self._episodes_added += 1
        self._index_cache = None

    def _max_priority(self) -> float:
        if not self._starts:
            return 1.0
        return float(self._priority[self._index()[4]].max())

    def _evict(self, overlaps: Any) -> None:
        keep = [i for i, (s, n) in enumerate(zip(self._starts, self._lengths)) if not overlaps(s, n)]
        if len(keep) != len(self._starts):
            self._starts = [self._starts[i] for i in keep]
            self._lengths = [self._lengths[i] for i in keep]
            self._terminated = [self._terminated[i] for i in keep]
            self._index_cache = None

    def episode(self, i: int) -> Episode:
        """A copy of the i-th stored episode (0 = oldest)."""
        s, n = self._starts[i], self._lengths[i]
        return Episode(
            obs={k: v[s : s + n + 1].copy() for k, v in self._obs.items()},
            action=self._action[s : s + n].copy(),
            reward=self._reward[s : s + n].copy(),
            terminated=self._terminated[i],
            truncated=not self._terminated[i],
        )

    # ---------------------------------------------------------------- sampling
    def _index(self) -> tuple[np.ndarray, ...]:
        """Per-episode arrays used by `sample`: start, T, terminated, cumulative window counts, and the
        slot of every window's first step (N,), in window order."""
        if self._index_cache is None:
            starts = np.asarray(self._starts, dtype=np.int64)
            lengths = np.asarray(self._lengths, dtype=np.int64)
            term = np.asarray(self._terminated, dtype=bool)
            slots = np.concatenate([np.arange(s, s + n) for s, n in zip(self._starts, self._lengths)])
            self._index_cache = (starts, lengths, term, np.cumsum(lengths), slots)
        return self._index_cache

    def sample_indices(
        self, batch_size: int, rng: np.random.Generator, alpha: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Windows drawn with P ~ priority^alpha (alpha 0: uniform) as (episode index (B,), start offset
        within the episode (B,), each window's sampling probability (B,) or None when uniform)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not self._starts:
            raise ValueError("cannot sample from an empty EpisodeBuffer")
        _, _, _, cum, slots = self._index()
        prob = None
        if alpha == 0.0:
            flat = rng.integers(0, cum[-1], size=batch_size)
        else:
            p = self._priority[slots] ** alpha  # (N,)
            cdf = np.cumsum(p)
            flat = np.searchsorted(cdf, rng.random(batch_size) * cdf[-1], side="right")
            flat = np.minimum(flat, len(p) - 1)  # guards the float edge u * total == total
            prob = p[flat] / cdf[-1]
        ep = np.searchsorted(cum, flat, side="right")  # (B,)
        offset = flat - np.concatenate(([0], cum[:-1]))[ep]  # (B,)
        return ep, offset, prob

    def sample(
        self, batch_size: int, rng: np.random.Generator, alpha: float = 0.0, beta: float = 0.0
    ) -> Batch:
        """A Batch of `batch_size` windows of H transitions (H+1 observations), drawn uniformly
        (alpha 0) or by priority^alpha with importance weights (N P)^-beta / max (`Batch.weight`)."""
        ep, offset, prob = self.sample_indices(batch_size, rng, alpha)
        batch = self._gather(ep, offset)
        if prob is not None:
            w = (self.num_windows * prob) ** -beta
            batch.weight = torch.from_numpy((w / w.max()).astype(np.float32))
        return batch

    def update_priorities(
        self, index: np.ndarray | torch.Tensor, priority: np.ndarray | torch.Tensor
    ) -> None:
        """Set the priority of the windows starting at buffer slots `index` (B,) from their TD errors
        (B,): min(error, 1e4) + 1e-6, as the official code does."""
        index = np.asarray(index, dtype=np.int64)
        priority = np.asarray(priority, dtype=np.float64).reshape(-1)
        if index.shape != priority.shape:
            raise ValueError(f"index {index.shape} and priority {priority.shape} must have the same shape")
        if not np.all(np.isfinite(priority)):
            raise ValueError("priorities must be finite")
        self._priority[index] = np.minimum(priority, PRIORITY_MAX) + PRIORITY_EPS

    def _gather(self, ep: np.ndarray, offset: np.ndarray) -> Batch:
        starts, lengths, term, _, _ = self._index()
        h = self.horizon
        t = offset[None, :] + np.arange(h + 1)[:, None]  # (H+1, B) step within episode
        n = lengths[ep][None, :]  # (1, B)
        s = starts[ep][None, :]
        obs_idx = s + np.minimum(t, n)  # (H+1, B); past the terminal repeat the final obs
        act_t = t[:-1]  # (H, B)
        act_idx = s + np.minimum(act_t, n)  # slot n holds zero action/reward
        valid = act_t < n  # (H, B) False past the episode's end
        obs = {k: torch.from_numpy(v[obs_idx]) for k, v in self._obs.items()}
        action = np.where(valid[..., None], self._action[act_idx], 0.0).astype(np.float32)
        reward = np.where(valid, self._reward[act_idx], 0.0).astype(np.float32)
        last = act_t == n - 1  # (H, B) the episode's last transition
        terminated = (term[ep][None, :] & last).astype(np.float32)
        return Batch(
            obs=obs,
            action=torch.from_numpy(action),
            reward=torch.from_numpy(reward[..., None]),
            terminated=torch.from_numpy(terminated[..., None]),
            ended=torch.from_numpy(last.astype(np.float32)[..., None]),
            index=torch.from_numpy(s[0] + offset),
        )

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore this buffer exactly (contents, layout, write position).

        Only the occupied slots are exported; arrays are torch tensors so the dict can go into a
        torch checkpoint loaded with weights_only=True."""
        used = self._used_slots()
        return {
            "obs_spec": self.obs_spec.to_dict(),
            "action_dim": self.action_dim,
            "capacity_steps": self.capacity_steps,
            "horizon": self.horizon,
            "starts": list(self._starts),
            "lengths": list(self._lengths),
            "terminated": list(self._terminated),
            "write": self._write,
            "episodes_added": self._episodes_added,
            "used_slots": torch.from_numpy(used),
            "obs": {k: torch.from_numpy(v[used]) for k, v in self._obs.items()},
            "action": torch.from_numpy(self._action[used]),
            "reward": torch.from_numpy(self._reward[used]),
            "priority": torch.from_numpy(self._priority[used]),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; the buffer must have been built with the same spec and sizes."""
        for key, mine in (
            ("obs_spec", self.obs_spec.to_dict()),
            ("action_dim", self.action_dim),
            ("capacity_steps", self.capacity_steps),
            ("horizon", self.horizon),
        ):
            if state[key] != mine:
                raise ValueError(f"buffer state has {key}={state[key]}, this buffer has {mine}")
        used = np.asarray(state["used_slots"], dtype=np.int64)
        for k, v in self._obs.items():
            v[used] = np.asarray(state["obs"][k])
        self._action[used] = np.asarray(state["action"])
        self._reward[used] = np.asarray(state["reward"])
        self._priority[used] = np.asarray(state["priority"]) if "priority" in state else 1.0
        self._starts = [int(x) for x in state["starts"]]
        self._lengths = [int(x) for x in state["lengths"]]
        self._terminated = [bool(x) for x in state["terminated"]]
        self._write = int(state["write"])
        self._episodes_added = int(state["episodes_added"])
        self._index_cache = None

    def _used_slots(self) -> np.ndarray:
        if not self._starts:
            return np.zeros((0,), dtype=np.int64)
        return np.concatenate([np.arange(s, s + n + 1) for s, n in zip(self._starts, self._lengths)])

    def save_npz(self, path: str | Path) -> None:
        """Write all stored episodes (oldest first) to a compressed .npz dataset file."""
        used = self._used_slots()
        np.savez_compressed(
            path,
            format_version=np.int64(NPZ_FORMAT_VERSION),
            obs_spec=np.array(json.dumps(self.obs_spec.to_dict())),
            lengths=np.asarray(self._lengths, dtype=np.int64),
            terminated=np.asarray(self._terminated, dtype=bool),
            action=self._action[used],
            reward=self._reward[used],
            **{f"obs_{k}": v[used] for k, v in self._obs.items()},
        )

    @staticmethod
    def read_npz(path: str | Path) -> tuple[ObservationSpec, list[Episode]]:
        """Read a dataset written by `save_npz`: its observation spec and its episodes."""
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable .npz episode dataset ({e})") from e
        with data:
            if "format_version" not in data or int(data["format_version"]) != NPZ_FORMAT_VERSION:
                raise ValueError(f"{path}: not an episode dataset of format version {NPZ_FORMAT_VERSION}")
            spec = ObservationSpec.from_dict(json.loads(str(data["obs_spec"])))
            lengths, terminated = data["lengths"], data["terminated"]
            action, reward = data["action"], data["reward"]
            obs = {k: data[f"obs_{k}"] for k in spec.modalities}
        episodes, pos = [], 0
        for n, term in zip(lengths.tolist(), terminated.tolist()):
            episodes.append(
                Episode(
                    obs={k: v[pos : pos + n + 1] for k, v in obs.items()},
                    action=action[pos : pos + n],
                    reward=reward[pos : pos + n],
                    terminated=term,
                    truncated=not term,
                )
            )
            pos += n + 1
        return spec, episodes

    @classmethod
    def holding(
        cls, obs_spec: ObservationSpec, action_dim: int, episodes: Sequence[Episode], horizon: int
    ) -> EpisodeBuffer:
        """A buffer sized for exactly `episodes` (len + 1 observation slots each; at least one window)
        and holding them, in order."""
        needed = sum(len(e) + 1 for e in episodes)
        buf = cls(obs_spec, action_dim, max(needed, horizon + 1), horizon)
        for e in episodes:
            buf.add(e)
        return buf

    @classmethod
    def load_npz(
        cls, path: str | Path, action_dim: int, capacity_steps: int | None = None, horizon: int = 5
    ) -> EpisodeBuffer:
        """Build a buffer holding the episodes of a dataset (capacity defaults to its size)."""
        spec, episodes = cls.read_npz(path)
        if capacity_steps is None:
            return cls.holding(spec, action_dim, episodes, horizon)
        buf = cls(spec, action_dim, capacity_steps, horizon)
        for e in episodes:
            buf.add(e)
        return buf


class BalancedSampler:
    """Draws batches with exactly round(B * offline_fraction) rows from `offline` and the rest
    from `online`, as FOWM does during finetuning; offline only while `online` is empty.

    Owns its random generator so a checkpoint can restore the exact sampling stream."""

    def __init__(
        self, offline: EpisodeBuffer, online: EpisodeBuffer, offline_fraction: float = 0.5, seed: int = 0
    ) -> None:
        if not 0.0 <= offline_fraction <= 1.0:
            raise ValueError(f"offline_fraction must be in [0, 1], got {offline_fraction}")
        if offline.horizon != online.horizon:
            raise ValueError(f"buffer horizons differ: offline {offline.horizon}, online {online.horizon}")
        self.offline = offline
        self.online = online
        self.offline_fraction = float(offline_fraction)
        self.rng = np.random.default_rng(seed)

    def split(self, batch_size: int) -> tuple[int, int]:
        """(offline rows, online rows) of the next batch of `batch_size`."""
        if self.online.num_episodes == 0:
            return batch_size, 0
        if self.offline.num_episodes == 0:
            return 0, batch_size
        n_off = round(batch_size * self.offline_fraction)
        return n_off, batch_size - n_off

    def sample(self, batch_size: int, alpha: float = 0.0, beta: float = 0.0) -> Batch:
        """Offline rows first, then online rows; each buffer draws its rows with its own priorities
        (alpha > 0) and normalises their importance weights by its own max, as the official code does.
        `Batch.online` marks the online rows of a mixed batch; a batch without offline rows (no offline
        data, or offline_fraction 0) leaves it None, since its rows are all there is to learn from."""
        n_off, n_on = self.split(batch_size)
        pairs = ((self.offline, n_off), (self.online, n_on))
        batch = Batch.cat([b.sample(n, self.rng, alpha, beta) for b, n in pairs if n > 0])
        if n_off and n_on:
            batch.online = torch.cat([torch.zeros(n_off), torch.ones(n_on)])
        return batch

    def update_priorities(self, batch: Batch, priority: np.ndarray | torch.Tensor) -> None:
        """Send each row's TD error (B,) back to the buffer it came from."""
        if batch.index is None:
            raise ValueError("batch has no index: it did not come from a buffer")
        n_off, _ = self.split(batch.batch_size)
        priority = np.asarray(priority).reshape(-1)
        index = np.asarray(batch.index)
        if n_off:
            self.offline.update_priorities(index[:n_off], priority[:n_off])
        if n_off < batch.batch_size:
            self.online.update_priorities(index[n_off:], priority[n_off:])

    def state_dict(self) -> dict[str, Any]:
        """The sampler's RNG state (the buffers are checkpointed separately)."""
        return {"offline_fraction": self.offline_fraction, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.offline_fraction = float(state["offline_fraction"])
        self.rng.bit_generator.state = state["rng"]
