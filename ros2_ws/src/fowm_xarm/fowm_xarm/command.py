"""The one action path: (policy action, current joints) -> safe joint targets + gripper opening.

action = TCP xyz delta in [-1, 1]^3 (times `max_delta_m`) + gripper command in [-1, 1]
         (absolute: -1 closed, +1 open; opening target = (a + 1) / 2).

`ActionMapper.command` is called by the sim env, the planner node and teleop, so every consumer maps
actions identically. Between the mapping and the robot sits the safety layer (`SafetyLimits`): joint
position limits, a maximum joint step per tick, the TCP workspace box and the gripper range. Every
command it returns satisfies them whatever the action was; an action it cannot use (NaN, wrong
shape) becomes a hold of the current position, with the reason. Pure numpy: no ROS, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.limits import JOINT_LOWER, JOINT_UPPER, WorkspaceLimits, check_joint_vector

ACTION_DIM = 4  # TCP dx, dy, dz, gripper


@dataclass(frozen=True)
class SafetyLimits:
    """Limits every published command satisfies (values from YAML on the robot)."""

    max_joint_step_rad: float = 0.3
    """Largest change of any joint target relative to the measured position in one tick (rad).
    The xArm's 3.14 rad/s joint limit allows 0.5 rad per 0.16 s tick; 0.3 leaves margin."""
    joint_margin_rad: float = 0.0
    """Targets stay this far inside the joint position limits (rad)."""
    workspace: WorkspaceLimits = field(default_factory=WorkspaceLimits)
    """TCP box (robot base frame); a target whose TCP leaves it (beyond workspace_tol_m) is refused
    unless it moves the TCP closer to the box."""
    workspace_tol_m: float = 0.01
    """Slack on the workspace box for IK residuals and tracking overshoot (m)."""
    gripper_min: float = 0.0
    """Smallest gripper opening command (0 = closed)."""
    gripper_max: float = 1.0
    """Largest gripper opening command (1 = open)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.max_joint_step_rad <= 0.5:
            raise ValueError(
                f"SafetyLimits.max_joint_step_rad must be in (0, 0.5] rad, got {self.max_joint_step_rad}"
            )
        if not 0.0 <= self.joint_margin_rad < 0.2:
            raise ValueError(
                f"SafetyLimits.joint_margin_rad must be in [0, 0.2) rad, got {self.joint_margin_rad}"
            )
        if not 0.0 <= self.workspace_tol_m <= 0.05:
            raise ValueError(
                f"SafetyLimits.workspace_tol_m must be in [0, 0.05] m, got {self.workspace_tol_m}"
            )
        if not 0.0 <= self.gripper_min < self.gripper_max <= 1.0:
            raise ValueError(
                f"SafetyLimits gripper range must satisfy 0 <= gripper_min < gripper_max <= 1, "
                f"got [{self.gripper_min}, {self.gripper_max}]"
            )

    @property
    def joint_lower(self) -> np.ndarray:
        return JOINT_LOWER + self.joint_margin_rad

    @property
    def joint_upper(self) -> np.ndarray:
        return JOINT_UPPER - self.joint_margin_rad


@dataclass(frozen=True)
class JointCommand:
    """What goes to the robot for one tick."""

    joint_targets: np.ndarray  # (7,) rad, JOINT_NAMES order
    gripper: float  # opening target in [0, 1]
    held: bool = False  # True when the action was refused and the command holds the current position
    notes: tuple[str, ...] = ()  # what the safety layer changed or refused, for logs and diagnostics


def _distance_outside(box: WorkspaceLimits, xyz: np.ndarray) -> float:
    return float(np.linalg.norm(xyz - np.clip(xyz, box.low, box.high)))


class ActionMapper:
    """Policy actions -> safe joint commands (see the module docstring)."""

    def __init__(
        self,
        kinematics: XArm7Kinematics,
        max_delta_m: float = 0.05,
        limits: SafetyLimits | None = None,
    ) -> None:
        if not 0.0 < max_delta_m <= 0.2:
            raise ValueError(f"max_delta_m must be in (0, 0.2] m, got {max_delta_m}")
        self.kinematics = kinematics
        self.max_delta_m = float(max_delta_m)
        self.limits = limits or SafetyLimits(workspace=kinematics.workspace)

    def hold(self, joint_positions: np.ndarray, gripper: float, reason: str) -> JointCommand:
        """A command that keeps the arm where it is (and the gripper at `gripper`, clipped)."""
        q = np.clip(
            check_joint_vector(joint_positions, "joint_positions"),
            self.limits.joint_lower,
            self.limits.joint_upper,
        )
        g = float(gripper) if np.isfinite(gripper) else self.limits.gripper_max
        g = float(np.clip(g, self.limits.gripper_min, self.limits.gripper_max))
        return JointCommand(q, g, held=True, notes=(reason,))

    def command(self, action: np.ndarray, joint_positions: np.ndarray, gripper: float) -> JointCommand:
        """Map one action at the measured joint positions (7,) and gripper opening to a safe command.

        Raises ValueError only for a bad *measurement* (joint_positions); a bad action holds."""
        q = check_joint_vector(joint_positions, "joint_positions")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,):
            return self.hold(q, gripper, f"action has shape {a.shape}, expected ({ACTION_DIM},): holding")
        if not np.all(np.isfinite(a)):
            return self.hold(q, gripper, f"action contains NaN or Inf ({a.tolist()}): holding")
        a = np.clip(a, -1.0, 1.0)
        q_target = self.kinematics.ee_delta_to_joint_targets(q, a[:3] * self.max_delta_m)
        return self.enforce(q_target, (a[3] + 1.0) / 2.0, q, gripper)

    def enforce(
        self, joint_targets: np.ndarray, gripper_target: float, joint_positions: np.ndarray, gripper: float
    ) -> JointCommand:
        """The safety layer alone: make (joint_targets, gripper_target) satisfy every limit relative
        to the measured joint positions, or hold. Used by `command` and by drivers that receive
        joint targets directly."""
        lim = self.limits
        q = check_joint_vector(joint_positions, "joint_positions")
        target = np.asarray(joint_targets, dtype=np.float64)
        if target.shape != (7,) or not np.all(np.isfinite(target)):
            return self.hold(q, gripper, "joint targets are not a finite (7,) vector: holding")
        notes: list[str] = []
        clipped = np.clip(target, lim.joint_lower, lim.joint_upper)
        if not np.array_equal(clipped, target):
            notes.append("joint targets clipped to the joint limits")
        step = np.clip(clipped - q, -lim.max_joint_step_rad, lim.max_joint_step_rad)
        if not np.array_equal(q + step, clipped):
            notes.append(f"joint step limited to {lim.max_joint_step_rad} rad")
        # The measured position may sit outside the margin-shrunk limits; never push it further out.
        safe = np.clip(q + step, np.minimum(lim.joint_lower, q), np.maximum(lim.joint_upper, q))
        tcp_target, _ = self.kinematics.fk(safe)
        outside = _distance_outside(lim.workspace, tcp_target)
        if outside > lim.workspace_tol_m:
            tcp_now, _ = self.kinematics.fk(q)
            if outside >= _distance_outside(lim.workspace, tcp_now):
                return self.hold(
                    q,
                    gripper,
                    f"target TCP {np.round(tcp_target, 3).tolist()} is outside the workspace: holding",
                )
            notes.append("target TCP outside the workspace but closer to it than now: allowed")
        g = float(gripper_target)
        if not np.isfinite(g):
            return self.hold(q, gripper, "gripper target is NaN or Inf: holding")
        g_safe = float(np.clip(g, lim.gripper_min, lim.gripper_max))
        if g_safe != g:
            notes.append(f"gripper target {g:.3f} clipped to [{lim.gripper_min}, {lim.gripper_max}]")
        return JointCommand(safe, g_safe, held=False, notes=tuple(notes))

    def satisfied(self, command: JointCommand, joint_positions: np.ndarray) -> bool:
        """True if `command` satisfies every limit relative to the measured positions (a check for
        tests and drivers; a hold at an out-of-limit measured position counts as satisfied)."""
        lim = self.limits
        q = check_joint_vector(joint_positions, "joint_positions")
        t = np.asarray(command.joint_targets, dtype=np.float64)
        if t.shape != (7,) or not np.all(np.isfinite(t)) or not np.isfinite(command.gripper):
            return False
        lo, hi = np.minimum(lim.joint_lower, q), np.maximum(lim.joint_upper, q)
        if np.any(t < lo - 1e-9) or np.any(t > hi + 1e-9):
            return False
        if np.any(np.abs(t - q) > lim.max_joint_step_rad + 1e-9):
            return False
        if not lim.gripper_min - 1e-9 <= command.gripper <= lim.gripper_max + 1e-9:
            return False
        if command.held:
            return True
        tcp_t = self.kinematics.fk(t)[0]
        out_t = _distance_outside(lim.workspace, tcp_t)
        return out_t <= lim.workspace_tol_m or out_t < _distance_outside(
            lim.workspace, self.kinematics.fk(q)[0]
        )
