"""FOWMAgent: the world model, its update step and the planner behind a small API
(`act`, `update`, weights and training state).

Loss pieces are small pure functions so they can be checked by hand.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fowm_core.augment import random_shift
from fowm_core.config import FOWMConfig
from fowm_core.planner import UncertaintyPenalisedMPPI
from fowm_core.specs import RGB_KEY, Batch, ObservationSpec
from fowm_core.world_model import WorldModel

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


def weighted_loss(per_step: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t * l_t, averaged over the batch and divided by H (so the gradient scale does not
    grow with the horizon). per_step, weights: (H, B, 1) -> scalar."""
    return (weights * per_step).sum(0).mean() / per_step.shape[0]


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """|tau - 1{diff < 0}| * diff^2 with diff = target - prediction (elementwise)."""
    return torch.abs(tau - (diff < 0).to(diff.dtype)) * diff.square()


def awr_weights(advantage: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """min(exp(beta * adv), max_weight), computed without overflowing to inf."""
    return torch.exp(torch.clamp(beta * advantage, max=math.log(max_weight)))


def policy_nll(pred: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """-log pi(a|z) for a deterministic tanh policy read as a Gaussian with a fixed std, up to
    constants and scale: the squared error averaged over action dims. (..., A) -> (..., 1)."""
    return (pred - action).square().mean(-1, keepdim=True)


# -- agent ---------------------------------------------------------------------------------------


class FOWMAgent:
    """Acts by planning with the world model; learns from batches of length-H subsequences."""

    def __init__(self, cfg: FOWMConfig, obs_spec: ObservationSpec, action_dim: int) -> None:
        self.cfg, self.obs_spec, self.action_dim = cfg, obs_spec, int(action_dim)
        self.device = torch.device(cfg.device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
            torch.manual_seed(cfg.seed)
            self.model = WorldModel(cfg.model, obs_spec, self.action_dim).to(self.device)
        policy_params = list(self.model.policy.parameters())
        policy_ids = {id(p) for p in policy_params}
        self._model_params = [
            p
            for n, p in self.model.named_parameters()
            if not n.startswith("target.") and id(p) not in policy_ids
        ]
        self.model_optim = torch.optim.Adam(self._model_params, lr=cfg.optim.lr)
        self.pi_optim = torch.optim.Adam(policy_params, lr=cfg.optim.lr)
        lam = 0.0 if cfg.mode == "tdmpc" else cfg.planner.uncertainty_coef
        self.planner = UncertaintyPenalisedMPPI(cfg.planner, self.action_dim, self.device, cfg.seed, lam)
        self._aug_gen = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self._draw_gen = torch.Generator().manual_seed(cfg.seed + 2)  # CPU: minQ member pairs
        self.num_updates = 0
        self._planner_stale = True

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

    # -- learning --------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of the world model and one of the policy. Returns every loss term
        (before its coefficient), grad norms and value statistics."""
        self._check_batch(batch)
        cfg, m, fowm = self.cfg.optim, self.model, self.cfg.mode == "fowm"
        b = batch.to(self.device)
        obs = dict(b.obs)
        if RGB_KEY in obs and cfg.image_pad > 0:
            obs[RGB_KEY] = random_shift(obs[RGB_KEY], cfg.image_pad, self._aug_gen)
        H = b.horizon
        a, r, term = b.action, b.reward, b.terminated  # (H, B, A), (H, B, 1), (H, B, 1)
        w = time_weights(term, cfg.rho)  # (H, B, 1)
        m.train()

        with torch.no_grad():
            next_obs = {k: v[1:] for k, v in obs.items()}
            z_next_target = m.encode(next_obs, target=True)  # (H, B, L)
            z_next = m.encode(next_obs)
            if fowm:  # IQL-style: bootstrap from V, so only in-sample actions are backed up
                next_value = m.v(z_next)
            else:  # TD-MPC: bootstrap from the target Qs at the policy's action
                next_value = m.q_min(z_next, m.pi(z_next), target=True, generator=self._draw_gen)
            td_target = r + cfg.discount * (1.0 - term) * next_value  # (H, B, 1)

        # Latent rollout from the first observation
        z = m.encode({k: v[0] for k, v in obs.items()})  # (B, L)
        zs = [z]
        for t in range(H):
            z = m.next(z, a[t])
            zs.append(z)
        latents = torch.stack(zs)  # (H+1, B, L)
        z_t = latents[:-1]

        consistency = weighted_loss((latents[1:] - z_next_target).square().mean(-1, keepdim=True), w)
        reward_loss = weighted_loss((m.reward(z_t, a) - r).square(), w)
        q = m.q_all(z_t, a)  # (E, H, B, 1)
        q_loss = weighted_loss((q - td_target[None]).square().sum(0), w)
        total = cfg.consistency_coef * consistency + cfg.reward_coef * reward_loss + cfg.q_coef * q_loss
        if fowm:
            with torch.no_grad():
                q_min_target = m.q_min(z_t.detach(), a, target=True, generator=self._draw_gen)  # (H, B, 1)
            v = m.v(z_t.detach())
            v_loss = weighted_loss(expectile_loss(q_min_target - v, cfg.expectile), w)
            total = total + cfg.v_coef * v_loss

        self.model_optim.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self._model_params, cfg.grad_clip_norm)
        self.model_optim.step()

        # Policy: AWR on dataset actions (fowm) or maximise minQ (tdmpc); z detached either way.
        zd = z_t.detach()
        if fowm:
            advantage = (q_min_target - v).detach()
            weights = awr_weights(advantage, cfg.awr_beta, cfg.awr_max_weight)
            pi_loss = weighted_loss(weights * policy_nll(m.pi(zd), a), w)
        else:
            pi_loss = -weighted_loss(m.q_min(zd, m.pi(zd), generator=self._draw_gen), w)
        self.pi_optim.zero_grad(set_to_none=True)
        pi_loss.backward()
        pi_grad_norm = torch.nn.utils.clip_grad_norm_(self.model.policy.parameters(), cfg.grad_clip_norm)
        self.pi_optim.step()
        if not fowm:  # the tdmpc policy loss left gradients in the Qs; they must not leak
            self.model_optim.zero_grad(set_to_none=True)

        self.num_updates += 1
        if self.num_updates % cfg.target_update_freq == 0:
            m.ema_update(cfg.ema_tau)
        self._planner_stale = True

        stats = {
            "consistency_loss": consistency, "reward_loss": reward_loss, "q_loss": q_loss,
            "pi_loss": pi_loss, "total_loss": total, "grad_norm": grad_norm, "pi_grad_norm": pi_grad_norm,
            "q_mean": q.mean(), "q_ensemble_std": q.std(0).mean(), "td_target_mean": td_target.mean(),
        }  # fmt: skip
        if fowm:
            stats |= {"v_loss": v_loss, "v_mean": v.mean(), "advantage_mean": advantage.mean(),
                      "awr_weight_mean": weights.mean()}  # fmt: skip
        keys = list(stats)
        values = torch.stack([s.detach().float() for s in stats.values()]).tolist()  # one device sync
        return dict(zip(keys, values, strict=True))

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
