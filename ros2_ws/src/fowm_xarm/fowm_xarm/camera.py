"""The one image preprocessing step shared by the sim, bags, the planner and the real RealSense frame.

A square region of interest (ROI) of the full colour frame is cropped and shrunk to the model's
input. The ROI frames the workspace, so that a 5 cm cube covers several pixels of an 84x84 input
instead of the ~3 px a centre crop of the whole 640x480 view gives it.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Crop = tuple[int, int, int, int]
"""(x, y, width, height) of a region of interest in full-frame pixels (x right, y down, from the
top-left corner); width == height, since the model's input is square."""


def check_crop(crop: Sequence[int]) -> Crop:
    """The crop as a tuple of ints, or ValueError naming what is wrong (not 4 integers, negative
    corner, empty or non-square)."""
    values = tuple(crop)
    if len(values) != 4 or any(isinstance(v, bool) or int(v) != v for v in values):
        raise ValueError(f"crop must be 4 integers (x, y, width, height), got {crop!r}")
    x, y, w, h = (int(v) for v in values)
    if x < 0 or y < 0:
        raise ValueError(f"crop corner must be >= 0, got x={x}, y={y}")
    if w <= 0 or w != h:
        raise ValueError(f"crop must be a non-empty square (width == height), got {w}x{h}")
    return x, y, w, h


def crop_in_frame(width: int, height: int, crop: Sequence[int] | None) -> Crop:
    """The checked crop for a width x height frame; None means the central min(width, height)
    square. ValueError if the crop reaches outside the frame."""
    if crop is None:
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    x, y, w, h = check_crop(crop)
    if x + w > width or y + h > height:
        raise ValueError(
            f"crop (x={x}, y={y}, {w}x{h}) reaches outside the {width}x{height} frame "
            f"(right edge {x + w}, bottom edge {y + h})"
        )
    return x, y, w, h


def preprocess_rgb(
    image_hwc_uint8: np.ndarray, size: int = 84, crop: Sequence[int] | None = None
) -> np.ndarray:
    """Crop an (H, W, 3) uint8 RGB frame to a square ROI and resize it to (3, size, size) uint8.

    crop = (x, y, w, h) in full-frame pixels (see `Crop`); None keeps the central min(H, W) square
    (a 640x480 frame loses 80 columns on each side). INTER_AREA averages pixels when shrinking,
    which avoids aliasing on thin edges. Always go through `ObservationConfig` (it carries the
    crop) rather than calling this directly, so every path uses the same ROI.
    """
    img = np.asarray(image_hwc_uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"preprocess_rgb expects an (H, W, 3) image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"preprocess_rgb expects uint8 pixels, got {img.dtype}")
    if int(size) != size or size <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    h, w = img.shape[:2]
    x, y, side, _ = crop_in_frame(w, h, crop)
    if side < size:
        raise ValueError(f"crop {side}x{side} of the {w}x{h} image is smaller than the {size}x{size} output")
    square = img[y : y + side, x : x + side]
    resized = cv2.resize(square, (int(size), int(size)), interpolation=cv2.INTER_AREA)  # (size, size, 3)
    return np.ascontiguousarray(resized.transpose(2, 0, 1))  # (3, size, size)
