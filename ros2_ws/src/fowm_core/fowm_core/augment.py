"""Random-shift image augmentation (replicate-pad, then crop back at a random offset)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by an integer offset in [-pad, pad] per axis, filling with edge pixels.

    images: (*lead, C, H, W), any dtype (uint8 stays uint8: pure indexing, no interpolation).
    Every image in *lead gets its own offset. `generator` must live on images.device.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if images.dim() < 3:
        raise ValueError(f"images must be (*lead, C, H, W), got shape {tuple(images.shape)}")
    if pad == 0:
        return images
    *lead, c, h, w = images.shape
    x = images.reshape(-1, c, h, w)
    n = x.shape[0]
    # replicate padding is not implemented for uint8: pad in float, exact for integer values
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate").to(x.dtype)  # (N, C, H+2p, W+2p)
    off = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=x.device)  # (N, [dy, dx])
    rows = off[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = off[:, 1:] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).reshape(*lead, c, h, w)
