"""The one observation path: (camera frame, joint state) -> the model's observation.

The sim env, the planner node, teleop recording and bag ingestion all call `make_observation`
(and the message helpers below), so the model sees on the robot exactly what it was trained on.
Pure numpy + OpenCV + the kinematics: no ROS, no torch.

Observation: {"rgb": (3, S, S) uint8, "state": (4,) float32} with
    rgb   = preprocess_rgb(frame, size, crop) (ROI crop + resize, fowm_xarm.camera),
    state = TCP xyz (m, robot base frame; forward kinematics of the joint positions)
            + gripper opening in [0, 1] (1 = open).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fowm_xarm.camera import Crop, check_crop, preprocess_rgb
from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.limits import JOINT_NAMES, check_joint_vector
from fowm_xarm.topics import GRIPPER_JOINT_NAME

RGB_KEY, STATE_KEY = "rgb", "state"
STATE_DIM = 4  # TCP xyz + gripper opening
IMAGE_ENCODINGS = ("rgb8", "bgr8")

SIM_CAMERA_CROP: Crop = (196, 100, 248, 248)
"""ROI (x, y, w, h) of the default sim camera's 640x480 frame (fowm_sim SimConfig camera_pos /
camera_lookat / camera_fovy_deg) that holds every cube and goal position of the three tasks; on a
real bench, measure the ROI of its camera and set ObservationConfig.crop to it."""

Observation = dict[str, np.ndarray]


@dataclass(frozen=True)
class ObservationConfig:
    """How sensor data becomes the model's input (the same on the robot, in the sim and in bags)."""

    image_size: int = 84
    """Side of the square rgb observation."""
    crop: Crop | None = SIM_CAMERA_CROP
    """Square region of interest (x, y, w, h) of the full frame, in its pixels, shrunk to
    image_size; None = the central min(H, W) square of whatever frame arrives."""

    def __post_init__(self) -> None:
        if int(self.image_size) != self.image_size or self.image_size < 8:
            raise ValueError(f"ObservationConfig.image_size must be an integer >= 8, got {self.image_size!r}")
        if self.crop is not None:
            try:
                crop = check_crop(self.crop)
            except ValueError as exc:
                raise ValueError(f"ObservationConfig.crop: {exc}") from None
            if crop[2] < self.image_size:
                raise ValueError(
                    f"ObservationConfig.crop side {crop[2]} is smaller than image_size {self.image_size} "
                    "(the model would see upsampled pixels)"
                )
            object.__setattr__(self, "crop", crop)  # normalised to a tuple of ints (lists from YAML)


def state_observation(joint_positions: np.ndarray, gripper: float, kinematics: XArm7Kinematics) -> np.ndarray:
    """(4,) float32: TCP xyz from forward kinematics of the (7,) joint positions, and the gripper
    opening in [0, 1]. Raises ValueError on a bad joint vector or a gripper outside [0, 1]."""
    q = check_joint_vector(joint_positions, "joint_positions")
    g = float(gripper)
    if not np.isfinite(g) or not -1e-3 <= g <= 1.0 + 1e-3:
        raise ValueError(f"gripper opening must be in [0, 1], got {gripper!r}")
    tcp, _ = kinematics.fk(q)
    return np.array([*tcp, min(max(g, 0.0), 1.0)], dtype=np.float32)


def make_observation(
    frame_rgb_hwc: np.ndarray,
    joint_positions: np.ndarray,
    gripper: float,
    kinematics: XArm7Kinematics,
    config: ObservationConfig | None = None,
) -> Observation:
    """The model observation of one camera frame ((H, W, 3) uint8 RGB) and one joint state."""
    cfg = config or ObservationConfig()
    return {
        RGB_KEY: preprocess_rgb(frame_rgb_hwc, cfg.image_size, cfg.crop),
        STATE_KEY: state_observation(joint_positions, gripper, kinematics),
    }


# ---------------------------------------------------------------------------------------------
# Message fields -> arrays (rclpy and rosbags messages have the same field names)


def image_to_rgb(height: int, width: int, encoding: str, step: int, data: bytes | np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from sensor_msgs/Image fields (rgb8 or bgr8, any row padding).

    Raises ValueError naming the problem: another encoding, an empty image or a data size that
    disagrees with height x step."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"image encoding {encoding!r} is not supported (expected one of {IMAGE_ENCODINGS})")
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise ValueError(f"image is empty ({w}x{h})")
    if step < 3 * w:
        raise ValueError(f"image step {step} is shorter than a row of {w} {encoding} pixels ({3 * w} bytes)")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buf.dtype != np.uint8 or buf.size != h * step:
        raise ValueError(
            f"image data has {buf.size} bytes, expected height x step = {h} x {step} = {h * step}"
        )
    rows = buf.reshape(h, step)[:, : 3 * w].reshape(h, w, 3)
    return np.ascontiguousarray(rows[:, :, ::-1] if encoding == "bgr8" else rows)


def joint_state_to_arrays(names: Sequence[str], positions: Sequence[float]) -> tuple[np.ndarray, float]:
    """(q (7,) in JOINT_NAMES order, gripper opening) from JointState names and positions in any
    order. Raises ValueError naming missing or duplicate joints, a length mismatch or NaN/Inf."""
    names = list(names)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1)
    if len(names) != pos.size:
        raise ValueError(f"joint state has {len(names)} names but {pos.size} positions")
    if len(set(names)) != len(names):
        raise ValueError(f"joint state has duplicate names: {names}")
    wanted = (*JOINT_NAMES, GRIPPER_JOINT_NAME)
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ValueError(f"joint state lacks {missing} (got {names})")
    values = pos[[names.index(n) for n in wanted]]
    if not np.all(np.isfinite(values)):
        bad = [n for n, v in zip(wanted, values, strict=True) if not np.isfinite(v)]
        raise ValueError(f"joint state has NaN or Inf positions for {bad}")
    return values[:7].copy(), float(values[7])
