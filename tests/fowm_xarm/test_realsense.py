"""The RealSense node: frame -> message conversion with synthetic frames, and the no-device exit
(for real: there is no camera on this machine)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyrealsense2 as rs
import pytest

from fowm_testing import NodeProcesses
from fowm_xarm import topics
from fowm_xarm.observation import ObservationConfig, image_to_rgb
from fowm_xarm.realsense_node import EXIT_NO_DEVICE, RealSenseConfig, frame_messages, intrinsics_dict


def d435_intrinsics() -> rs.intrinsics:
    """A pyrealsense2 intrinsics object like a D435 colour stream's at 640x480."""
    intr = rs.intrinsics()
    intr.width, intr.height = 640, 480
    intr.fx, intr.fy, intr.ppx, intr.ppy = 614.9, 615.3, 321.7, 238.4
    intr.model = rs.distortion.inverse_brown_conrady
    intr.coeffs = [0.0] * 5
    return intr


def test_frame_becomes_image_and_camera_info() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    image_bytes, info_bytes = frame_messages(
        1_500_000_123, frame, intrinsics_dict(d435_intrinsics()), "camera_color_optical_frame"
    )
    image = topics.deserialize(image_bytes, topics.IMAGE.msgtype)
    info = topics.deserialize(info_bytes, topics.CAMERA_INFO.msgtype)
    assert (image.height, image.width, image.encoding, image.step) == (480, 640, "rgb8", 1920)
    assert (image.header.stamp.sec, image.header.stamp.nanosec) == (1, 500_000_123)
    assert info.header.stamp == image.header.stamp and info.header.frame_id == "camera_color_optical_frame"
    # The pixels survive the trip, and the shared observation path reads them back.
    np.testing.assert_array_equal(
        image_to_rgb(image.height, image.width, image.encoding, image.step, image.data), frame
    )
    assert ObservationConfig().crop is not None  # the same ROI crop as the sim applies downstream
    np.testing.assert_allclose(info.k, [614.9, 0, 321.7, 0, 615.3, 238.4, 0, 0, 1])
    assert (info.width, info.height) == (640, 480)


def test_frame_size_must_match_the_intrinsics() -> None:
    with pytest.raises(ValueError, match="intrinsics are for 640x480"):
        frame_messages(0, np.zeros((240, 320, 3), np.uint8), intrinsics_dict(d435_intrinsics()), "f")
    with pytest.raises(ValueError, match="uint8"):
        frame_messages(0, np.zeros((480, 640, 3), np.float32), intrinsics_dict(d435_intrinsics()), "f")


def test_config_is_validated() -> None:
    assert (RealSenseConfig().width, RealSenseConfig().height, RealSenseConfig().fps) == (640, 480, 30)
    with pytest.raises(ValueError, match="fps"):
        RealSenseConfig(fps=0)
    with pytest.raises(ValueError, match="width and height"):
        RealSenseConfig(width=0)


@pytest.mark.ros
def test_no_device_gives_a_clear_error_and_clean_exit(ros_processes: NodeProcesses) -> None:
    if rs.context().query_devices().size() > 0:
        pytest.skip("a RealSense camera is connected to this machine")
    proc = ros_processes.start([sys.executable, "-m", "fowm_xarm.realsense_node"], "realsense")
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the RealSense node kept running without a camera")
    log = ros_processes.log("realsense")
    assert code == EXIT_NO_DEVICE, log
    assert "no RealSense device found" in log
    assert "Traceback" not in log


def test_real_yaml_section_is_a_valid_config() -> None:
    import yaml

    from fowm_testing import REPO_ROOT

    real = yaml.safe_load((REPO_ROOT / "ros2_ws/src/fowm_bringup/config/real.yaml").read_text())
    cfg = RealSenseConfig(**real["realsense"]["ros__parameters"])
    assert (cfg.width, cfg.height, cfg.fps) == (640, 480, 30)
