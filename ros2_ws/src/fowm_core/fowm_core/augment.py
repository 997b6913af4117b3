"""Random-shift image augmentation (replicate-pad, then crop back at a random offset)."""

from __future__ import annotations

import torch


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
    x = images.reshape(-1, c, h * w)
    n = x.shape[0]
    off = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=x.device)  # (N, [dy, dx])
    # Output pixel (i, j) of image k reads the padded image at (i + dy, j + dx), i.e. the source pixel
    # (i + dy - pad, j + dx - pad) clamped to the image: replicate padding without building the padded
    # copy, as one uint8 gather (~10x faster on a CPU than padding in float and indexing).
    rows = (off[:, :1] - pad + torch.arange(h, device=x.device)).clamp_(0, h - 1)  # (N, H)
    cols = (off[:, 1:] - pad + torch.arange(w, device=x.device)).clamp_(0, w - 1)  # (N, W)
    src = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return x.gather(2, src).reshape(*lead, c, h, w)
