"""The one image preprocessing step shared by the sim and the real RealSense frame."""

from __future__ import annotations

import cv2
import numpy as np


def preprocess_rgb(image_hwc_uint8: np.ndarray, size: int = 84) -> np.ndarray:
    """Centre-crop an (H, W, 3) uint8 RGB frame to a square and resize it to (3, size, size) uint8.

    The crop keeps the central min(H, W) square, so a 640x480 D435 frame loses 80 columns on each
    side; INTER_AREA averages pixels when shrinking, which avoids aliasing on thin edges.
    """
    img = np.asarray(image_hwc_uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"preprocess_rgb expects an (H, W, 3) image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"preprocess_rgb expects uint8 pixels, got {img.dtype}")
    if int(size) != size or size <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    h, w = img.shape[:2]
    if min(h, w) < size:
        raise ValueError(f"image {w}x{h} is smaller than the requested {size}x{size} output")
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = img[top : top + side, left : left + side]
    resized = cv2.resize(square, (int(size), int(size)), interpolation=cv2.INTER_AREA)  # (size, size, 3)
    return np.ascontiguousarray(resized.transpose(2, 0, 1))  # (3, size, size)
