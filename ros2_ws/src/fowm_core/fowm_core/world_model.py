"""TOLD world model: encoders h, dynamics d, reward R, policy pi, Q-ensemble, value V,
plus EMA target copies of the encoder and the Q-ensemble. One nn.Module.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fowm_core.config import ModelConfig
from fowm_core.specs import RGB_KEY, STATE_KEY, ObservationSpec

# torch's CPU mish and tanh kernels are 3-4x slower than its sigmoid kernel (measured on the 2-core
# CPU, fp32 and bf16), and the planner spends much of its time in them. Both are rewritten through a
# sigmoid: the same functions up to float rounding (max abs error ~1e-6).


class _TanhExactGrad(torch.autograd.Function):
    """tanh whose derivative is computed as 4 sigmoid(2x) sigmoid(-2x) instead of 1 - tanh(x)^2.

    The usual form cancels to exactly 0 once tanh(x) rounds to 1 (|x| > 9 in float32, > 3 in
    bfloat16), so a policy pushed to an action bound stops receiving gradients for good: the TD-MPC
    baseline's policy died at the action corner that way. This form stays positive up to |x| ~ 44
    (float32), and Adam, which normalises step sizes, can still move it back."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        x2 = 2.0 * x.float()
        return (grad * 4.0 * torch.sigmoid(x2) * torch.sigmoid(-x2)).to(grad.dtype)


def fast_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1 without autograd; with autograd, tanh with a derivative that does not
    vanish at the bounds (`_TanhExactGrad`)."""
    if torch.is_grad_enabled():
        return _TanhExactGrad.apply(x)
    return torch.sigmoid(2.0 * x).mul_(2.0).sub_(1.0)


class Mish(nn.Module):
    """x tanh(softplus(x)) = x (1 - s^2) / (1 + s^2) with s = sigmoid(-x) (stable for any x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s2 = torch.sigmoid(-x).square()
        if torch.is_grad_enabled():
            return x * (1.0 - s2) / (1.0 + s2)
        num = 1.0 - s2  # no autograd: reuse buffers in place
        return num.div_(s2.add_(1.0)).mul_(x)


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear -> LN -> Mish -> Linear -> LN -> Mish -> Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), Mish(),
        nn.Linear(hidden, hidden), nn.LayerNorm(hidden), Mish(),
        nn.Linear(hidden, out_dim),
    )  # fmt: skip


class EnsembleLinear(nn.Module):
    """E independent Linear layers evaluated as one batched matmul: (E, N, in) -> (E, N, out)."""

    def __init__(self, num: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num, in_dim, out_dim))  # (E, in, out)
        self.bias = nn.Parameter(torch.zeros(num, 1, out_dim))  # (E, 1, out)
        with torch.no_grad():
            for i in range(num):
                # orthogonal init of each member, in nn.Linear's (out, in) orientation
                self.weight[i].copy_(nn.init.orthogonal_(torch.empty(out_dim, in_dim)).T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (N, in) shared by all members: broadcast without copying
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm with a separate affine transform per ensemble member: (E, N, D) -> (E, N, D)."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias, F.layer_norm(x, x.shape[-1:]), self.weight)


class QEnsemble(nn.Module):
    """num_q Q heads (Linear -> LN -> Tanh -> Linear -> ELU -> Linear(1)), computed together."""

    def __init__(self, num: int, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.l1 = EnsembleLinear(num, in_dim, hidden)
        self.ln = EnsembleLayerNorm(num, hidden)
        self.l2 = EnsembleLinear(num, hidden, hidden)
        self.l3 = EnsembleLinear(num, hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, in) -> (E, N, 1). The planner evaluates this on (H+1) x samples rows at every
        # iteration, so the Tanh is folded into its neighbours instead of costing 4 elementwise passes:
        # tanh(y) = 2 s - 1 with s = sigmoid(2y), y = LN(h) w + b, hence
        # l2(tanh(y)) = s @ 2 W2 + (b2 - 1 @ W2), and the 2y comes from scaling the LN affine.
        h = F.layer_norm(self.l1(x), (self.l2.weight.shape[1],))  # (E, N, D)
        s = torch.sigmoid(torch.addcmul(2.0 * self.ln.bias, h, 2.0 * self.ln.weight))
        l2 = self.l2
        # (baddbmm's alpha=2 would copy the (E, N, D) product; scaling the (E, D, D) weight is cheaper)
        h = torch.baddbmm(l2.bias - l2.weight.sum(1, keepdim=True), s, 2.0 * l2.weight)
        return self.l3(F.elu(h))


def draw_pair(num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two distinct members of a `num`-member ensemble, drawn uniformly: (2,) int64 on the CPU."""
    return torch.randperm(num, generator=generator)[:2]


def value_head(in_dim: int, hidden: int) -> nn.Sequential:
    """V with the Q heads' shape (official): Linear -> LN -> Tanh -> Linear -> ELU -> Linear(1)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.Tanh(),
        nn.Linear(hidden, hidden), nn.ELU(),
        nn.Linear(hidden, 1),
    )  # fmt: skip


def _compute_dtype(x: torch.Tensor, param_dtype: torch.dtype) -> torch.dtype:
    """The dtype convolutions will run in: the autocast dtype inside autocast, else the parameters'."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else param_dtype


_FUSED_CONV_RELU = torch.backends.mkldnn.is_available() and hasattr(
    torch.ops.mkldnn, "_convolution_pointwise"
)


def _conv_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, ...], groups: int = 1
) -> torch.Tensor:
    """relu(conv2d(x)). Without autograd on a CPU, oneDNN's fused conv+ReLU (the kernel inductor uses):
    the separate ReLU pass over the first layer's large output costs as much as the conv itself."""
    if _FUSED_CONV_RELU and x.device.type == "cpu" and not torch.is_grad_enabled():
        w, b = weight.to(x.dtype), bias.to(x.dtype)
        fused = torch.ops.mkldnn._convolution_pointwise
        return fused(x, w, b, [0, 0], list(stride), [1, 1], groups, "relu", [], "")  # padding, dilation
    return F.relu_(F.conv2d(x, weight, bias, stride, groups=groups))


class ImageEncoder(nn.Module):
    """uint8 (.., C, H, W) -> float features; 4 conv layers k7s2, k5s2, k3s2, k3s2 with ReLU.

    Pixels are scaled to [0, 1] as in the official code, by folding 1/255 into the first conv's
    weights (one cast of the uint8 batch instead of a cast, a divide and a copy). Convolutions run
    channels-last, the layout oneDNN's CPU kernels are fastest with (and the same on CUDA)."""

    def __init__(self, shape: tuple[int, ...], channels: int, latent_dim: int) -> None:
        super().__init__()
        c, h, w = shape
        self.convs = nn.Sequential(
            nn.Conv2d(c, channels, 7, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 5, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(inplace=True),
        )  # fmt: skip
        with torch.no_grad():
            try:
                flat = self.convs(torch.zeros(1, c, h, w)).numel()
            except RuntimeError:
                raise ValueError(f"image shape {shape} is too small for the 4-layer conv encoder") from None
        self.head = nn.Linear(flat, latent_dim)
        self.shape = tuple(shape)

    def cast(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (*lead, C, H, W) -> the same pixel values (0..255) in the compute dtype, channels-last.
        The update casts a window's frames once and encodes them with the online and target encoders.
        (Permuting the uint8 bytes first is ~2x faster on a CPU than converting into channels-last.)"""
        lead, chw = x.shape[:-3], x.shape[-3:]
        x = x.reshape(-1, *chw).permute(0, 2, 3, 1).contiguous()  # (N, H, W, C) uint8
        x = x.to(_compute_dtype(x, self.head.weight.dtype)).permute(0, 3, 1, 2)  # channels-last view
        return x.reshape(*lead, *chw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: uint8 pixels (*lead, C, H, W), or pixels already passed through `cast`."""
        lead = x.shape[:-3]
        if not x.is_floating_point():
            x = self.cast(x)
        x = x.reshape(-1, *self.shape)
        for i, conv in enumerate(self.conv_layers()):
            weight = conv.weight / 255.0 if i == 0 else conv.weight  # conv(x / 255), folded
            x = _conv_relu(x, weight, conv.bias, conv.stride)
        return self.head(x.flatten(1)).reshape(*lead, -1)

    def conv_layers(self) -> list[nn.Conv2d]:
        return [m for m in self.convs if isinstance(m, nn.Conv2d)]

    @staticmethod
    def forward_pair(a: ImageEncoder, b: ImageEncoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(x), b(x)) for two encoders of the same shape (the online and the EMA target) in one conv
        stack: the first layer reads the images once with both filter banks stacked, the rest are
        2-group convolutions. Same values; on the 2-core CPU 2.4x faster than two stacks (bf16)."""
        lead = x.shape[:-3]
        if not x.is_floating_point():
            x = a.cast(x)
        x = x.reshape(-1, *a.shape)
        for i, (ca, cb) in enumerate(zip(a.conv_layers(), b.conv_layers(), strict=True)):
            weight = torch.cat([ca.weight, cb.weight])
            weight = weight / 255.0 if i == 0 else weight
            x = _conv_relu(x, weight, torch.cat([ca.bias, cb.bias]), ca.stride, groups=1 if i == 0 else 2)
        c = x.shape[1] // 2
        za, zb = a.head(x[:, :c].flatten(1)), b.head(x[:, c:].flatten(1))
        return za.reshape(*lead, -1), zb.reshape(*lead, -1)


class WorldModel(nn.Module):
    """TOLD. Every method accepts arbitrary leading (batch/time) dims."""

    def __init__(self, cfg: ModelConfig, obs_spec: ObservationSpec, action_dim: int) -> None:
        super().__init__()
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self.cfg, self.obs_spec, self.action_dim = cfg, obs_spec, action_dim
        L, D = cfg.latent_dim, cfg.mlp_dim
        encoders: dict[str, nn.Module] = {}
        if RGB_KEY in obs_spec.modalities:
            encoders[RGB_KEY] = ImageEncoder(obs_spec.modalities[RGB_KEY].shape, cfg.num_channels, L)
        if STATE_KEY in obs_spec.modalities:
            (sdim,) = obs_spec.modalities[STATE_KEY].shape
            encoders[STATE_KEY] = nn.Sequential(
                nn.Linear(sdim, cfg.state_enc_dim), nn.ELU(), nn.Linear(cfg.state_enc_dim, L)
            )
        self.encoders = nn.ModuleDict(encoders)
        # Each modality's latent ends in LayerNorm + Sigmoid before averaging.
        self.enc_norms = nn.ModuleDict({k: nn.LayerNorm(L) for k in encoders})
        self.dynamics = nn.Sequential(mlp(L + action_dim, D, L), nn.LayerNorm(L), nn.Sigmoid())
        self.reward_head = mlp(L + action_dim, D, 1)
        self.policy = mlp(L, D, action_dim)
        self.value = value_head(L, D)
        self.qs = QEnsemble(cfg.num_q, L + action_dim, D)
        self._init_weights()
        # EMA targets: plain attributes in a ModuleDict so they appear in state_dict / get_weights.
        self.target = nn.ModuleDict(
            {"encoders": copy.deepcopy(self.encoders), "enc_norms": copy.deepcopy(self.enc_norms),
             "qs": copy.deepcopy(self.qs)}
        )  # fmt: skip
        self.target.requires_grad_(False)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.orthogonal_(
                    m.weight, gain=nn.init.calculate_gain("relu") if isinstance(m, nn.Conv2d) else 1.0
                )
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.reward_head[-1].weight)
        nn.init.zeros_(self.qs.l3.weight)

    # -- encoders -------------------------------------------------------------------------------
    def encode(self, obs: dict[str, torch.Tensor], target: bool = False) -> torch.Tensor:
        """obs[k]: (*lead, *spec.shape) -> z: (*lead, latent_dim). Images stay uint8 until here."""
        encoders = self.target["encoders"] if target else self.encoders
        norms = self.target["enc_norms"] if target else self.enc_norms
        zs = []
        for k, enc in encoders.items():
            x = obs[k] if k == RGB_KEY else obs[k].to(self._dtype())  # images are cast and scaled inside
            zs.append(torch.sigmoid(norms[k](enc(x))))
        return zs[0] if len(zs) == 1 else torch.stack(zs).mean(0)

    @torch.no_grad()
    def encode_online_and_target(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(encode(obs), encode(obs, target=True)) without autograd; images go through one paired conv
        stack (`ImageEncoder.forward_pair`) instead of two."""
        out: dict[bool, list[torch.Tensor]] = {False: [], True: []}
        for k in self.encoders:
            online, target = self.encoders[k], self.target["encoders"][k]
            if k == RGB_KEY:
                feats = ImageEncoder.forward_pair(online, target, obs[k])
            else:
                x = obs[k].to(self._dtype())
                feats = online(x), target(x)
            out[False].append(torch.sigmoid(self.enc_norms[k](feats[0])))
            out[True].append(torch.sigmoid(self.target["enc_norms"][k](feats[1])))
        z, zt = (zs[0] if len(zs) == 1 else torch.stack(zs).mean(0) for zs in (out[False], out[True]))
        return z, zt

    @property
    def num_q(self) -> int:
        return self.cfg.num_q

    def _dtype(self) -> torch.dtype:
        return self.policy[0].weight.dtype

    # -- latent heads ---------------------------------------------------------------------------
    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.dynamics(torch.cat([z, a], -1))

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.reward_head(torch.cat([z, a], -1))

    def pi(self, z: torch.Tensor) -> torch.Tensor:
        return fast_tanh(self.policy(z))

    def v(self, z: torch.Tensor) -> torch.Tensor:
        return self.value(z)

    def q_all(self, z: torch.Tensor, a: torch.Tensor, target: bool = False) -> torch.Tensor:
        """All members in one batched computation: (*lead, L), (*lead, A) -> (num_q, *lead, 1)."""
        x = torch.cat([z, a], -1)
        lead = x.shape[:-1]
        q = (self.target["qs"] if target else self.qs)(x.reshape(-1, x.shape[-1]))
        return q.reshape(q.shape[0], *lead, 1)

    def q_min(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        target: bool = False,
        generator: torch.Generator | None = None,
        pair: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """minQ: min of two members drawn at random (without replacement). (*lead, 1).
        The members are `pair` (2,) int64 if given (see `draw_pair`), else drawn from `generator`, a
        CPU generator (the draw is two integers)."""
        q = self.q_all(z, a, target)
        idx = draw_pair(q.shape[0], generator) if pair is None else pair
        return q.index_select(0, idx.to(q.device)).min(0).values

    # -- EMA -------------------------------------------------------------------------------------
    @torch.no_grad()
    def ema_update(self, tau: float) -> None:
        """target <- (1 - tau) * target + tau * online, for the encoders and the Q-ensemble."""
        for name, online in (("encoders", self.encoders), ("enc_norms", self.enc_norms), ("qs", self.qs)):
            tgt = list(self.target[name].parameters())
            src = list(online.parameters())
            torch._foreach_lerp_(tgt, src, tau)

    def num_params(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("target."))
