"""FOWMAgent: the world model, its update step and the planner behind a small API
(`act`, `update`, weights and training state).

Loss pieces are small pure functions so they can be checked by hand.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fowm_core.augment import random_shift
from fowm_core.config import FOWMConfig
from fowm_core.planner import UncertaintyPenalisedMPPI
from fowm_core.specs import RGB_KEY, Batch, ObservationSpec
from fowm_core.world_model import WorldModel, draw_pair

# The official code clips the offline dataset's actions to +-(1 - 1e-5) (`is_data_clip`,
# `data_clip_eps`); we clip every batch, which differs from it by at most 1e-5 on online actions.
DATA_ACTION_LIMIT = 1.0 - 1e-5
# TD-MPC's policy loss and TD target use the policy's action plus N(0, min_std) noise clipped to
# +-0.3 (official `pi(z, std=min_std)`); the result is clamped into the open action box.
TDMPC_NOISE_CLIP = 0.3

# -- loss pieces ---------------------------------------------------------------------------------


def alive_mask(terminated: torch.Tensor) -> torch.Tensor:
    """(H, B, 1) -> (H, B, 1): 1 where step t still belongs to the episode, i.e. no terminal at
    any step s < t. The terminal transition itself counts; everything after it is masked."""
    before = torch.cumprod(1.0 - terminated, 0)  # 1 until (and excluding) the first terminal
    return torch.cat([torch.ones_like(terminated[:1]), before[:-1]], 0)


def time_weights(terminated: torch.Tensor, rho: float) -> torch.Tensor:
    """rho^t times the alive mask: (H, B, 1)."""
    H = terminated.shape[0]
    decay = rho ** torch.arange(H, device=terminated.device, dtype=terminated.dtype)
    return decay[:, None, None] * alive_mask(terminated)


def window_losses(per_step: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t * l_t / H for each window (so the gradient scale does not grow with the horizon).
    per_step, weights: (H, B, 1) -> (B,)."""
    return (weights * per_step).sum(0)[:, 0] / per_step.shape[0]


def weighted_loss(per_step: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t * l_t, averaged over the batch and divided by H. (H, B, 1) -> scalar."""
    return window_losses(per_step, weights).mean()


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """|tau - 1{diff < 0}| * diff^2 with diff = target - prediction (elementwise)."""
    return torch.abs(tau - (diff < 0).to(diff.dtype)) * diff.square()


def awr_weights(advantage: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """min(exp(beta * adv), max_weight), computed without overflowing to inf."""
    return torch.exp(torch.clamp(beta * advantage, max=math.log(max_weight)))


def policy_nll(pred: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """-log pi(a|z) for a deterministic tanh policy read as a unit-std Gaussian, without the constant:
    0.5 * squared error summed over action dims, as the official code. (..., A) -> (..., 1)."""
    return 0.5 * (pred - action).square().sum(-1, keepdim=True)


# -- agent ---------------------------------------------------------------------------------------


class FOWMAgent:
    """Acts by planning with the world model; learns from batches of length-H subsequences."""

    def __init__(self, cfg: FOWMConfig, obs_spec: ObservationSpec, action_dim: int) -> None:
        self.cfg, self.obs_spec, self.action_dim = cfg, obs_spec, int(action_dim)
        self.device = torch.device(cfg.device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(cfg.seed)
            self.model = WorldModel(cfg.model, obs_spec, self.action_dim).to(self.device)
        self._policy_params = list(self.model.policy.parameters())
        policy_ids = {id(p) for p in self._policy_params}
        self._model_params = [
            p
            for n, p in self.model.named_parameters()
            if not n.startswith("target.") and id(p) not in policy_ids
        ]
        self.reset_optimisers()
        lam = 0.0 if cfg.mode == "tdmpc" else cfg.planner.uncertainty_coef
        self.planner = UncertaintyPenalisedMPPI(cfg.planner, self.action_dim, self.device, cfg.seed, lam)
        self._aug_gen = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self._draw_gen = torch.Generator().manual_seed(cfg.seed + 2)  # CPU: minQ member pairs
        self.num_updates = 0
        self.td_priority: np.ndarray | None = None  # (B,) of the last update: feed to update_priorities
        self._planner_stale = True
        self._compiled = cfg.optim.compile
        if self._compiled:
            # The update's latent part (rollout, heads, losses; forward and backward) and fowm's policy
            # loss as graphs, compiled on the first update (shapes are fixed by the config).
            self._model_losses = torch.compile(self._model_losses, dynamic=False)
            self._awr_loss = torch.compile(self._awr_loss, dynamic=False)

    def reset_optimisers(self) -> None:
        """New Adam optimisers (no moments, step 0) for the world model and the policy: the state a
        fresh process that loads these weights starts from (schedule.fresh_online_optimisers)."""
        lr = self.cfg.optim.lr
        # fused: one kernel per step for all parameters instead of ~10 ops per tensor (the same
        # update up to float rounding; ~3 % of a realtime-cpu pixel update on the 2-core CPU)
        self.model_optim = torch.optim.Adam(self._model_params, lr=lr, fused=True)
        self.pi_optim = torch.optim.Adam(self._policy_params, lr=lr, fused=True)

    # -- acting ----------------------------------------------------------------------------------
    def act(self, obs: dict[str, np.ndarray], *, first_step: bool, explore: bool) -> np.ndarray:
        """One observation (matching obs_spec) -> action (A,) float32 in [-1, 1]."""
        self.obs_spec.validate(obs)
        if self._planner_stale:
            self.planner.set_model(self.model)
            self._planner_stale = False
        tensors = {k: torch.as_tensor(np.asarray(obs[k])).to(self.device) for k in self.obs_spec.modalities}
        action = self.planner.plan(tensors, first_step=first_step, explore=explore)
        return action.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def act_prior(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The policy prior alone, pi(h(obs)), without planning: (A,) float32 in [-1, 1]. Evaluating it
        next to `act` shows whether the planner improves on the prior or spoils it."""
        self.obs_spec.validate(obs)
        tensors = {
            k: torch.as_tensor(np.asarray(obs[k])).to(self.device)[None] for k in self.obs_spec.modalities
        }
        self.model.eval()
        return self.model.pi(self.model.encode(tensors))[0].float().cpu().numpy()

    # -- learning --------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of the world model, then one of the policy (after the model step, as
        the official code). Returns every loss term (before its coefficient), grad norms and value
        statistics. Leaves each window's TD-error priority in `self.td_priority` (B,)."""
        self._check_batch(batch)
        cfg, m, fowm = self.cfg.optim, self.model, self.cfg.mode == "fowm"
        b = batch.to(self.device)
        obs = dict(b.obs)
        if RGB_KEY in obs and cfg.image_pad > 0:
            obs[RGB_KEY] = random_shift(obs[RGB_KEY], cfg.image_pad, self._aug_gen)
        a = b.action.clamp(-DATA_ACTION_LIMIT, DATA_ACTION_LIMIT)  # (H, B, A)
        r, term = b.reward, b.terminated  # (H, B, 1), (H, B, 1)
        w = time_weights(b.episode_end, cfg.rho)  # (H, B, 1): rho^t, 0 after the episode's last step
        m.train()

        with self._autocast():
            if RGB_KEY in obs:  # cast all H+1 frames once for the online and target encoders
                obs[RGB_KEY] = m.encoders[RGB_KEY].cast(obs[RGB_KEY])
            with torch.no_grad():
                next_obs = {k: v[1:] for k, v in obs.items()}
                z_next, z_next_target = m.encode_online_and_target(next_obs)  # (H, B, L) each
                next_value = None  # fowm: V(z_next), in _model_losses
                if not fowm:  # TD-MPC: bootstrap from the target Qs at the (noisy) policy action
                    a_next = self._tdmpc_pi(z_next)
                    next_value = m.q_min(z_next, a_next, target=True, generator=self._draw_gen)
            z0 = m.encode({k: v[0] for k, v in obs.items()})  # (B, L): the rollout's start, with grad
            pair = self._draw_pair() if fowm else None  # minQ members of the V target
            is_weight = b.weight if b.weight is not None else torch.ones_like(r[0, :, 0])
            reward_weight = torch.ones_like(is_weight)  # (B,): optim.online_reward_weight on online rows
            if b.online is not None:
                reward_weight = reward_weight + b.online * (cfg.online_reward_weight - 1.0)
            total, losses, td_target, latents, q, v = self._model_losses(
                z0, z_next, z_next_target, a, r, term, w, is_weight, reward_weight, pair, next_value
            )

        self.model_optim.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._model_params, cfg.grad_clip_norm)
        self.model_optim.step()
        self.model_optim.zero_grad(set_to_none=True)  # free them; the policy step must add none
        with torch.no_grad():  # the new priority: rho-weighted L1 TD error summed over members and steps
            self.td_priority = (w * (q - td_target[None]).abs().sum(0)).sum(0)[:, 0].cpu().numpy()

        pi_stats, pi_loss = self._update_policy(latents.detach(), a, b.episode_end)

        self.num_updates += 1
        if self.num_updates % cfg.target_update_freq == 0:
            m.ema_update(cfg.ema_tau)
        self._planner_stale = True

        stats = {
            "consistency_loss": losses["consistency"].mean(), "reward_loss": losses["reward"].mean(),
            "q_loss": losses["q"].mean(), "pi_loss": pi_loss, "total_loss": total, "grad_norm": grad_norm,
            "q_mean": q.mean(), "q_ensemble_std": q.std(0).mean(), "td_target_mean": td_target.mean(),
            "is_weight_mean": is_weight.mean(), **pi_stats,
        }  # fmt: skip
        if fowm:
            stats |= {"v_loss": losses["v"].mean(), "v_mean": v.mean()}
        keys = list(stats)
        values = torch.stack([s.detach().float() for s in stats.values()]).tolist()  # one device sync
        return dict(zip(keys, values, strict=True))

    def warm_up_update(self) -> float:
        """With `optim.compile`: compile the update now, before the first real one, by updating a
        scratch agent of the same config on a zero batch of the update's shapes. Compiled graphs are
        cached per code and shapes, not per agent, so this agent's first update finds them, while its
        weights, optimisers, counters and random streams stay untouched. Returns the seconds it took
        (0.0 without `optim.compile`). The trainer node and `fowm-pretrain` call it at start, so the
        first push is not held up by the compile.

        If compiling fails (e.g. no C++ compiler for inductor's CPU kernels), this agent warns and
        trains eagerly from then on: the same update, slower. Call it before the first update so that
        a failure cannot surface in the middle of one."""
        if not self._compiled:
            return 0.0
        start = time.perf_counter()
        H, B = self.cfg.optim.horizon, self.cfg.optim.batch_size
        obs = {
            k: torch.zeros(H + 1, B, *s.shape, dtype=getattr(torch, s.dtype))
            for k, s in self.obs_spec.modalities.items()
        }
        # distinct tensors: graphs are specialised on which inputs alias each other
        steps = [torch.zeros(H, B, n) for n in (self.action_dim, 1, 1)]
        batch = Batch(obs=obs, action=steps[0], reward=steps[1], terminated=steps[2])
        try:
            FOWMAgent(self.cfg, self.obs_spec, self.action_dim).update(batch)
        except Exception as exc:  # any compiler failure: fall back, loudly
            del self._model_losses, self._awr_loss  # back to the class's eager methods
            self._compiled = False
            warnings.warn(
                f"optim.compile: compiling the update failed ({type(exc).__name__}: {str(exc)[:300]}); "
                "training eagerly instead (the same update, slower)",
                RuntimeWarning,
                stacklevel=2,
            )
            return 0.0
        return time.perf_counter() - start

    def _model_losses(
        self,
        z0: Tensor,
        z_next: Tensor,
        z_next_target: Tensor,
        a: Tensor,
        r: Tensor,
        term: Tensor,
        w: Tensor,
        is_weight: Tensor,
        reward_weight: Tensor,
        pair: Tensor | None,
        next_value: Tensor | None,
    ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor, Tensor, Tensor | None]:
        """The world-model loss of one batch from the encoded first observation z0 (B, L) and the
        online and target encodings of the next observations (H, B, L): the TD targets (fowm
        bootstraps from V(z_next); tdmpc passes `next_value`), the latent rollout through the H
        actions, then the consistency, reward, Q and (fowm) V losses, each (B,) per window, and their
        IS-weighted total, in which `reward_weight` (B,) scales each window's reward loss. A pure
        function of its tensors and the model's parameters (every random draw, `pair`, is made by the
        caller), so `optim.compile` compiles it, forward and backward, as one graph. Returns (total,
        losses, td_target (H, B, 1), latents (H+1, B, L), q (E, H, B, 1) float32, v (H, B, 1) float32
        or None)."""
        cfg, m = self.cfg.optim, self.model
        with torch.no_grad():
            if next_value is None:  # IQL-style: bootstrap from V, so only in-sample actions are backed up
                next_value = m.v(z_next)
            td_target = r + cfg.discount * (1.0 - term) * next_value.float()  # (H, B, 1)
        z_next_target = z_next_target.float()
        z, zs = z0, [z0]
        for t in range(a.shape[0]):
            z = m.next(z, a[t])
            zs.append(z)
        latents = torch.stack(zs)  # (H+1, B, L)
        z_t = latents[:-1]
        consistency = (latents[1:].float() - z_next_target).square().mean(-1, keepdim=True)
        losses = {
            "consistency": window_losses(consistency, w),
            "reward": window_losses((m.reward(z_t, a).float() - r).square(), w),
        }
        q = m.q_all(z_t, a).float()  # (E, H, B, 1)
        losses["q"] = window_losses((q - td_target[None]).square().sum(0), w)
        coefs = {
            "consistency": cfg.consistency_coef,
            "reward": cfg.reward_coef * reward_weight,  # (B,): optim.online_reward_weight on online rows
            "q": cfg.q_coef,
        }
        v = None
        if pair is not None:  # fowm
            with torch.no_grad():
                q_min_target = m.q_min(z_t.detach(), a, target=True, pair=pair).float()
            # Not detached (official): V's expectile loss also trains the encoder and dynamics.
            v = m.v(z_t).float()  # (H, B, 1)
            losses["v"] = window_losses(expectile_loss(q_min_target - v, cfg.expectile), w)
            coefs["v"] = cfg.v_coef
        total_per_window = sum(coefs[k] * losses[k] for k in losses)  # (B,)
        # Prioritised replay: importance weights on the world-model loss only (official).
        return (total_per_window * is_weight).mean(), losses, td_target, latents, q, v

    def _draw_pair(self) -> torch.Tensor:
        return draw_pair(self.model.num_q, self._draw_gen)

    def _awr_loss(
        self, latents: Tensor, a: Tensor, w: Tensor, pair: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """fowm's policy loss on float32 latents (H+1, B, L): AWR on the dataset actions, weighted by
        the advantage minQ_target(z, a) - V(z) of `pair`'s members. Pure like `_model_losses`."""
        cfg, m = self.cfg.optim, self.model
        zd = latents[:-1]
        with torch.no_grad():
            advantage = (m.q_min(zd, a, target=True, pair=pair) - m.v(zd)).float()
            weights = awr_weights(advantage, cfg.awr_beta, cfg.awr_max_weight)
        pi_loss = weighted_loss(weights * policy_nll(m.pi(zd).float(), a), w)
        return pi_loss, {"advantage_mean": advantage.mean(), "awr_weight_mean": weights.mean()}

    def _update_policy(
        self, latents: torch.Tensor, a: torch.Tensor, ended: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One policy step on detached latents (H+1, B, L), after the model step.

        fowm: AWR on dataset actions, with the advantage minQ_target(z, a) - V(z) of the just-updated
        V (official order). tdmpc (official TD-MPC): maximise the online minQ at the noisy policy
        action on all H+1 latents, sum_t rho^t, with the Qs frozen so no gradient reaches them.
        Unlike the official code, latents past an episode's end are masked here too: in our buffer
        they are padding, not the next episode's data."""
        cfg, m = self.cfg.optim, self.model
        latents = latents.float()
        w = time_weights(ended, cfg.rho)  # (H, B, 1)
        m.qs.requires_grad_(False)  # the policy loss must not leave gradients in the Qs
        try:
            # float32 even when the model step autocasts: in bfloat16 the policy's tanh rounds to +-1 at
            # |x| > 3, and its outputs near the bounds lose the resolution the losses need.
            with torch.autocast(self.device.type, enabled=False):
                if self.cfg.mode == "fowm":
                    pi_loss, stats = self._awr_loss(latents, a, w, self._draw_pair())
                else:
                    # latent t >= 1 is real while the transition into it is: (H+1, B, 1) weights
                    w_lat = time_weights(torch.cat([torch.zeros_like(ended[:1]), ended]), cfg.rho)
                    a_pi = self._tdmpc_pi(latents)
                    q = m.q_min(latents, a_pi, generator=self._draw_gen).float()  # (H+1, B, 1)
                    pi_loss = -(w_lat * q).sum(0).mean()
                    stats = {}
                with torch.no_grad():
                    pre = m.policy(latents).float()  # tanh pre-activations, for the saturation diagnostic
                stats["pi_saturation"] = (pre.abs() > 5.0).float().mean()  # share of dims with |a| > 0.9999
            self.pi_optim.zero_grad(set_to_none=True)
            pi_loss.backward()
            pi_grad_norm = torch.nn.utils.clip_grad_norm_(self.model.policy.parameters(), cfg.grad_clip_norm)
            self.pi_optim.step()
        finally:
            m.qs.requires_grad_(True)
        return {**stats, "pi_grad_norm": pi_grad_norm}, pi_loss

    def _tdmpc_pi(self, z: torch.Tensor) -> torch.Tensor:
        """TD-MPC's training action pi(z) + clip(N(0, min_std), +-0.3), clamped to the open action box
        with a straight-through gradient (official `TruncatedNormal.sample(clip=0.3)`)."""
        mu = self.model.pi(z)
        noise = torch.randn(mu.shape, generator=self._draw_gen).to(mu.device, mu.dtype)
        x = mu + (noise * self.cfg.planner.min_std).clamp(-TDMPC_NOISE_CLIP, TDMPC_NOISE_CLIP)
        return x - x.detach() + x.detach().clamp(-1.0 + 1e-6, 1.0 - 1e-6)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.optim.amp_dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.cfg.optim.amp_dtype))

    def _check_batch(self, batch: Batch) -> None:
        if batch.action.dim() != 3 or batch.action.shape[-1] != self.action_dim:
            raise ValueError(
                f"batch.action must be (H, B, {self.action_dim}), got {tuple(batch.action.shape)}"
            )
        H, B = batch.horizon, batch.batch_size
        for name in ("reward", "terminated"):
            t = getattr(batch, name)
            if tuple(t.shape) != (H, B, 1):
                raise ValueError(f"batch.{name} must be (H, B, 1) = {(H, B, 1)}, got {tuple(t.shape)}")
        if set(batch.obs) != set(self.obs_spec.modalities):
            raise ValueError(
                f"batch.obs has {sorted(batch.obs)}, expected {sorted(self.obs_spec.modalities)}"
            )
        for k, spec in self.obs_spec.modalities.items():
            want = (H + 1, B, *spec.shape)
            if tuple(batch.obs[k].shape) != want:
                raise ValueError(f"batch.obs['{k}'] must be {want}, got {tuple(batch.obs[k].shape)}")
        if not torch.isfinite(batch.action).all() or not torch.isfinite(batch.reward).all():
            raise ValueError("batch.action or batch.reward contains NaN or Inf")
        if batch.online is not None and tuple(batch.online.shape) != (B,):
            raise ValueError(f"batch.online must be (B,) = ({B},), got {tuple(batch.online.shape)}")

    # -- weights and state -----------------------------------------------------------------------
    def get_weights(self) -> dict[str, torch.Tensor]:
        """CPU contiguous copies of everything needed to act: model + EMA targets."""
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.model.state_dict().items()}

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """Strict load: every name, shape and dtype must match this agent's model."""
        own = self.model.state_dict()
        missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        if missing or unexpected:
            raise ValueError(f"weights mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for k, v in own.items():
            if tuple(tensors[k].shape) != tuple(v.shape):
                raise ValueError(
                    f"weight '{k}' has shape {tuple(tensors[k].shape)}, expected {tuple(v.shape)}"
                )
            if tensors[k].dtype != v.dtype:
                raise ValueError(f"weight '{k}' has dtype {tensors[k].dtype}, expected {v.dtype}")
        self.model.load_state_dict(tensors, strict=True)
        self.planner.set_model(self.model)  # refresh the planner's (bf16) copy now
        self._planner_stale = False

    def training_state(self) -> dict[str, Any]:
        """Optimisers, update count and RNG states: with get_weights, enough to resume exactly."""
        prev = self.planner._prev_mean
        return {
            "model_optim": self.model_optim.state_dict(),
            "pi_optim": self.pi_optim.state_dict(),
            "num_updates": self.num_updates,
            "rng": {
                "aug": self._aug_gen.get_state(),
                "draw": self._draw_gen.get_state(),
                "planner": self.planner.generator.get_state(),
            },
            "planner_mean": None if prev is None else prev.cpu().clone(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        missing = {"model_optim", "pi_optim", "num_updates", "rng"} - set(state)
        if missing:
            raise ValueError(f"training state lacks {sorted(missing)}")
        self.model_optim.load_state_dict(state["model_optim"])
        self.pi_optim.load_state_dict(state["pi_optim"])
        self.num_updates = int(state["num_updates"])
        self._aug_gen.set_state(state["rng"]["aug"])
        self._draw_gen.set_state(state["rng"]["draw"])
        self.planner.generator.set_state(state["rng"]["planner"])
        prev = state.get("planner_mean")
        self.planner._prev_mean = None if prev is None else prev.to(self.device)
