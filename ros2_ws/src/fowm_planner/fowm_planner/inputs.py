"""Sensor messages -> the model's observation, through fowm_xarm's one observation path.

Works on rclpy and rosbags messages alike (same field names). Every problem raises ValueError
with a reason the watchdog reports: wrong encoding, an image smaller than the model input, a
malformed image, wrong or missing joint names, NaN/Inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.observation import (
    RGB_KEY,
    ObservationConfig,
    image_to_rgb,
    joint_state_to_arrays,
    make_observation,
)


def stamp_ns(msg: Any) -> int:
    """Header stamp of a message in nanoseconds."""
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


@dataclass(frozen=True)
class Observed:
    """One assembled observation and the measurement the command is computed against."""

    obs: dict[str, np.ndarray]  # the model's modalities only: rgb (3, S, S) uint8, state (4,) float32
    q: np.ndarray  # (7,) measured joint positions, JOINT_NAMES order
    gripper: float  # measured gripper opening in [0, 1]
    stamp_ns: int  # the observation's stamp: the image's when the model sees rgb, else the joint state's


def image_frame(msg: Any, min_size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a sensor_msgs/Image; rejects frames smaller than the model input."""
    if min(int(msg.height), int(msg.width)) < min_size:
        raise ValueError(
            f"image {msg.width}x{msg.height} is smaller than the model input {min_size}x{min_size}"
        )
    return image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, bytes(msg.data))


def joint_measurement(msg: Any) -> tuple[np.ndarray, float]:
    """(q (7,), gripper) from a sensor_msgs/JointState (names in any order)."""
    return joint_state_to_arrays(list(msg.name), list(msg.position))


def observe(
    image: Any,
    joint_state: Any,
    keys: tuple[str, ...],
    kinematics: XArm7Kinematics,
    config: ObservationConfig,
) -> Observed:
    """The model observation (modalities `keys`) of the latest image and joint state messages."""
    q, gripper = joint_measurement(joint_state)
    if RGB_KEY in keys:
        frame = image_frame(image, config.image_size)
        stamp = stamp_ns(image)
    else:  # a state-only model needs no camera; a black frame keeps the one observation path
        x, y, w, h = config.crop or (0, 0, config.image_size, config.image_size)
        frame = np.zeros((y + h, x + w, 3), np.uint8)
        stamp = stamp_ns(joint_state)
    full = make_observation(frame, q, gripper, kinematics, config)
    return Observed({k: full[k] for k in keys}, q, gripper, stamp)
