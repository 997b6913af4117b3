"""Uncertainty-penalised MPPI: plans a length-H action sequence in the world model's latent
space at every control tick and scores each candidate with

    G = sum_{t<H} gamma^t (R(z_t, a_t) - lambda u_t) + gamma^H (minQ(z_H, pi(z_H)) - lambda u_H),
    u_t = std over all Q-ensemble members at (z_t, a_t).
"""

from __future__ import annotations

import copy
from typing import Protocol

import torch
from torch import nn

from fowm_core.config import FOWMConfig, PlannerConfig
from fowm_core.specs import RGB_KEY, STATE_KEY, ObservationSpec


class PlanningModel(Protocol):
    """What the planner needs from a world model (WorldModel implements it; tests use tiny fakes).
    All methods accept arbitrary leading dims."""

    num_q: int  # Q-ensemble members

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor: ...  # (*lead, L)
    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor: ...  # (*lead, L)
    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor: ...  # (*lead, 1)
    def pi(self, z: torch.Tensor) -> torch.Tensor: ...  # (*lead, A) in [-1, 1]
    def q_all(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor: ...  # (num_q, *lead, 1)


class UncertaintyPenalisedMPPI:
    """MPPI over action sequences with Gaussian + policy proposals, warm-started across ticks.

    Call `set_model` whenever the weights change (the bf16 path keeps its own copy), `reset` at
    episode start, and `plan` once per tick.
    """

    def __init__(
        self,
        cfg: PlannerConfig,
        action_dim: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        uncertainty_coef: float | None = None,
    ) -> None:
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self.cfg = cfg
        self.action_dim = action_dim
        self.device = torch.device(device)
        self.dtype: torch.dtype = getattr(torch, cfg.dtype)
        # tdmpc mode plans without the penalty; the agent passes 0 here.
        self.uncertainty_coef = cfg.uncertainty_coef if uncertainty_coef is None else uncertainty_coef
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self._model: nn.Module | None = None
        self._source: nn.Module | None = None
        self._prev_mean: torch.Tensor | None = None  # (H, A) float32, last tick's refined mean
        # Fuses the many elementwise ops (LayerNorm, Mish, ELU) that dominate the CPU time in eager
        # mode; shapes are fixed by the config, so it compiles once per shape (N and P rows).
        self._returns = self.estimate_returns
        if cfg.compile:
            self._returns = torch.compile(self.estimate_returns, dynamic=False)

    def set_model(self, model: nn.Module) -> None:
        """Use `model` for planning. fp32 on the model's own device plans with it directly; otherwise
        a copy in the planner's dtype/device is kept and refreshed in place on later calls."""
        p = next(model.parameters())
        if p.dtype == self.dtype and p.device == self.device:
            self._model = model
        elif self._source is model and self._model is not None and self._model is not model:
            with torch.no_grad():
                for dst, src in zip(
                    self._model.state_dict().values(), model.state_dict().values(), strict=True
                ):
                    dst.copy_(src)
        else:
            self._model = copy.deepcopy(model).to(self.device, self.dtype)
        self._model.eval()
        self._source = model

    def reset(self) -> None:
        """Forget the warm start (call at episode start)."""
        self._prev_mean = None

    @torch.inference_mode()
    def plan(
        self, obs: dict[str, torch.Tensor], *, first_step: bool = False, explore: bool = False
    ) -> torch.Tensor:
        """obs: one unbatched observation (tensors on the planner's device). Returns the action to
        execute, (A,) float32 in [-1, 1]. explore=True adds N(0, std[0]) noise."""
        if self._model is None:
            raise RuntimeError("UncertaintyPenalisedMPPI.plan called before set_model")
        cfg, m, A, H = self.cfg, self._model, self.action_dim, self.cfg.horizon
        if first_step:
            self.reset()
        obs = {k: (v if v.dtype == torch.uint8 else v.to(self.dtype))[None] for k, v in obs.items()}
        z0 = m.encode(obs)  # (1, L)
        # One pair of members for every terminal minQ in this plan, so that the policy proposals'
        # returns (fixed for the whole plan) can be computed once.
        pair = torch.randperm(m.num_q, generator=self.generator, device=self.device)[:2]

        # Policy proposals: pi rolled out with min_std noise, scored once.
        P = cfg.num_pi_trajs
        pi_actions = torch.empty(H, P, A, device=self.device, dtype=self.dtype)
        if P > 0:
            z = z0.expand(P, -1)
            for t in range(H):
                noise = torch.randn(P, A, generator=self.generator, device=self.device, dtype=self.dtype)
                pi_actions[t] = (m.pi(z) + cfg.min_std * noise).clamp(-1, 1)
                if t < H - 1:
                    z = m.next(z, pi_actions[t])
            pi_returns = self._returns(z0, pi_actions, pair)  # (P,)
        else:
            pi_returns = torch.empty(0, device=self.device)

        mean = torch.zeros(H, A, device=self.device)
        if self._prev_mean is not None:
            mean[:-1] = self._prev_mean[1:]  # warm start: shift by one tick
        std = torch.full((H, A), cfg.max_std, device=self.device)
        N, K = cfg.num_samples, cfg.num_elites
        for _ in range(cfg.iterations):
            # Sample actions
            noise = torch.randn(H, N, A, generator=self.generator, device=self.device)
            actions = (mean[:, None] + std[:, None] * noise).clamp(-1, 1).to(self.dtype)  # (H, N, A)
            returns = self._returns(z0, actions, pair)  # (N,)
            actions = torch.cat([actions, pi_actions], 1)  # (H, N+P, A)
            returns = torch.cat([returns, pi_returns])  # (N+P,)

            # Compute elites
            elite_returns, idx = torch.topk(returns, K)  # (K,)
            elite_actions = actions[:, idx].float()  # (H, K, A)

            # Update the sampling distribution
            w = torch.softmax(cfg.temperature * elite_returns, 0)  # (K,) = exp(T (G - max G)) / sum
            new_mean = torch.einsum("k,hka->ha", w, elite_actions)
            var = torch.einsum("k,hka->ha", w, (elite_actions - new_mean[:, None]) ** 2)
            std = var.sqrt().clamp(cfg.min_std, cfg.max_std)
            mean = cfg.momentum * mean + (1 - cfg.momentum) * new_mean

        # Select the first action of an elite drawn by score
        choice = torch.multinomial(w, 1, generator=self.generator)
        action = elite_actions[0, choice[0]]  # (A,)
        self._prev_mean = mean
        if explore:
            noise = torch.randn(A, generator=self.generator, device=self.device)
            action = (action + std[0] * noise).clamp(-1, 1)
        return action.float()

    def estimate_returns(self, z0: torch.Tensor, actions: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        """Uncertainty-penalised return G of each sequence. z0: (1, L); actions: (H, N, A) -> (N,) float32."""
        m, H, N = self._model, actions.shape[0], actions.shape[1]
        gamma, lam = self.cfg.discount, self.uncertainty_coef
        z = z0.expand(N, -1)
        zs = [z]
        for t in range(H):
            z = m.next(z, actions[t])
            zs.append(z)
        latents = torch.stack(zs)  # (H+1, N, L)
        rewards = m.reward(latents[:-1], actions).float()  # (H, N, 1)
        terminal_action = m.pi(latents[-1])  # (N, A)
        disc = gamma ** torch.arange(H + 1, device=self.device, dtype=torch.float32)  # (H+1,)
        if lam > 0:
            # All H+1 Q-ensemble evaluations in one batched call: (E, H+1, N, 1)
            q = m.q_all(latents, torch.cat([actions, terminal_action[None]])).float()
            penalised = torch.cat([rewards, q[pair, -1].min(0).values[None]]) - lam * q.std(0)  # (H+1, N, 1)
        else:
            q_term = m.q_all(latents[-1], terminal_action).float()  # (E, N, 1)
            penalised = torch.cat([rewards, q_term[pair].min(0).values[None]])
        return torch.einsum("t,tn->n", disc, penalised[..., 0])


def plan_flops(cfg: FOWMConfig, obs_spec: ObservationSpec, action_dim: int = 4) -> float:
    """Analytic FLOPs (2 x multiply-accumulates of the matmuls and convs) of one plan."""
    mc, pc = cfg.model, cfg.planner
    L, D, A, E, H = mc.latent_dim, mc.mlp_dim, action_dim, mc.num_q, pc.horizon

    def mlp(i: int, o: int) -> float:
        return 2.0 * (i * D + D * D + D * o)

    dyn, rew, pol = mlp(L + A, L), mlp(L + A, 1), mlp(L, A)
    q = E * 2.0 * ((L + A) * D + D * D + D)
    q_evals = H + 1 if pc.uncertainty_coef > 0 and cfg.mode == "fowm" else 1
    per_traj = H * (dyn + rew) + q_evals * q + pol  # one scored sequence
    total = pc.iterations * pc.num_samples * per_traj + pc.num_pi_trajs * (per_traj + H * pol)
    total += _encoder_flops(cfg, obs_spec)  # encoding z0
    return total


def _encoder_flops(cfg: FOWMConfig, obs_spec: ObservationSpec) -> float:
    mc = cfg.model
    flops = 0.0
    if STATE_KEY in obs_spec.modalities:
        (s,) = obs_spec.modalities[STATE_KEY].shape
        flops += 2.0 * (s * mc.state_enc_dim + mc.state_enc_dim * mc.latent_dim)
    if RGB_KEY in obs_spec.modalities:
        c, h, w = obs_spec.modalities[RGB_KEY].shape
        for k in (7, 5, 3, 3):
            h, w = (h - k) // 2 + 1, (w - k) // 2 + 1
            flops += 2.0 * h * w * mc.num_channels * c * k * k
            c = mc.num_channels
        flops += 2.0 * c * h * w * mc.latent_dim
    return flops
