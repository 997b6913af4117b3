"""Forward and inverse kinematics of the xArm7 TCP, on MuJoCo's kinematics of the robot-only MJCF.

IK is damped least squares on the site Jacobian (mj_jacSite) with a null-space pull towards a
home posture, so the 7-DoF arm keeps one elbow configuration instead of drifting along its
self-motion manifold. Every iterate is clipped into the joint limits, so results never exceed them.
Both the sim and the real-robot planner turn end-effector deltas into joint targets through
`ee_delta_to_joint_targets`, so both see the same mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np

from fowm_xarm.description import TCP_SITE, XARM7_MJCF_PATH
from fowm_xarm.limits import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER, WorkspaceLimits, check_joint_vector

# Gripper pointing straight down: TCP x along base x, TCP z along -z (rotation by pi about x).
# The xArm7 zero configuration already has this orientation.
DOWN_ROT: np.ndarray = np.diag([1.0, -1.0, -1.0])
DOWN_ROT.setflags(write=False)

# A posture with the TCP at (0.4, 0, 0.25) m pointing down, elbow up (computed once with this IK).
HOME_Q: np.ndarray = np.array([0.0, -0.25904, 0.0, 0.96166, 0.0, 1.22071, 0.0])
HOME_Q.setflags(write=False)


class IKError(RuntimeError):
    """Raised by `ik(..., strict=True)` when the target is not reached within tolerance."""


@dataclass(frozen=True)
class IKConfig:
    """Damped-least-squares IK settings."""

    max_iters: int = 100
    """Iterations before giving up (each costs one kinematics pass + a 6x6 solve)."""
    pos_tol_m: float = 1e-4
    """Converged when the TCP is this close to the target position."""
    rot_tol_rad: float = 1e-3
    """Converged when the orientation error angle is below this (only with a target rotation)."""
    damping: float = 1e-2
    """DLS damping lambda; larger is more robust near singularities but slower to converge."""
    max_step_rad: float = 0.25
    """Largest joint change per iteration (keeps steps inside the linearisation's validity)."""
    nullspace_gain: float = 0.2
    """Gain of the null-space pull towards `posture` (0 disables it)."""
    posture: tuple[float, ...] = field(default_factory=lambda: tuple(HOME_Q.tolist()))
    """Preferred joint posture (7 values, rad) for the redundant degree of freedom."""

    def __post_init__(self) -> None:
        if self.max_iters < 1:
            raise ValueError(f"IKConfig.max_iters must be >= 1, got {self.max_iters}")
        for name in ("pos_tol_m", "rot_tol_rad", "damping", "max_step_rad"):
            if not getattr(self, name) > 0:
                raise ValueError(f"IKConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.nullspace_gain < 0:
            raise ValueError(f"IKConfig.nullspace_gain must be >= 0, got {self.nullspace_gain}")
        if len(self.posture) != 7:
            raise ValueError(f"IKConfig.posture needs 7 joint values, got {len(self.posture)}")


class XArm7Kinematics:
    """FK/IK of the TCP site of the xArm7 (robot base frame, metres and radians)."""

    def __init__(
        self,
        workspace: WorkspaceLimits | None = None,
        ik_config: IKConfig | None = None,
        ee_rot: np.ndarray = DOWN_ROT,
    ) -> None:
        self.workspace = workspace if workspace is not None else WorkspaceLimits()
        self.ik_config = ik_config if ik_config is not None else IKConfig()
        self.ee_rot = _check_rot(ee_rot)  # orientation held fixed by ee_delta_to_joint_targets
        self._model = mujoco.MjModel.from_xml_path(str(XARM7_MJCF_PATH))
        self._data = mujoco.MjData(self._model)
        self._qadr = np.array([self._model.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._dofadr = np.array([self._model.joint(n).dofadr[0] for n in JOINT_NAMES])
        self._site = self._model.site(TCP_SITE).id
        self._jacp = np.zeros((3, self._model.nv))
        self._jacr = np.zeros((3, self._model.nv))
        self._posture = check_joint_vector(np.array(self.ik_config.posture), "IKConfig.posture")

    def _set(self, q: np.ndarray) -> None:
        self._data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self._model, self._data)

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and rotation matrix (3, 3) for joint positions q (7,)."""
        self._set(check_joint_vector(q, "q"))
        site = self._data.site(self._site)
        return site.xpos.copy(), site.xmat.reshape(3, 3).copy()

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """(6, 7) TCP Jacobian: rows 0-2 linear, rows 3-5 angular velocity, in the base frame."""
        self._set(check_joint_vector(q, "q"))
        return self._jacobian_at_current()

    def _jacobian_at_current(self) -> np.ndarray:
        mujoco.mj_comPos(self._model, self._data)  # mj_jacSite needs the com-based quantities
        mujoco.mj_jacSite(self._model, self._data, self._jacp, self._jacr, self._site)
        return np.vstack([self._jacp[:, self._dofadr], self._jacr[:, self._dofadr]])

    def ik(
        self,
        target_pos: np.ndarray,
        q_init: np.ndarray,
        target_rot: np.ndarray | None = None,
        *,
        strict: bool = False,
    ) -> np.ndarray:
        """Joint positions (7,), within the joint limits, that put the TCP at `target_pos` (3,)
        and, if given, at orientation `target_rot` (3, 3). Starts from `q_init` (7,).

        Returns the best iterate when the target is unreachable; with strict=True raises IKError.
        """
        cfg = self.ik_config
        target = np.asarray(target_pos, dtype=np.float64)
        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise ValueError(f"target_pos must be a finite (3,) position, got {target_pos!r}")
        rot_goal = None if target_rot is None else _check_rot(target_rot)
        q = np.clip(check_joint_vector(q_init, "q_init"), JOINT_LOWER, JOINT_UPPER)
        n_task = 3 if rot_goal is None else 6
        best_q, best_err = q.copy(), np.inf
        for _ in range(cfg.max_iters):
            self._set(q)
            site = self._data.site(self._site)
            err = target - site.xpos  # (3,)
            pos_err, rot_err = float(np.linalg.norm(err)), 0.0
            if rot_goal is not None:
                rvec = _rotation_error(rot_goal, site.xmat.reshape(3, 3))  # (3,) axis * angle
                rot_err = float(np.linalg.norm(rvec))
                err = np.concatenate([err, rvec])  # (6,)
            score = pos_err + 0.1 * rot_err
            if score < best_err:
                best_q, best_err = q.copy(), score
            if pos_err < cfg.pos_tol_m and rot_err < cfg.rot_tol_rad:
                return q
            jac = self._jacobian_at_current()[:n_task]  # (n_task, 7)
            jjt = jac @ jac.T + cfg.damping**2 * np.eye(n_task)
            dq = jac.T @ np.linalg.solve(jjt, err)
            if cfg.nullspace_gain > 0:
                # I - J^+ J projects the posture pull onto motions that leave the TCP pose unchanged.
                proj = np.eye(7) - jac.T @ np.linalg.solve(jjt, jac)
                dq += proj @ (cfg.nullspace_gain * (self._posture - q))
            step = float(np.max(np.abs(dq)))
            if step > cfg.max_step_rad:
                dq *= cfg.max_step_rad / step
            q = np.clip(q + dq, JOINT_LOWER, JOINT_UPPER)
        if strict:
            raise IKError(f"IK did not converge to {target.tolist()} (best error {best_err:.2e})")
        return best_q

    def ee_delta_to_joint_targets(self, q: np.ndarray, delta_xyz: np.ndarray) -> np.ndarray:
        """Joint targets (7,) that move the TCP by `delta_xyz` (3, metres) from where it is at q (7,),
        clipped into the workspace box, with the orientation held at `ee_rot` (gripper down)."""
        delta = np.asarray(delta_xyz, dtype=np.float64)
        if delta.shape != (3,) or not np.all(np.isfinite(delta)):
            raise ValueError(f"delta_xyz must be a finite (3,) vector, got {delta_xyz!r}")
        pos, _ = self.fk(q)
        target = self.workspace.clip(pos + delta)
        return self.ik(target, q, self.ee_rot)


def _check_rot(rot: np.ndarray) -> np.ndarray:
    r = np.asarray(rot, dtype=np.float64)
    if r.shape != (3, 3) or not np.all(np.isfinite(r)):
        raise ValueError(f"rotation must be a finite (3, 3) matrix, got shape {r.shape}")
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
        raise ValueError("rotation must be a proper rotation matrix (orthonormal, det +1)")
    return r


def _rotation_error(goal: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) taking `current` to `goal`, in the base frame."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, (goal @ current.T).ravel())
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel
