"""A dense reward from a coloured object's distance to a goal region of the camera image.

The object is found by colour (OpenCV: HSV threshold, morphological opening, the largest blob);
the reward is minus the distance from the blob's centroid to the goal region (an axis-aligned box
of the image), in units of the image diagonal: 0 inside the region, down to about -1 at the far
corner, and `missing_reward` when no blob of at least `min_area_px` pixels is visible. Like the sim
tasks' rewards it is dense and negative; unlike them it needs no simulator, only a camera that sees
the object and the goal area (a tape mark on the real table, say). Pure numpy + OpenCV, no ROS.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ColorRewardConfig:
    """What to look for and where it should go (defaults: the sim's red cube)."""

    hsv_low: tuple[int, int, int] = (170, 150, 60)
    """Lower HSV bound, OpenCV scale (H in [0, 180), S and V in [0, 255]). A lower H above hsv_high's
    H wraps around 180, which red needs."""
    hsv_high: tuple[int, int, int] = (8, 255, 255)
    """Upper HSV bound."""
    goal_region: tuple[float, float, float, float] = (0.45, 0.45, 0.55, 0.55)
    """Goal box (x_min, y_min, x_max, y_max) as fractions of the image width and height (x right,
    y down), so the same config fits any resolution of the same view."""
    min_area_px: int = 40
    """Smallest blob (pixels, after opening) that counts as the object."""
    opening_px: int = 3
    """Side of the square structuring element that removes speckle (odd, >= 1)."""
    missing_reward: float = -1.0
    """Reward when the object is not visible (occluded, off the table)."""

    def __post_init__(self) -> None:
        for name in ("hsv_low", "hsv_high"):
            value = tuple(int(x) for x in getattr(self, name))
            if len(value) != 3 or not (0 <= value[0] < 180 and all(0 <= x <= 255 for x in value[1:])):
                raise ValueError(f"{name} must be (H in [0, 180), S, V in [0, 255]), got {value}")
            object.__setattr__(self, name, value)
        if self.hsv_low[1] > self.hsv_high[1] or self.hsv_low[2] > self.hsv_high[2]:
            raise ValueError(f"hsv_low {self.hsv_low} exceeds hsv_high {self.hsv_high} in S or V")
        x0, y0, x1, y1 = (float(v) for v in self.goal_region)
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(
                "goal_region must be (x_min, y_min, x_max, y_max) fractions with min < max, "
                f"got {self.goal_region}"
            )
        object.__setattr__(self, "goal_region", (x0, y0, x1, y1))
        if self.min_area_px < 1:
            raise ValueError(f"min_area_px must be >= 1, got {self.min_area_px}")
        if self.opening_px < 1 or self.opening_px % 2 == 0:
            raise ValueError(f"opening_px must be odd and >= 1, got {self.opening_px}")
        if not np.isfinite(self.missing_reward):
            raise ValueError(f"missing_reward must be finite, got {self.missing_reward}")


@dataclass(frozen=True)
class Detection:
    """The object's blob in one image."""

    centroid_xy: tuple[float, float]  # pixels (x right, y down)
    area_px: int


def color_mask(rgb_hwc: np.ndarray, config: ColorRewardConfig) -> np.ndarray:
    """(H, W) uint8 mask (255 = object colour) of an (H, W, 3) uint8 RGB image, speckle removed."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb_hwc), cv2.COLOR_RGB2HSV)
    (h0, s0, v0), (h1, s1, v1) = config.hsv_low, config.hsv_high
    if h0 <= h1:
        mask = cv2.inRange(hsv, np.array([h0, s0, v0]), np.array([h1, s1, v1]))
    else:  # the hue range wraps around 180 (red)
        mask = cv2.inRange(hsv, np.array([h0, s0, v0]), np.array([179, s1, v1])) | cv2.inRange(
            hsv, np.array([0, s0, v0]), np.array([h1, s1, v1])
        )
    kernel = np.ones((config.opening_px, config.opening_px), np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)


def detect(rgb_hwc: np.ndarray, config: ColorRewardConfig) -> Detection | None:
    """The largest blob of the object's colour, or None if none reaches min_area_px."""
    img = np.asarray(rgb_hwc)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
    count, _, stats, centroids = cv2.connectedComponentsWithStats(color_mask(img, config), connectivity=8)
    if count <= 1:  # label 0 is the background
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = int(stats[best, cv2.CC_STAT_AREA])
    if area < config.min_area_px:
        return None
    return Detection((float(centroids[best][0]), float(centroids[best][1])), area)


def goal_box_px(width: int, height: int, config: ColorRewardConfig) -> tuple[float, float, float, float]:
    """The goal region in pixels (x_min, y_min, x_max, y_max) of a width x height image."""
    x0, y0, x1, y1 = config.goal_region
    return x0 * width, y0 * height, x1 * width, y1 * height


def color_reward(rgb_hwc: np.ndarray, config: ColorRewardConfig) -> tuple[float, Detection | None]:
    """(reward, detection) for one image: -distance(centroid, goal box) / image diagonal, 0 inside
    the box, config.missing_reward without a detection."""
    found = detect(rgb_hwc, config)
    if found is None:
        return float(config.missing_reward), None
    h, w = rgb_hwc.shape[:2]
    x0, y0, x1, y1 = goal_box_px(w, h, config)
    x, y = found.centroid_xy
    dx = max(x0 - x, 0.0, x - x1)
    dy = max(y0 - y, 0.0, y - y1)
    return -float(np.hypot(dx, dy) / np.hypot(w, h)), found
