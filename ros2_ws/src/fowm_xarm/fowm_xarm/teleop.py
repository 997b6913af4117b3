"""Keyboard teleoperation: keys to the policy's action (end-effector xyz delta + gripper, in [-1, 1]^4).

Pure and ROS-free, so the same mapping drives the sim (fowm-teleop-sim) and, through the planner's
IK path, the real arm. Default keys, in the robot base frame:

    w / s   +x / -x (away from / towards the base)      r / f   +z / -z (up / down)
    a / d   +y / -y (left / right seen from the base)    space   toggle gripper open <-> closed
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_BINDINGS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0),
    "s": (0, -1.0),
    "a": (1, 1.0),
    "d": (1, -1.0),
    "r": (2, 1.0),
    "f": (2, -1.0),
}
GRIPPER_TOGGLE_KEY = " "


@dataclass
class TeleopConfig:
    """How keys become actions."""

    step: float = 1.0  # magnitude of one key press, as a fraction of the env's max ee delta, in (0, 1]
    gripper_open_command: float = 1.0  # action[3] that opens the gripper (closing is its negative)
    start_open: bool = True  # gripper state before the first toggle
    bindings: dict[str, tuple[int, float]] = field(
        default_factory=lambda: dict(DEFAULT_BINDINGS)
    )  # key -> (axis, sign)

    def __post_init__(self) -> None:
        if not 0.0 < self.step <= 1.0:
            raise ValueError(f"TeleopConfig.step must be in (0, 1], got {self.step}")
        if not 0.0 < abs(self.gripper_open_command) <= 1.0:
            raise ValueError(
                f"TeleopConfig.gripper_open_command must be in [-1, 1] \\ {{0}}, got "
                f"{self.gripper_open_command}"
            )
        for key, (axis, sign) in self.bindings.items():
            if len(key) != 1:
                raise ValueError(f"key bindings must be single characters, got {key!r}")
            if key == GRIPPER_TOGGLE_KEY:
                raise ValueError("the space key is reserved for the gripper toggle")
            if axis not in (0, 1, 2) or sign not in (-1.0, 1.0):
                raise ValueError(f"binding {key!r} -> {(axis, sign)}: axis must be 0..2 and sign +-1")


class KeyboardTeleop:
    """Turns the keys pressed during one control period into one action.

    Movement keys pressed in the same period add up per axis (then clip to [-1, 1]); the gripper
    state persists across periods and flips on each space press.
    """

    def __init__(self, config: TeleopConfig | None = None) -> None:
        self.config = config or TeleopConfig()
        self.gripper_open = self.config.start_open

    def reset(self) -> None:
        self.gripper_open = self.config.start_open

    def action(self, keys: str) -> np.ndarray:
        """(4,) float32 action for the keys typed during one period; unknown keys are ignored."""
        move = np.zeros(3, dtype=np.float64)
        for key in keys:
            if key == GRIPPER_TOGGLE_KEY:
                self.gripper_open = not self.gripper_open
            elif key.lower() in self.config.bindings:
                axis, sign = self.config.bindings[key.lower()]
                move[axis] += sign * self.config.step
        grip = self.config.gripper_open_command * (1.0 if self.gripper_open else -1.0)
        return np.append(np.clip(move, -1.0, 1.0), grip).astype(np.float32)

    def help_text(self) -> str:
        names = {0: "x", 1: "y", 2: "z"}
        moves = ", ".join(
            f"{k}:{'+' if s > 0 else '-'}{names[a]}" for k, (a, s) in self.config.bindings.items()
        )
        return f"{moves}, space: toggle gripper"
