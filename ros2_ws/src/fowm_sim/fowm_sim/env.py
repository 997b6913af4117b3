"""Gymnasium environment: the simulated xArm7 on a table doing reach, push or lift.

One decision (0.16 s) = IK from an end-effector delta to joint targets (fowm_xarm kinematics,
the same path the real planner uses), then `substeps` physics steps during which the joint
targets are ramped in at no more than the joint velocity limit, like a trajectory controller.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from fowm_sim.config import SimConfig
from fowm_sim.scene import (
    CAMERA_NAME,
    CUBE_BODY,
    CUBE_JOINT,
    GOAL_BODY,
    GOAL_SHADOW_BODY,
    ROI_CAMERA_NAME,
    build_model,
)
from fowm_sim.tasks import TaskState, make_task
from fowm_xarm.command import ActionMapper
from fowm_xarm.description import ARM_ACTUATORS, FINGER_ACTUATORS, FINGER_JOINTS, FINGER_TRAVEL_M, TCP_SITE
from fowm_xarm.kinematics import DOWN_ROT, HOME_Q, XArm7Kinematics
from fowm_xarm.limits import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER, JOINT_VELOCITY_LIMIT, check_joint_vector
from fowm_xarm.observation import ObservationConfig, make_observation, state_observation

_HOME_TCP = np.array([0.4, 0.0, 0.25])

Obs = dict[str, np.ndarray]
StepResult = tuple[Obs, float, bool, bool, dict[str, Any]]


class XArmTaskEnv(gym.Env):
    """xArm7 tabletop task with rgb (3, 84, 84) uint8 + state (4,) float32 observations.

    state = TCP xyz (m, robot base frame) + gripper opening in [0, 1] (1 = open).
    action = TCP xyz delta in [-1, 1] (times max_delta_m) + gripper command in [-1, 1]
             (absolute: -1 closed, +1 open; opening target = (a + 1) / 2).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 6.25}

    def __init__(self, task: str = "reach", config: SimConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = SimConfig(task=task)
        elif config.task != task:
            raise ValueError(f"task {task!r} disagrees with config.task {config.task!r}")
        self.config = config
        self.task = make_task(task, push_action_penalty=config.push_action_penalty)
        self.render_mode = "rgb_array"
        self.kinematics = XArm7Kinematics(workspace=config.workspace)
        # The planner node and teleop map actions and build observations through the same objects.
        self.action_mapper = ActionMapper(self.kinematics, config.max_delta_m)
        self.observation_config = ObservationConfig(image_size=config.image_size, crop=config.image_crop)
        self.model = build_model(config)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._arm_qadr = np.array([m.joint(n).qposadr[0] for n in JOINT_NAMES])
        self._arm_dofadr = np.array([m.joint(n).dofadr[0] for n in JOINT_NAMES])
        self._finger_qadr = np.array([m.joint(n).qposadr[0] for n in FINGER_JOINTS])
        self._arm_act = np.array([m.actuator(n).id for n in ARM_ACTUATORS])
        self._finger_act = np.array([m.actuator(n).id for n in FINGER_ACTUATORS])
        self._cube_qadr = m.joint(CUBE_JOINT).qposadr[0]
        self._cube_body = m.body(CUBE_BODY).id
        self._goal_mocap = m.body(GOAL_BODY).mocapid[0]
        self._goal_shadow_mocap = m.body(GOAL_SHADOW_BODY).mocapid[0]
        self._tcp_site = m.site(TCP_SITE).id
        self._camera = m.camera(CAMERA_NAME).id
        self._roi_camera = m.camera(ROI_CAMERA_NAME).id

        size = config.image_size
        self.observation_space = gym.spaces.Dict(
            {
                "rgb": gym.spaces.Box(0, 255, (3, size, size), np.uint8),
                # TCP inside the workspace box (+5 cm for tracking overshoot), gripper opening in [0, 1].
                "state": gym.spaces.Box(
                    np.array([*(config.workspace.low - 0.05), 0.0], np.float32),
                    np.array([*(config.workspace.high + 0.05), 1.0], np.float32),
                    dtype=np.float32,
                ),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._full_renderer: mujoco.Renderer | None = None
        # The full frame of the current state, rendered at most once per state: the observation
        # and the camera topic / video of the same step share it. Keyed on the state itself, so
        # direct writes to env.data (followed by mj_forward) are never served a stale frame.
        self._frame: np.ndarray | None = None
        self._frame_key: bytes = b""
        self._obs_renderer: mujoco.Renderer | None = None
        self._steps = 0
        self._needs_reset = True
        self._cube_start = np.zeros(3)
        self._goal = np.zeros(3)

    # ---- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        cfg = self.config
        layout = self.task.sample(rng, cfg.cube_half_size_m)
        mujoco.mj_resetData(self.model, self.data)

        start = _HOME_TCP + rng.uniform(-cfg.initial_ee_noise_m, cfg.initial_ee_noise_m, 3)
        q0 = self.kinematics.ik(start, HOME_Q, DOWN_ROT)
        self.data.qpos[self._arm_qadr] = q0
        self.data.qpos[self._finger_qadr] = FINGER_TRAVEL_M
        self.data.ctrl[self._arm_act] = q0
        self.data.ctrl[self._finger_act] = FINGER_TRAVEL_M
        cube = np.array([layout.cube_xy[0], layout.cube_xy[1], cfg.cube_half_size_m])
        self.data.qpos[self._cube_qadr : self._cube_qadr + 7] = [*cube, 1.0, 0.0, 0.0, 0.0]
        # A hidden goal marker sits under the table top, out of every camera's view.
        hidden = [0.4, 0.0, -0.2]
        self.data.mocap_pos[self._goal_mocap] = layout.goal if self.task.show_goal else hidden
        airborne = self.task.show_goal and layout.goal[2] > 2 * cfg.cube_half_size_m
        self.data.mocap_pos[self._goal_shadow_mocap] = [*layout.goal[:2], 0.0006] if airborne else hidden
        mujoco.mj_forward(self.model, self.data)

        self._cube_start = cube
        self._goal = np.asarray(layout.goal, dtype=np.float64).copy()
        self._steps = 0
        self._needs_reset = False
        info = {
            "success": self.task.success(self._task_state()),
            "joint_targets": q0.copy(),
            "gripper_target": 1.0,
        }
        return self._observation(), info

    def step(self, action: np.ndarray) -> StepResult:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN or Inf: {a}")
        self._check_running()
        command = self.action_mapper.command(a, self.joint_positions(), self.gripper_position())
        return self.step_joint_targets(command.joint_targets, command.gripper)

    def step_joint_targets(self, joint_targets: np.ndarray, gripper_target: float) -> StepResult:
        """Advance one decision towards joint targets (7,) rad and a gripper opening in [0, 1].

        Targets outside the joint limits are rejected with ValueError (the real arm refuses them too).
        """
        q_target = check_joint_vector(joint_targets, "joint_targets")
        if np.any(q_target < JOINT_LOWER - 1e-9) or np.any(q_target > JOINT_UPPER + 1e-9):
            outside = (q_target < JOINT_LOWER) | (q_target > JOINT_UPPER)
            bad = [JOINT_NAMES[i] for i in np.flatnonzero(outside)]
            raise ValueError(f"joint_targets outside the joint limits for {bad}: {q_target}")
        g = float(gripper_target)
        if not np.isfinite(g) or not 0.0 <= g <= 1.0:
            raise ValueError(f"gripper_target must be in [0, 1], got {gripper_target!r}")
        self._check_running()
        cfg = self.config
        tcp_before = self.tcp_position()
        # The commanded TCP displacement in action units: what the push action penalty is charged on,
        # so step() and step_joint_targets() (the ROS sim node's path) give the same reward.
        action_xyz = (self.kinematics.fk(q_target)[0] - tcp_before) / cfg.max_delta_m

        self.data.ctrl[self._finger_act] = g * FINGER_TRAVEL_M
        n_ramp = max(1, round(cfg.ramp_fraction * cfg.substeps))
        ctrl = self.data.ctrl[self._arm_act].copy()
        per_step = np.minimum(np.abs(q_target - ctrl) / n_ramp, JOINT_VELOCITY_LIMIT * cfg.physics_timestep)
        for _ in range(cfg.substeps):
            ctrl = ctrl + np.clip(q_target - ctrl, -per_step, per_step)
            self.data.ctrl[self._arm_act] = ctrl
            mujoco.mj_step(self.model, self.data)

        self._steps += 1
        state = self._task_state()
        reward = self.task.reward(state, action_xyz)
        truncated = self._steps >= cfg.episode_length
        self._needs_reset = truncated
        info = {
            "success": self.task.success(state),
            "joint_targets": q_target.copy(),
            "gripper_target": g,
        }
        return self._observation(), float(reward), False, truncated, info

    def render(self) -> np.ndarray:
        return self.render_camera()

    def close(self) -> None:
        for r in (self._full_renderer, self._obs_renderer):
            if r is not None:
                r.close()
        self._full_renderer = self._obs_renderer = None

    # ---- robot and world state -----------------------------------------------------------------
    def render_camera(self) -> np.ndarray:
        """Full colour frame (camera_height, camera_width, 3) uint8 of the current state (read-only;
        rendered once per state and shared by every caller while the state is unchanged)."""
        key = self.data.qpos.tobytes() + self.data.mocap_pos.tobytes() + self.data.time.hex().encode()
        if self._frame is None or key != self._frame_key:
            if self._full_renderer is None:
                cfg = self.config
                self._full_renderer = _make_renderer(self.model, cfg.camera_height, cfg.camera_width)
            self._full_renderer.update_scene(self.data, camera=self._camera)
            self._frame = self._full_renderer.render()
            self._frame.flags.writeable = False
            self._frame_key = key
        return self._frame

    def joint_positions(self) -> np.ndarray:
        """(7,) arm joint positions, rad."""
        return self.data.qpos[self._arm_qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        """(7,) arm joint velocities, rad/s."""
        return self.data.qvel[self._arm_dofadr].copy()

    def gripper_position(self) -> float:
        """Gripper opening in [0, 1] (mean finger travel / full travel)."""
        travel = float(np.mean(self.data.qpos[self._finger_qadr]))
        return float(np.clip(travel / FINGER_TRAVEL_M, 0.0, 1.0))

    def tcp_position(self) -> np.ndarray:
        """(3,) TCP position in the robot base frame, m."""
        return self.data.site_xpos[self._tcp_site].copy()

    def camera_intrinsics(self) -> dict[str, float]:
        """Pinhole intrinsics of the full colour frame (square pixels, principal point at the centre)."""
        w, h = self.config.camera_width, self.config.camera_height
        f = 0.5 * h / np.tan(np.deg2rad(self.config.camera_fovy_deg) / 2.0)
        return {"width": w, "height": h, "fx": float(f), "fy": float(f), "cx": w / 2.0, "cy": h / 2.0}

    def task_state(self) -> dict[str, float]:
        """Flat float dict of privileged state (TCP, gripper, cube, cube start, goal) for recording."""
        s = self._task_state()
        out: dict[str, float] = {"gripper": s.gripper}
        for name, vec in (("tcp", s.tcp), ("cube", s.cube), ("cube_start", s.cube_start), ("goal", s.goal)):
            out.update({f"{name}_{axis}": float(v) for axis, v in zip("xyz", vec)})
        quat = self.data.qpos[self._cube_qadr + 3 : self._cube_qadr + 7]
        out.update({f"cube_q{c}": float(v) for c, v in zip("wxyz", quat)})
        return out

    # ---- internals -----------------------------------------------------------------------------
    def _check_running(self) -> None:
        if self._needs_reset:
            raise RuntimeError("episode is over (or never started): call reset() before stepping")

    def _task_state(self) -> TaskState:
        return TaskState(
            tcp=self.tcp_position(),
            gripper=self.gripper_position(),
            cube=self.data.xpos[self._cube_body].copy(),
            cube_start=self._cube_start.copy(),
            goal=self._goal.copy(),
        )

    def _observation(self) -> Obs:
        cfg = self.config
        if cfg.obs_from_full_frame:  # exactly the real robot's path (the planner node calls the same)
            return make_observation(
                self.render_camera(), self.joint_positions(), self.gripper_position(),
                self.kinematics, self.observation_config,
            )  # fmt: skip
        # The ROI camera's frustum is exactly the crop: the same picture without the full frame (faster).
        if self._obs_renderer is None:
            self._obs_renderer = _make_renderer(self.model, cfg.image_size, cfg.image_size)
        self._obs_renderer.update_scene(self.data, camera=self._roi_camera)
        rgb = np.ascontiguousarray(self._obs_renderer.render().transpose(2, 0, 1))
        state = state_observation(self.joint_positions(), self.gripper_position(), self.kinematics)
        return {"rgb": rgb, "state": state}


def _make_renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    try:
        return mujoco.Renderer(model, height, width)
    except Exception as exc:  # mujoco raises bare errors from the GL backend chosen at import time
        raise RuntimeError(
            "could not create a MuJoCo renderer; on a machine without a display set MUJOCO_GL=egl "
            f"(or osmesa) before mujoco is first imported ({type(exc).__name__}: {exc})"
        ) from exc
