"""fowm_episode_manager: the episode loop around a real (or simulated) arm.

    home -> wait for the scene reset -> start -> run -> end (labelled) -> home -> ...

- home: step the arm to `home_q` with JointTrajectory commands through the safety layer
  (fowm_xarm.command.ActionMapper.enforce: at most max_joint_step_rad per decision), one command per
  new joint state, until every joint is within home_tolerance_rad. The gripper opens.
- wait: the operator resets the scene and calls ~/start (the teleop `g` key); with
  reset_timeout_s > 0 (the sim) the episode also starts after that long. With scene_reset_service
  set (the sim: /fowm_sim/reset), that service is called first, which re-randomises the scene.
- start: publishes {"event": "start", ...} on /fowm/episode and calls `start_services` (the real
  graph starts the planner, which pauses itself at each end: it never fights the homing).
- run: counts /fowm/action messages (decisions) and sums /fowm/reward. The episode ends when
  `episode_length` decisions have completed, or after the decision following a ~/success or
  ~/failure call (the operator's label; the label also goes out on /fowm/operator_label so that the
  operator reward source rewards that decision). A decision is complete when its reward arrives (or
  `reward_wait_s` after its action when nothing publishes rewards), so the episode's last reward
  lands inside its bag.
- end: publishes {"event": "end", "success", "episode_return", "steps"}; success is the operator's
  label (False when the episode ran out of decisions unlabelled).

Events use fowm_xarm.topics.EpisodeEvent, the JSON the sim node publishes when it owns episodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, Float32MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from fowm_xarm import topics
from fowm_xarm.command import ActionMapper, SafetyLimits
from fowm_xarm.kinematics import HOME_Q, XArm7Kinematics
from fowm_xarm.limits import JOINT_LOWER, JOINT_UPPER
from fowm_xarm.observation import joint_state_to_arrays
from fowm_xarm.ros_node import declare_config, param, publish_episode_event, spin_node
from fowm_xarm.topics import EpisodeEvent

OPERATOR_LABEL_TOPIC = "/fowm/operator_label"  # std_msgs/String "success" | "failure", reliable
LABELS = ("success", "failure")


class Phase(StrEnum):
    HOMING = "homing"
    WAITING = "waiting"  # for the operator (or the timeout) to reset the scene
    RUNNING = "running"
    STOPPED = "stopped"  # max_episodes done



@dataclass
class EpisodeManagerConfig:
    """Parameters of fowm_episode_manager; each field is declared as a ROS parameter with its doc."""

    task: str = param("reach", "task name written into the episode events")
    seed: int = param(0, "episode n is announced with seed + n")
    episode_length: int = param(25, "decisions (/fowm/action messages) per episode")
    max_episodes: int = param(0, "stop after this many episodes (0 = run until stopped)")
    home_q: list[float] = field(
        default_factory=HOME_Q.tolist, metadata={"doc": "home joint positions joint1..joint7 (rad)"}
    )
    home_tolerance_rad: float = param(0.02, "homing is done when every joint is this close to home_q")
    homing_timeout_s: float = param(30.0, "give up homing (error, keep waiting) after this long")
    command_duration: float = param(0.16, "time_from_start (s) of each homing trajectory point")
    max_joint_step_rad: float = param(0.2, "safety layer: largest homing step per command (rad)")
    reset_timeout_s: float = param(
        0.0, "start the next episode this long after homing (0 = wait for ~/start)"
    )
    scene_reset_service: str = param(
        "", "Trigger service that resets the scene after homing (sim: /fowm_sim/reset)"
    )
    reward_wait_s: float = param(0.5, "a decision with no reward after this long counts as complete")
    start_services: list[str] = field(
        default_factory=lambda: [""],
        metadata={
            "doc": "Trigger services called after each start event (e.g. /fowm_planner/start); '' ignored"
        },
    )
    end_services: list[str] = field(
        default_factory=lambda: [""],
        metadata={
            "doc": "Trigger services called after each end event (e.g. /fowm_planner/stop); '' ignored"
        },
    )

    def __post_init__(self) -> None:
        if self.episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {self.episode_length}")
        if self.max_episodes < 0 or self.seed < 0:
            raise ValueError(f"max_episodes and seed must be >= 0, got {self.max_episodes}, {self.seed}")
        home = np.asarray(self.home_q, dtype=np.float64)
        if home.shape != (7,) or not np.all(np.isfinite(home)):
            raise ValueError(f"home_q must be 7 finite joint positions, got {self.home_q}")
        if np.any(home < JOINT_LOWER) or np.any(home > JOINT_UPPER):
            raise ValueError(f"home_q {self.home_q} is outside the joint limits")
        for name in ("home_tolerance_rad", "homing_timeout_s", "command_duration", "reward_wait_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.reset_timeout_s < 0:
            raise ValueError(f"reset_timeout_s must be >= 0, got {self.reset_timeout_s}")
        SafetyLimits(max_joint_step_rad=self.max_joint_step_rad)
        # ROS string-array parameters cannot be empty lists, hence [""] defaults.
        self.start_services = [s for s in self.start_services if s]
        self.end_services = [s for s in self.end_services if s]


class EpisodeManagerNode(Node):
    """See the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__("fowm_episode_manager", **overrides)
        self.config = cfg = declare_config(self, EpisodeManagerConfig)
        self.home_q = np.asarray(cfg.home_q, dtype=np.float64)
        kinematics = XArm7Kinematics()
        self.mapper = ActionMapper(
            kinematics,
            limits=SafetyLimits(max_joint_step_rad=cfg.max_joint_step_rad, workspace=kinematics.workspace),
        )
        reliable = topics.rclpy_qos(topics.QosKind.RELIABLE)
        self._traj_pub = self.create_publisher(JointTrajectory, topics.JOINT_TRAJECTORY.name, reliable)
        self._grip_pub = self.create_publisher(Float32, topics.GRIPPER_COMMAND.name, reliable)
        self._event_pub = self.create_publisher(
            String, topics.EPISODE.name, topics.rclpy_qos(topics.EPISODE.qos)
        )
        self._label_pub = self.create_publisher(String, OPERATOR_LABEL_TOPIC, reliable)
        self.create_subscription(
            JointState,
            topics.JOINT_STATES.name,
            self._on_joint_state,
            topics.rclpy_qos(topics.JOINT_STATES.qos),
        )
        self.create_subscription(Float32MultiArray, topics.ACTION.name, self._on_action, reliable)
        self.create_subscription(Float32, topics.REWARD.name, self._on_reward, reliable)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/success", lambda req, res: self._on_label("success", res))
        self.create_service(Trigger, "~/failure", lambda req, res: self._on_label("failure", res))
        self._scene_reset = (
            self.create_client(Trigger, cfg.scene_reset_service) if cfg.scene_reset_service else None
        )
        self._hooks = {
            name: self.create_client(Trigger, name) for name in (*cfg.start_services, *cfg.end_services)
        }
        self.create_timer(0.05, self._on_timer)

        self.episode = -1
        self._start_requested = False
        self._last_stamp_ns: int | None = None
        self._enter(Phase.HOMING)
        self.get_logger().info(
            f"episode manager up: task={cfg.task} episode_length={cfg.episode_length} "
            f"reset_timeout_s={cfg.reset_timeout_s} scene_reset_service={cfg.scene_reset_service or '-'}"
        )

    # -- phases ----------------------------------------------------------------------------------

    def _enter(self, phase: Phase) -> None:
        self.phase = phase
        self._phase_since = time.monotonic()
        if phase is Phase.WAITING:
            self._scene_reset_pending = self._scene_reset is not None
            self._scene_reset_future = None
        self.get_logger().info(f"phase: {phase}")

    def _start_episode(self) -> None:
        self.episode += 1
        self._steps = 0
        self._return = 0.0
        self._label: str | None = None
        self._decision_open_since: float | None = None  # an action whose reward has not arrived yet
        self._start_requested = False
        self._publish_event(
            EpisodeEvent("start", self.episode, self.config.task, self.config.seed + self.episode)
        )
        self._enter(Phase.RUNNING)
        self._call_hooks(self.config.start_services)

    def _end_episode(self) -> None:
        self._publish_event(
            EpisodeEvent(
                "end",
                self.episode,
                self.config.task,
                self.config.seed + self.episode,
                success=self._label == "success",
                episode_return=self._return,
                steps=self._steps,
            )
        )
        self._call_hooks(self.config.end_services)
        done = self.config.max_episodes and self.episode + 1 >= self.config.max_episodes
        self._enter(Phase.STOPPED if done else Phase.HOMING)

    def _call_hooks(self, services: list[str]) -> None:
        for name in services:
            client = self._hooks[name]
            if not client.service_is_ready():
                self.get_logger().error(f"service {name} is not available")
                continue
            client.call_async(Trigger.Request()).add_done_callback(
                lambda f, n=name: self.get_logger().info(f"{n}: {f.result().message}")
            )

    def _publish_event(self, event: EpisodeEvent) -> None:
        publish_episode_event(self, self._event_pub, event)

    # -- callbacks -------------------------------------------------------------------------------

    def _on_joint_state(self, msg: JointState) -> None:
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if self.phase is not Phase.HOMING or stamp_ns == self._last_stamp_ns:
            return
        try:
            q, gripper = joint_state_to_arrays(msg.name, msg.position)
        except ValueError as exc:
            self.get_logger().error(f"ignored joint state: {exc}", throttle_duration_sec=5.0)
            return
        self._last_stamp_ns = stamp_ns
        if np.max(np.abs(q - self.home_q)) <= self.config.home_tolerance_rad:
            self._enter(Phase.WAITING)
            return
        command = self.mapper.enforce(self.home_q, 1.0, q, gripper)
        if command.held:
            self.get_logger().error(
                f"homing refused by the safety layer: {command.notes}", throttle_duration_sec=5.0
            )
            return
        now_ns = self.get_clock().now().nanoseconds
        self._grip_pub.publish(topics.float32_msg(command.gripper))
        self._traj_pub.publish(
            topics.joint_trajectory_msg(now_ns, command.joint_targets, self.config.command_duration)
        )

    def _on_action(self, msg: Float32MultiArray) -> None:
        if self.phase is not Phase.RUNNING:
            return
        self._steps += 1
        self._decision_open_since = time.monotonic()

    def _on_reward(self, msg: Float32) -> None:
        if self.phase is not Phase.RUNNING or self._decision_open_since is None:
            return
        self._return += float(msg.data)
        self._decision_open_since = None
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self._steps >= self.config.episode_length or (
            self._label is not None and self._label_step < self._steps
        ):
            self._end_episode()

    def _on_timer(self) -> None:
        now = time.monotonic()
        cfg = self.config
        if self.phase is Phase.HOMING and now - self._phase_since > cfg.homing_timeout_s:
            self.get_logger().error(
                f"homing did not reach home_q within {cfg.homing_timeout_s} s; waiting for the operator"
            )
            self._enter(Phase.WAITING)
        elif self.phase is Phase.WAITING:
            if self._scene_reset_pending:
                self._reset_scene()
                return
            timed_out = cfg.reset_timeout_s > 0 and now - self._phase_since >= cfg.reset_timeout_s
            if self._start_requested or timed_out:
                self._start_episode()
        elif self.phase is Phase.RUNNING and self._decision_open_since is not None:
            if now - self._decision_open_since > cfg.reward_wait_s:
                self._decision_open_since = None  # no reward source: the decision is complete anyway
                self._maybe_end()

    def _reset_scene(self) -> None:
        if self._scene_reset_future is None:
            if not self._scene_reset.service_is_ready():
                self.get_logger().warning(
                    f"waiting for the scene reset service {self._scene_reset.srv_name}",
                    throttle_duration_sec=5.0,
                )
                return
            self._scene_reset_future = self._scene_reset.call_async(Trigger.Request())
        elif self._scene_reset_future.done():
            result = self._scene_reset_future.result()
            self.get_logger().info(f"scene reset: {result.message}")
            self._scene_reset_pending = False
            self._phase_since = time.monotonic()  # the reset timeout counts from a reset scene

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.phase is Phase.RUNNING:
            response.success, response.message = False, f"episode {self.episode} is running"
        elif self.phase is Phase.STOPPED:
            response.success, response.message = False, f"all {self.config.max_episodes} episodes are done"
        else:
            self._start_requested = True
            response.success = True
            response.message = f"episode {self.episode + 1} starts " + (
                "now" if self.phase is Phase.WAITING else "once the arm is home"
            )
        return response

    def _on_label(self, label: str, response: Trigger.Response) -> Trigger.Response:
        if self.phase is not Phase.RUNNING:
            response.success, response.message = False, f"no episode is running ({self.phase})"
            return response
        if self._label is None:
            self._label = label
            self._label_step = self._steps  # the episode ends after the next decision completes
            self._label_pub.publish(String(data=label))
        response.success = True
        response.message = f"episode {self.episode} labelled {self._label}; it ends after the next decision"
        return response


def main(args: list[str] | None = None) -> None:
    spin_node(EpisodeManagerNode, args)


if __name__ == "__main__":
    main()
