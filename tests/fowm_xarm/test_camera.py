"""preprocess_rgb: the crop/resize shared by the sim observation and the real RealSense frame."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_xarm.camera import preprocess_rgb


def test_shape_dtype_and_channel_first() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[..., 0] = 200  # pure red
    out = preprocess_rgb(frame)
    assert out.shape == (3, 84, 84) and out.dtype == np.uint8
    assert np.all(out[0] == 200) and np.all(out[1:] == 0)
    assert preprocess_rgb(frame, size=64).shape == (3, 64, 64)


def test_centre_crop_drops_the_side_bands() -> None:
    frame = np.full((480, 640, 3), 100, np.uint8)
    frame[:, :80] = 255  # the 80 columns on each side fall outside the central 480x480 square
    frame[:, -80:] = 0
    out = preprocess_rgb(frame)
    assert np.all(out == 100)


def test_image_geometry_is_preserved() -> None:
    # A bright square in the top-left quadrant of the crop stays in the top-left quadrant.
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[0:240, 80:320] = 255
    out = preprocess_rgb(frame)
    assert out[:, :42, :42].min() == 255 and out[:, 42:, 42:].max() == 0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((480, 640), np.uint8), "H, W, 3"),
        (np.zeros((480, 640, 4), np.uint8), "H, W, 3"),
        (np.zeros((480, 640, 3), np.float32), "uint8"),
        (np.zeros((40, 60, 3), np.uint8), "smaller"),
    ],
)
def test_bad_frames_raise(frame: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess_rgb(frame)
