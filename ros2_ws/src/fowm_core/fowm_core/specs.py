"""Observation/action specifications and the training batch.

fowm_core knows no robot: everything it needs to know about one is in these specs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

RGB_KEY = "rgb"
STATE_KEY = "state"


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one observation modality (without batch/time dims)."""

    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "uint8" for images, "float32" for states

    def __post_init__(self) -> None:
        if not self.shape or any(int(s) <= 0 for s in self.shape):
            raise ValueError(f"ArraySpec.shape must be non-empty and positive, got {self.shape}")
        if self.dtype not in ("uint8", "float32"):
            raise ValueError(f"ArraySpec.dtype must be 'uint8' or 'float32', got {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)


@dataclass(frozen=True)
class ObservationSpec:
    """Named observation modalities. Images are channel-first uint8 (C, H, W) under "rgb";
    proprioceptive state is a float32 vector under "state"."""

    modalities: dict[str, ArraySpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("ObservationSpec needs at least one modality ('rgb' and/or 'state')")
        unknown = set(self.modalities) - {RGB_KEY, STATE_KEY}
        if unknown:
            raise ValueError(f"unknown observation modalities {sorted(unknown)}; supported: 'rgb', 'state'")
        rgb = self.modalities.get(RGB_KEY)
        if rgb is not None and (len(rgb.shape) != 3 or rgb.dtype != "uint8"):
            raise ValueError(f"'rgb' must be uint8 (C, H, W), got {rgb}")
        state = self.modalities.get(STATE_KEY)
        if state is not None and (len(state.shape) != 1 or state.dtype != "float32"):
            raise ValueError(f"'state' must be float32 (D,), got {state}")

    @classmethod
    def make(cls, rgb: tuple[int, int, int] | None = None, state_dim: int | None = None) -> ObservationSpec:
        mods: dict[str, ArraySpec] = {}
        if rgb is not None:
            mods[RGB_KEY] = ArraySpec(tuple(rgb), "uint8")
        if state_dim is not None:
            mods[STATE_KEY] = ArraySpec((int(state_dim),), "float32")
        return cls(mods)

    def to_dict(self) -> dict[str, dict]:
        return {k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in self.modalities.items()}

    @classmethod
    def from_dict(cls, d: dict[str, dict]) -> ObservationSpec:
        return cls({k: ArraySpec(tuple(v["shape"]), v["dtype"]) for k, v in d.items()})

    def validate(self, obs: dict[str, np.ndarray]) -> None:
        """Raise ValueError naming the problem if `obs` (one unbatched observation) does not
        match this spec or holds non-finite values."""
        missing = set(self.modalities) - set(obs)
        if missing:
            raise ValueError(f"observation lacks modalities {sorted(missing)}")
        for k, spec in self.modalities.items():
            x = np.asarray(obs[k])
            if x.shape != spec.shape:
                raise ValueError(f"observation '{k}' has shape {x.shape}, expected {spec.shape}")
            if x.dtype != spec.np_dtype:
                raise ValueError(f"observation '{k}' has dtype {x.dtype}, expected {spec.dtype}")
            if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
                raise ValueError(f"observation '{k}' contains NaN or Inf")


@dataclass
class Batch:
    """A batch of length-H subsequences, time-major.

    obs[k]:     (H+1, B, *spec.shape)  uint8 images stay uint8 until the model normalises them
    action:     (H, B, A)
    reward:     (H, B, 1)
    terminated: (H, B, 1)  1.0 where the transition t -> t+1 ended the task (a true terminal:
                bootstrapping stops)
    ended:      (H, B, 1)  1.0 where transition t is its episode's last, by a terminal or a time limit;
                every loss term after it is masked (windows may run past an episode's end, as in the
                official code). None: the same as `terminated`.
    weight:     (B,) importance weight of each window under prioritised replay (None: all 1)
    index:      (B,) int64 buffer slot of each window's first step, for updating its priority
    online:     (B,) float32, 1.0 for a window from the online buffer, 0.0 for an offline one (None:
                all offline); `optim.online_reward_weight` reads it
    """

    obs: dict[str, torch.Tensor]
    action: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    ended: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    index: torch.Tensor | None = None
    online: torch.Tensor | None = None

    @property
    def horizon(self) -> int:
        return int(self.action.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.action.shape[1])

    @property
    def episode_end(self) -> torch.Tensor:
        """`ended`, or `terminated` where the batch has no `ended`: (H, B, 1)."""
        return self.terminated if self.ended is None else self.ended

    def to(self, device: torch.device | str) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            obs={k: v.to(device, non_blocking=True) for k, v in self.obs.items()},
            action=self.action.to(device, non_blocking=True),
            reward=self.reward.to(device, non_blocking=True),
            terminated=self.terminated.to(device, non_blocking=True),
            ended=move(self.ended),
            weight=move(self.weight),
            index=self.index,  # stays where the buffer is
            online=move(self.online),
        )

    @staticmethod
    def cat(parts: list[Batch]) -> Batch:
        """Concatenate batches along the batch dim (all parts must carry the same optional fields)."""
        if len(parts) == 1:
            return parts[0]

        def cat(name: str, dim: int = 1) -> torch.Tensor | None:
            ts = [getattr(p, name) for p in parts]
            return None if ts[0] is None else torch.cat(ts, dim=dim)

        return Batch(
            obs={k: torch.cat([p.obs[k] for p in parts], dim=1) for k in parts[0].obs},
            action=torch.cat([p.action for p in parts], dim=1),
            reward=torch.cat([p.reward for p in parts], dim=1),
            terminated=torch.cat([p.terminated for p in parts], dim=1),
            ended=cat("ended"),
            weight=cat("weight", 0),
            index=cat("index", 0),
            online=cat("online", 0),
        )
