"""Joint and end-effector workspace limits of the xArm7.

Joint position limits are xarm_ros2's (xarm7.urdf.xacro, unlimited mode); the velocity limit is
the URDF's 3.14 rad/s for every joint. The workspace box is ours: the region above the table in
front of the robot where the tasks happen, in the robot base frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JOINT_NAMES: tuple[str, ...] = tuple(f"joint{i}" for i in range(1, 8))

_TWO_PI = 2.0 * np.pi
JOINT_LOWER: np.ndarray = np.array([-_TWO_PI, -2.059, -_TWO_PI, -0.19198, -_TWO_PI, -1.69297, -_TWO_PI])
JOINT_UPPER: np.ndarray = np.array([_TWO_PI, 2.0944, _TWO_PI, 3.927, _TWO_PI, np.pi, _TWO_PI])
JOINT_VELOCITY_LIMIT: np.ndarray = np.full(7, 3.14)  # rad/s, per joint
JOINT_LOWER.setflags(write=False)
JOINT_UPPER.setflags(write=False)
JOINT_VELOCITY_LIMIT.setflags(write=False)


def finite_vector(x: np.ndarray, length: int, name: str) -> np.ndarray:
    """Return `x` as a float64 (length,) array, or raise ValueError naming what is wrong."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf: {arr}")
    return arr


def check_joint_vector(q: np.ndarray, name: str = "joint vector") -> np.ndarray:
    """Return `q` as a float64 (7,) array, or raise ValueError naming what is wrong."""
    return finite_vector(q, 7, name)


def clip_joints(q: np.ndarray) -> np.ndarray:
    """Clip a (7,) joint vector into [JOINT_LOWER, JOINT_UPPER]."""
    return np.clip(check_joint_vector(q), JOINT_LOWER, JOINT_UPPER)


def joints_within_limits(q: np.ndarray, tol: float = 1e-9) -> bool:
    """True if every joint of `q` lies within its limits (up to `tol` rad)."""
    arr = check_joint_vector(q)
    return bool(np.all(arr >= JOINT_LOWER - tol) and np.all(arr <= JOINT_UPPER + tol))


@dataclass(frozen=True)
class WorkspaceLimits:
    """Axis-aligned box for the end effector (TCP), metres in the robot base frame."""

    x_min: float = 0.25
    """Closest reach in front of the base (keeps the hand off the robot's own body)."""
    x_max: float = 0.65
    """Farthest reach in front of the base."""
    y_min: float = -0.30
    """Rightmost position."""
    y_max: float = 0.30
    """Leftmost position."""
    z_min: float = 0.015
    """Lowest TCP height above the table surface (fingertips stay ~5 mm above it)."""
    z_max: float = 0.45
    """Highest TCP height."""

    def __post_init__(self) -> None:
        for axis in "xyz":
            lo, hi = getattr(self, f"{axis}_min"), getattr(self, f"{axis}_max")
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f"WorkspaceLimits.{axis}_min/{axis}_max must be finite, got {lo}, {hi}")
            if lo >= hi:
                raise ValueError(f"WorkspaceLimits.{axis}_min ({lo}) must be below {axis}_max ({hi})")
        if self.z_min < 0.0:
            raise ValueError(f"WorkspaceLimits.z_min must be >= 0 (the table surface), got {self.z_min}")

    @property
    def low(self) -> np.ndarray:
        """(3,) lower corner."""
        return np.array([self.x_min, self.y_min, self.z_min])

    @property
    def high(self) -> np.ndarray:
        """(3,) upper corner."""
        return np.array([self.x_max, self.y_max, self.z_max])

    def clip(self, xyz: np.ndarray) -> np.ndarray:
        """Project a (3,) position onto the box."""
        p = _check_xyz(xyz)
        return np.clip(p, self.low, self.high)

    def contains(self, xyz: np.ndarray, tol: float = 1e-9) -> bool:
        """True if a (3,) position lies inside the box (up to `tol` metres)."""
        p = _check_xyz(xyz)
        return bool(np.all(p >= self.low - tol) and np.all(p <= self.high + tol))


def _check_xyz(xyz: np.ndarray) -> np.ndarray:
    return finite_vector(xyz, 3, "position")
