"""Uncertainty-penalised MPPI: plans a length-H action sequence in the world model's latent
space at every control tick and scores each candidate with

    G = sum_{t<H} gamma^t (R(z_t, a_t) - lambda u_t) + gamma^H (minQ(z_H, pi(z_H)) - lambda u_H),
    u_t = std over all Q-ensemble members at (z_t, a_t),

as FOWM's official planner does (fyhMer/fowm, `TDMPC.plan` / `estimate_value`): a fresh minQ pair
at every iteration, the terminal action pi(z_H) sampled with min_std noise (clipped to +-0.3), the
policy proposals scored at every iteration (their actions are fixed for the plan, so their rollout
through dynamics, reward and the per-step Qs is computed once and only the terminal step, with its
fresh noise and minQ pair, is redone per iteration: the same returns, ~(I-1)/I of the proposals'
rollout work saved), and NaN returns counted as 0.

Speed. A plan is a pure function of tensors (`_plan_core`): every random number is drawn up front
from the planner's generator, so `torch.compile` takes the policy proposals and each MPPI iteration
(all rollout steps, scoring, elites and refit) as graphs, compiled once per shape (CUDA graphs on a
GPU). With a `WorldModel`, the heads
that read the same (z, a) (dynamics, reward and every Q member) are stacked into one batched matmul
per layer and rollout step (`FusedHeads`); other models are scored through their methods.
"""

from __future__ import annotations

import copy
import time
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from fowm_core.config import FOWMConfig, PlannerConfig
from fowm_core.specs import RGB_KEY, STATE_KEY, ObservationSpec
from fowm_core.world_model import Mish, QEnsemble, WorldModel, fast_tanh

# FOWM samples the policy's actions from a truncated normal whose noise is clipped to this.
POLICY_NOISE_CLIP = 0.3


class PlanningModel(Protocol):
    """What the planner needs from a world model (WorldModel implements it; tests use tiny fakes).
    All methods accept arbitrary leading dims."""

    num_q: int  # Q-ensemble members

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor: ...  # (*lead, L)
    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor: ...  # (*lead, L)
    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor: ...  # (*lead, 1)
    def pi(self, z: torch.Tensor) -> torch.Tensor: ...  # (*lead, A) in [-1, 1]
    def q_all(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor: ...  # (num_q, *lead, 1)


class Draws(NamedTuple):
    """Every random number of one plan (float32), drawn from the planner's generator before it."""

    samples: torch.Tensor  # (I, H, N, A) standard normal: Gaussian action sequences
    policy: torch.Tensor  # (H, P, A) standard normal: noise of the policy proposals
    terminal: torch.Tensor  # (I, N+P, A) standard normal: noise of the terminal policy action
    pairs: torch.Tensor  # (I, 2) int64: the minQ members of each iteration
    choice: torch.Tensor  # (1,) uniform in [0, 1): which elite's first action is executed
    explore: torch.Tensor  # (A,) standard normal: exploration noise of the executed action


class Rollout(NamedTuple):
    """M action sequences rolled out from z0, up to (not including) the terminal step."""

    rewards: torch.Tensor  # (H, M) float32: R(z_t, a_t)
    q_steps: torch.Tensor | None  # (E, H, M) float32: Q_k(z_t, a_t); None when lambda = 0
    z_last: torch.Tensor  # (M, L) planner dtype: z_H


class Proposals(NamedTuple):
    """The policy proposals of one plan and their rollout, shared by every MPPI iteration."""

    actions: torch.Tensor  # (H, P, A) float32
    rollout: Rollout


def _mish(x: torch.Tensor) -> torch.Tensor:
    """Mish. Compiled: through one sigmoid, x (1 - s^2) / (1 + s^2) with s = sigmoid(-x) (inductor's
    own mish kernel measured 2-3x slower); eager: torch's kernel, one pass instead of six."""
    if not torch.compiler.is_compiling():
        return F.mish(x)
    s2 = torch.sigmoid(-x).square()
    return x * (1.0 - s2) / (1.0 + s2)


_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _tanh(x: torch.Tensor) -> torch.Tensor:
    """The Q heads' tanh. Compiled over bf16/fp16 tensors: the [7/6] Pade approximant of tanh on x
    clamped to +-5, x (135135 + 17325 x^2 + 378 x^4 + x^6) / (135135 + 62370 x^2 + 3150 x^4 + 28 x^6),
    whose largest error (1.0e-4, at the clamp) is under half a unit in the last place of either dtype
    near 1, so the rounded result is tanh's up to a rounding step. It needs no exp: ~5 % of a `paper`
    bf16 compiled plan on the 2-core CPU (2026-12-03, interleaved in one process). Otherwise tanh."""
    if not (torch.compiler.is_compiling() and x.dtype in _LOW_PRECISION):
        return fast_tanh(x)
    y = x.clamp(-5.0, 5.0)
    y2 = y * y
    num = y * (135135.0 + y2 * (17325.0 + y2 * (378.0 + y2)))
    return num / (135135.0 + y2 * (62370.0 + y2 * (3150.0 + 28.0 * y2)))


def _ln_affine(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim with a per-group affine (weight, bias broadcast over rows).

    Compiled over bf16/fp16 tensors, the statistics are taken in float32 in one pass, var = E[h^2] -
    E[h]^2, so inductor reads each row once for both sums instead of once per sum (torch's kernel
    subtracts the mean first). The cancellation this invites costs ~1e-7 (mean/std)^2 relative error
    in the variance: below the inputs' own rounding (~4e-3 in bf16) unless |mean| > ~100 std, far from
    what a LayerNorm sees after a linear layer. ~6 % of a `paper` bf16 compiled plan (2026-12-03)."""
    if not (torch.compiler.is_compiling() and h.dtype in _LOW_PRECISION):
        return F.layer_norm(h, h.shape[-1:]).mul_(weight).add_(bias)
    x = h.float()
    mean = x.mean(-1, keepdim=True)
    var = (x * x).mean(-1, keepdim=True) - mean * mean
    return ((x - mean) * torch.rsqrt(var.clamp_min(0.0) + 1e-5) * weight + bias).to(h.dtype)


def _is_mlp(m: nn.Module) -> bool:
    """Linear -> LN -> Mish -> Linear -> LN -> Mish -> Linear (world_model.mlp)."""
    kinds = (nn.Linear, nn.LayerNorm, (Mish, nn.Mish)) * 2 + (nn.Linear,)
    return isinstance(m, nn.Sequential) and len(m) == 7 and all(isinstance(x, k) for x, k in zip(m, kinds))


class FusedHeads(nn.Module):
    """The WorldModel heads that read (z, a), stacked in groups [dynamics, reward, Q_1..Q_E] (the Qs
    only when the planner needs them at every step) so a rollout step costs one batched matmul per
    layer instead of 3 + 3 + 3E small ones. Buffers are in the planner's dtype and refreshed in place
    from the model (`refresh`), so a compiled plan keeps using them without recompiling."""

    def __init__(self, model: WorldModel, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        L, A, D, E = model.cfg.latent_dim, model.action_dim, model.cfg.mlp_dim, model.num_q
        G = 2 + E

        def buf(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.num_q, self.hidden = E, D
        # Group-major (G, M, D) activations throughout: the batched matmuls read them without copies.
        self.w1, self.b1 = buf(G, L + A, D), buf(G, 1, D)  # first layers, (in, out) orientation
        self.ln1_w, self.ln1_b = buf(G, 1, D), buf(G, 1, D)  # affine of the LayerNorm after them
        self.w2, self.b2 = buf(G, D, D), buf(G, 1, D)
        self.ln2_w, self.ln2_b = buf(2, 1, D), buf(2, 1, D)  # dynamics and reward only
        self.w3_dyn, self.b3_dyn = buf(D, L), buf(L)
        self.lnz_w, self.lnz_b = buf(L), buf(L)  # the dynamics' output LayerNorm (before Sigmoid)
        # reward and Q output rows: a multiply-and-sum that fuses into the kernel before it (as a
        # batched matmul with one output column it would cost a call per step for ~no arithmetic)
        self.w3_rq, self.b3_rq = buf(1 + E, 1, D), buf(1 + E, 1)
        self.refresh(model)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """True when `model` is a WorldModel with the layer layout these buffers mirror."""
        if not isinstance(model, WorldModel):
            return False
        dyn = model.dynamics
        ok = isinstance(dyn, nn.Sequential) and len(dyn) == 3 and _is_mlp(dyn[0])
        ok = ok and isinstance(dyn[1], nn.LayerNorm) and isinstance(dyn[2], nn.Sigmoid)
        ok = ok and _is_mlp(model.reward_head) and isinstance(model.qs, QEnsemble)
        D = model.cfg.mlp_dim
        return ok and dyn[0][0].out_features == D and model.reward_head[0].out_features == D

    @torch.no_grad()
    def refresh(self, model: WorldModel) -> None:
        """Copy the model's current weights in (any dtype/device; shapes must match)."""
        dyn, rew, qs = model.dynamics[0], model.reward_head, model.qs
        for g, m in enumerate((dyn, rew)):
            self.w1[g].copy_(m[0].weight.T)
            self.b1[g, 0].copy_(m[0].bias)
            self.ln1_w[g, 0].copy_(m[1].weight)
            self.ln1_b[g, 0].copy_(m[1].bias)
            self.w2[g].copy_(m[3].weight.T)
            self.b2[g, 0].copy_(m[3].bias)
            self.ln2_w[g, 0].copy_(m[4].weight)
            self.ln2_b[g, 0].copy_(m[4].bias)
        self.w1[2:].copy_(qs.l1.weight)
        self.b1[2:].copy_(qs.l1.bias)
        self.ln1_w[2:].copy_(qs.ln.weight)
        self.ln1_b[2:].copy_(qs.ln.bias)
        self.w2[2:].copy_(qs.l2.weight)
        self.b2[2:].copy_(qs.l2.bias)
        self.w3_dyn.copy_(dyn[6].weight.T)
        self.b3_dyn.copy_(dyn[6].bias)
        self.lnz_w.copy_(model.dynamics[1].weight)
        self.lnz_b.copy_(model.dynamics[1].bias)
        self.w3_rq[0].copy_(rew[6].weight)  # (1, D)
        self.b3_rq[0].copy_(rew[6].bias)
        self.w3_rq[1:].copy_(qs.l3.weight.transpose(1, 2))  # (E, D, 1) -> (E, 1, D)
        self.b3_rq[1:].copy_(qs.l3.bias[:, 0])

    def step(self, z: torch.Tensor, a: torch.Tensor, with_q: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One rollout step of M rows: z (M, L), a (M, A) -> z' (M, L), [R, Q_1..Q_E] (1 [+ E], M)."""
        G = 2 + self.num_q if with_q else 2
        x = torch.cat([z, a], -1).expand(G, -1, -1)  # (G, M, L+A): every group reads the same (z, a)
        # Biases are added in the fused elementwise kernels (a matmul's bias would be a copy), and the
        # MLP and Q groups go through separate kernels and matmuls: an activation that switches
        # between Mish and Tanh by group would not vectorise.
        h = torch.bmm(x, self.w1[:G]) + self.b1[:G]  # (G, M, D): the one first-layer matmul
        mlp = _mish(_ln_affine(h[:2], self.ln1_w[:2], self.ln1_b[:2]))
        mlp = torch.bmm(mlp, self.w2[:2]) + self.b2[:2]
        mlp = _mish(_ln_affine(mlp, self.ln2_w, self.ln2_b))  # (2, M, D)
        z = mlp[0] @ self.w3_dyn + self.b3_dyn  # (M, L)
        z = torch.sigmoid(F.layer_norm(z, z.shape[-1:], self.lnz_w, self.lnz_b))
        r = (mlp[1:] * self.w3_rq[:1]).sum(-1) + self.b3_rq[:1]  # (1, M)
        if not with_q:
            return z, r
        return z, torch.cat([r, self._q_head(h[2:])])

    def _q_head(self, h: torch.Tensor) -> torch.Tensor:
        """The Q-ensemble after its first matmul: h (E, M, D) -> (E, M)."""
        h = _tanh(_ln_affine(h, self.ln1_w[2:], self.ln1_b[2:]))
        h = F.elu(torch.bmm(h, self.w2[2:]) + self.b2[2:])
        return (h * self.w3_rq[1:]).sum(-1) + self.b3_rq[1:]

    def q_all(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Q-ensemble only (the terminal step): z (M, L), a (M, A) -> (E, M)."""
        x = torch.cat([z, a], -1).expand(self.num_q, -1, -1)
        return self._q_head(torch.bmm(x, self.w1[2:]) + self.b1[2:])


class UncertaintyPenalisedMPPI:
    """MPPI over action sequences with Gaussian + policy proposals, warm-started across ticks.

    Call `set_model` whenever the weights change (the planner keeps its own copy in its dtype and
    refreshes it in place), `reset` at episode start, and `plan` once per tick. `warmup` compiles
    ahead of the first tick. After each plan, `last_plan_info` holds the chosen sequence's predicted
    return, its uncertainty and the plan's latency.
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
        self._fused: FusedHeads | None = None
        self._prev_mean: torch.Tensor | None = None  # (H, A) float32, last tick's refined mean
        self.last_plan_info: dict[str, float] = {}
        self._propose, self._iterate = self._propose_impl, self._iterate_impl
        if cfg.compile:
            # Shapes are fixed by the config, so each piece compiles once. On a GPU, CUDA graphs
            # replay them without per-kernel launch cost.
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._propose = torch.compile(self._propose_impl, dynamic=False, mode=mode)
            self._iterate = torch.compile(self._iterate_impl, dynamic=False, mode=mode)

    # -- model ------------------------------------------------------------------------------------
    def set_model(self, model: nn.Module) -> None:
        """Plan with `model`'s current weights. The planner keeps a copy in its own dtype/device;
        a model with the same parameter shapes as the last one is copied into it in place (cheap,
        and a compiled plan is not recompiled)."""
        with torch.no_grad():
            if self._model is not None and _same_layout(self._model, model):
                src = model.state_dict()
                for name, dst in self._model.state_dict().items():
                    dst.copy_(src[name])
            else:
                self._model = copy.deepcopy(model).to(self.device, self.dtype).eval().requires_grad_(False)
                self._fused = None
                if self.cfg.fuse and FusedHeads.supports(self._model):
                    self._fused = FusedHeads(self._model, self.dtype, self.device)
                return
            if self._fused is not None:
                self._fused.refresh(self._model)

    @property
    def fused(self) -> bool:
        """Whether plans use the stacked heads (a WorldModel and cfg.fuse) or the model's methods."""
        return self._fused is not None

    def reset(self) -> None:
        """Forget the warm start (call at episode start)."""
        self._prev_mean = None

    # -- planning ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def plan(
        self, obs: dict[str, torch.Tensor], *, first_step: bool = False, explore: bool = False
    ) -> torch.Tensor:
        """obs: one unbatched observation (tensors on the planner's device). Returns the action to
        execute, (A,) float32 in [-1, 1]. explore=True adds N(0, std[0]) noise."""
        if self._model is None:
            raise RuntimeError("UncertaintyPenalisedMPPI.plan called before set_model")
        start = time.perf_counter()
        if first_step:
            self.reset()
        H, A = self.cfg.horizon, self.action_dim
        obs = {k: (v if v.dtype == torch.uint8 else v.to(self.dtype))[None] for k, v in obs.items()}
        z0 = self._model.encode(obs).to(self.dtype)  # (1, L)
        mean = torch.zeros(H, A, device=self.device)
        if self._prev_mean is not None:
            mean[:-1] = self._prev_mean[1:]  # warm start: shift by one tick
        draws = self.draw()
        graphs = self.cfg.compile and self.device.type == "cuda"
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new plan: earlier graph outputs may be reused
        out = self._plan_core(z0, mean, draws)
        if graphs:
            out = tuple(x.clone() for x in out)  # the next plan's replays overwrite graph outputs
        action, mean, std, info = out
        self._prev_mean = mean
        if explore:
            action = (action + std[0] * draws.explore).clamp(-1, 1)
        ret, unc = info.tolist()  # the plan's one host sync
        self.last_plan_info = {
            "predicted_return": ret, "uncertainty": unc, "latency_s": time.perf_counter() - start,
        }  # fmt: skip
        return action.float()

    def warmup(self, obs: dict[str, torch.Tensor]) -> float:
        """Plan on `obs` until the plan is compiled (once without compile) and return the seconds it
        took. The generator, the warm-start mean and last_plan_info are restored afterwards, so
        warming up does not change later plans."""
        rng, prev, info = self.generator.get_state(), self._prev_mean, self.last_plan_info
        # Dynamo compiles on the first call; CUDA graphs record on a later one.
        calls = 1 if not self.cfg.compile else 3 if self.device.type == "cuda" else 2
        start = time.perf_counter()
        try:
            for i in range(calls):
                self.plan(obs, first_step=i == 0)
        finally:
            self.generator.set_state(rng)
            self._prev_mean, self.last_plan_info = prev, info
        return time.perf_counter() - start

    def draw(self) -> Draws:
        """The random numbers of the next plan, from two generator calls."""
        cfg, A = self.cfg, self.action_dim
        it, H, N, P = cfg.iterations, cfg.horizon, cfg.num_samples, cfg.num_pi_trajs
        E = self._model.num_q
        sizes = (it * H * N * A, H * P * A, it * (N + P) * A, A)
        normal = torch.randn(sum(sizes), generator=self.generator, device=self.device).split(sizes)
        uniform = torch.rand(it * E + 1, generator=self.generator, device=self.device)
        pairs = uniform[: it * E].view(it, E).argsort(-1)[:, :2]  # a random pair of distinct members
        return Draws(
            normal[0].view(it, H, N, A), normal[1].view(H, P, A), normal[2].view(it, N + P, A),
            pairs, uniform[it * E :], normal[3],
        )  # fmt: skip

    def _plan_core(
        self, z0: torch.Tensor, mean: torch.Tensor, draws: Draws
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The whole plan, with no host syncs. z0 (1, L); mean (H, A) float32 warm start.
        -> action (A,), mean (H, A), std (H, A), [predicted return, uncertainty] of the chosen elite.
        The two compiled pieces (proposals, one iteration) keep the compile time at a sixth of a
        whole-plan graph's, for the cost of a few Python calls per plan."""
        proposals = self._propose(z0, draws.policy)
        std = torch.full_like(mean, self.cfg.max_std)
        for i in range(self.cfg.iterations):
            mean, std, elite = self._iterate(
                z0, mean, std, proposals, draws.samples[i], draws.pairs[i], draws.terminal[i]
            )
        # Select the first action of an elite drawn by score (inverse CDF: no host sync)
        w, elite_returns, elite_actions, elite_uncertainty = elite
        c = torch.searchsorted(w.cumsum(0), draws.choice * w.sum()).clamp(max=len(w) - 1)  # (1,)
        action = elite_actions[0].index_select(0, c)[0]  # (A,)
        info = torch.cat([elite_returns.index_select(0, c), elite_uncertainty.index_select(0, c)])
        return action, mean, std, info

    def _propose_impl(self, z0: torch.Tensor, noise: torch.Tensor) -> Proposals:
        """Policy proposals: pi rolled out from z0 with clipped min_std noise, noise (H, P, A), and
        their rollout up to the terminal step (the same for every iteration of this plan)."""
        z, actions, steps = z0.expand(noise.shape[1], -1), [], []
        for t in range(noise.shape[0]):
            actions.append(self._policy_sample(z, noise[t]))  # (P, A)
            z, out = self._step(z, actions[-1].to(self.dtype))
            steps.append(out)
        return Proposals(torch.stack(actions), self._as_rollout(steps, z))

    def _iterate_impl(
        self,
        z0: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        proposals: Proposals,
        noise: torch.Tensor,
        pair: torch.Tensor,
        terminal_noise: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """One MPPI iteration. mean, std (H, A); proposals (H, P, A) with their rollout; noise (H, N, A).
        -> new mean, new std, (elite weights (K,), returns (K,), actions (H, K, A), uncertainty (K,))."""
        cfg = self.cfg
        # Sample actions; only they need a rollout, the proposals' is reused
        sampled = (mean[:, None] + std[:, None] * noise).clamp(-1, 1)  # (H, N, A)
        actions = torch.cat([sampled, proposals.actions], 1)  # (H, N+P, A)
        rollout = _cat_rollouts(self._rollout(z0, sampled), proposals.rollout)
        returns, uncertainty = self._finish(rollout, pair, terminal_noise)
        returns = returns.nan_to_num(0.0)  # as the official planner: a NaN return counts as 0

        # Compute elites
        elite_returns, idx = torch.topk(returns, cfg.num_elites)  # (K,)
        elite_actions = actions[:, idx]  # (H, K, A)

        # Update the sampling distribution
        w = torch.softmax(cfg.temperature * elite_returns, 0)  # (K,) = exp(T (G - max G)) / sum
        new_mean = torch.einsum("k,hka->ha", w, elite_actions)
        var = torch.einsum("k,hka->ha", w, (elite_actions - new_mean[:, None]) ** 2)
        std = var.sqrt().clamp(cfg.min_std, cfg.max_std)
        mean = cfg.momentum * mean + (1 - cfg.momentum) * new_mean
        return mean, std, (w, elite_returns, elite_actions, uncertainty[idx])

    def _policy_sample(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """pi(z) plus min_std noise clipped to +-0.3, clamped to [-1, 1]: (M, A) float32."""
        mu = self._model.pi(z).float()
        return (mu + (self.cfg.min_std * noise).clamp(-POLICY_NOISE_CLIP, POLICY_NOISE_CLIP)).clamp(-1, 1)

    # -- scoring ----------------------------------------------------------------------------------
    def score(
        self, z0: torch.Tensor, actions: torch.Tensor, pair: torch.Tensor, terminal_noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns G and uncertainty (mean over scored steps of the Q-ensemble std) of each sequence.
        z0 (1, L); actions (H, M, A) float32; pair (2,) minQ members; terminal_noise (M, A).
        -> (M,), (M,) float32. Uses the stacked heads when available."""
        return self._finish(self._rollout(z0, actions), pair, terminal_noise)

    def estimate_returns(
        self,
        z0: torch.Tensor,
        actions: torch.Tensor,
        pair: torch.Tensor,
        terminal_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """G of each sequence, (M,) float32; terminal_noise None scores the noise-free pi(z_H)."""
        if terminal_noise is None:
            terminal_noise = torch.zeros(actions.shape[1], self.action_dim, device=actions.device)
        return self.score(z0, actions.float(), pair, terminal_noise)[0]

    def _rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> Rollout:
        """Roll (H, M, A) float32 actions out from z0 (1, L): rewards, per-step Qs (lambda > 0), z_H."""
        a = actions.to(self.dtype)
        z, steps = z0.expand(actions.shape[1], -1), []
        for t in range(actions.shape[0]):
            z, out = self._step(z, a[t])
            steps.append(out)
        return self._as_rollout(steps, z)

    def _step(self, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One rollout step of M rows in the planner dtype: z' (M, L) and [R, Q_1..Q_E] at (z, a),
        (1 [+ E], M); the Qs only when lambda > 0."""
        with_q = self.uncertainty_coef > 0
        if self._fused is not None:
            return self._fused.step(z, a, with_q)
        m = self._model
        heads = [m.reward(z, a)[None]] + ([m.q_all(z, a)] if with_q else [])  # (1, M, 1), (E, M, 1)
        return m.next(z, a), torch.cat(heads)[..., 0]

    def _as_rollout(self, steps: list[torch.Tensor], z_last: torch.Tensor) -> Rollout:
        heads = torch.stack(steps, 1).float()  # (1 [+ E], H, M)
        return Rollout(heads[0], heads[1:] if self.uncertainty_coef > 0 else None, z_last)

    def _finish(
        self, rollout: Rollout, pair: torch.Tensor, terminal_noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The terminal step (pi(z_H) with `terminal_noise`, the Q-ensemble there) and G, u (M,)."""
        a_term = self._policy_sample(rollout.z_last, terminal_noise).to(self.dtype)  # (M, A)
        if self._fused is None:
            q_term = self._model.q_all(rollout.z_last, a_term).float()[..., 0]  # (E, M)
        else:
            q_term = self._fused.q_all(rollout.z_last, a_term).float()
        return self._combine(rollout.rewards, rollout.q_steps, q_term, pair)

    def _combine(
        self, rewards: torch.Tensor, q_steps: torch.Tensor | None, q_term: torch.Tensor, pair: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """rewards (H, M); q_steps (E, H, M) or None (lambda = 0); q_term (E, M) -> G (M,), u (M,)."""
        H, lam = rewards.shape[0], self.uncertainty_coef
        disc = self.cfg.discount ** torch.arange(H + 1, device=rewards.device, dtype=torch.float32)
        terms = torch.cat([rewards, q_term[pair].min(0).values[None]])  # (H+1, M)
        q = q_term[:, None] if q_steps is None else torch.cat([q_steps, q_term[:, None]], 1)  # (E, T, M)
        # unbiased std as torch.std, written out two-pass: inductor's fused std can go NaN (sqrt of a
        # rounding-negative variance) where the members agree exactly, e.g. a freshly initialised model
        u = (q - q.mean(0)).square().sum(0).div(q.shape[0] - 1).sqrt()  # (1 | H+1, M)
        if q_steps is not None:
            terms = terms - lam * u
        return disc @ terms, u.mean(0)


def _cat_rollouts(a: Rollout, b: Rollout) -> Rollout:
    """Two rollouts of the same horizon as one, rows of `a` first."""
    q = None if a.q_steps is None else torch.cat([a.q_steps, b.q_steps], -1)
    return Rollout(torch.cat([a.rewards, b.rewards], -1), q, torch.cat([a.z_last, b.z_last], 0))


def _same_layout(a: nn.Module, b: nn.Module) -> bool:
    """Same module type and the same parameter/buffer names and shapes."""
    if type(a) is not type(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def plan_flops(
    cfg: FOWMConfig, obs_spec: ObservationSpec, action_dim: int = 4, reuse_proposals: bool = True
) -> float:
    """Analytic FLOPs (2 x multiply-accumulates of the matmuls and convs) of one plan. With
    reuse_proposals=False: a planner that re-scores the policy proposals' whole rollout at every
    iteration, as the official code (and LeRobot's port) does."""
    mc, pc = cfg.model, cfg.planner
    L, D, A, E, H = mc.latent_dim, mc.mlp_dim, action_dim, mc.num_q, pc.horizon

    def mlp(i: int, o: int) -> float:
        return 2.0 * (i * D + D * D + D * o)

    dyn, rew, pol = mlp(L + A, L), mlp(L + A, 1), mlp(L, A)
    q = E * 2.0 * ((L + A) * D + D * D + D)
    q_evals = H + 1 if pc.uncertainty_coef > 0 and cfg.mode == "fowm" else 1
    per_traj = H * (dyn + rew) + q_evals * q + pol  # one scored sequence
    if reuse_proposals:
        # every iteration scores the N samples and the P proposals' terminal step; the proposals'
        # actions and their rollout up to the terminal step are computed once per plan
        terminal = q + pol
        total = pc.iterations * (pc.num_samples * per_traj + pc.num_pi_trajs * terminal)
        total += pc.num_pi_trajs * (per_traj - terminal + H * pol)
    else:
        total = pc.iterations * (pc.num_samples + pc.num_pi_trajs) * per_traj
        total += pc.num_pi_trajs * (H * pol + (H - 1) * dyn)
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
