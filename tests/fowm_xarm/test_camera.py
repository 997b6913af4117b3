"""preprocess_rgb and ObservationConfig.crop: the ROI crop/resize shared by the sim, bags, the planner and
the real RealSense frame."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_xarm.camera import preprocess_rgb
from fowm_xarm.kinematics import HOME_Q, XArm7Kinematics
from fowm_xarm.observation import SIM_CAMERA_CROP, ObservationConfig, make_observation


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


def test_roi_crop_selects_exactly_its_region() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:348, 196:444] = (10, 200, 30)  # the ROI, one colour; everything else black
    out = preprocess_rgb(frame, 84, crop=(196, 100, 248, 248))
    assert np.all(out[:, :, :] == np.array([10, 200, 30], np.uint8)[:, None, None])
    # One pixel to the left and the black border enters the first output column.
    shifted = preprocess_rgb(frame, 84, crop=(190, 100, 248, 248))
    assert shifted[1, :, 0].max() < 200


def test_roi_crop_keeps_geometry() -> None:
    # A marker in the ROI's top-left quarter lands in the output's top-left quarter.
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:160, 300:360] = 255
    out = preprocess_rgb(frame, 84, crop=(300, 100, 120, 120))
    assert out[:, :42, :42].min() == 255 and out[:, 42:, :].max() == 0 and out[:, :, 42:].max() == 0


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        ((0, 0, 100), "4 integers"),
        ((0, 0, 100.5, 100.5), "4 integers"),
        ((-1, 0, 100, 100), ">= 0"),
        ((0, 0, 100, 90), "square"),
        ((0, 0, 0, 0), "square"),
        ((600, 0, 100, 100), "outside the 640x480 frame"),
        ((0, 400, 100, 100), "outside"),
        ((0, 0, 50, 50), "smaller than the 84x84"),
    ],
)
def test_bad_crops_raise(crop: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess_rgb(np.zeros((480, 640, 3), np.uint8), 84, crop=crop)


def test_observation_config_carries_and_checks_the_crop() -> None:
    assert ObservationConfig().crop == SIM_CAMERA_CROP
    assert ObservationConfig(crop=[10, 20, 300, 300]).crop == (10, 20, 300, 300)  # lists from YAML
    assert ObservationConfig(crop=None).crop is None
    with pytest.raises(ValueError, match="ObservationConfig.crop.*square"):
        ObservationConfig(crop=(0, 0, 300, 200))
    with pytest.raises(ValueError, match="smaller than image_size"):
        ObservationConfig(image_size=84, crop=(0, 0, 64, 64))
    # make_observation applies the config's crop: a frame bright only inside the crop is all bright.
    frame = np.zeros((480, 640, 3), np.uint8)
    x, y, w, h = SIM_CAMERA_CROP
    frame[y : y + h, x : x + w] = 255
    obs = make_observation(frame, HOME_Q, 1.0, XArm7Kinematics(), ObservationConfig())
    assert obs["rgb"].min() == 255
