"""The sim node: XArmTaskEnv behind exactly the real xArm's topic contract (fowm_xarm.topics).

Publishes the camera (Image rgb8 + CameraInfo), /joint_states, the reward and episode events;
obeys JointTrajectory commands (last point = joint targets) and the gripper command.

Clock modes:
- realtime: a wall-clock timer steps the sim every control period, holding the last targets.
- lockstep: each accepted JointTrajectory advances the sim by one control period, and the node
  publishes /clock, so nodes with use_sim_time=true see sim time. A gripper command applies to the
  next trajectory command. Between commands the current observation is republished every control
  period (wall clock) with an unchanged stamp; consumers tell new observations by their stamp.

Episodes reset after episode_length decisions (or a terminal step) and on the ~/reset service
(std_srvs/Trigger). Episode n is reset with seed + n, so a run is reproducible from its seed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.node import Node
from std_msgs.msg import Float32
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from fowm_sim.config import SimConfig
from fowm_sim.env import XArmTaskEnv
from fowm_xarm import topics
from fowm_xarm.limits import JOINT_LOWER, JOINT_UPPER
from fowm_xarm.ros_node import declare_config, param, publish_episode_event, spin_node
from fowm_xarm.topics import EpisodeEvent, TopicSpec

CLOCK_MODES = ("realtime", "lockstep")
# Lockstep sim time starts at 1 s: a zero ROS time means "no clock yet" to use_sim_time nodes.
LOCKSTEP_START_NS = 10**9



@dataclass
class SimNodeConfig:
    """Parameters of the sim node; each field is declared as a ROS parameter with its doc."""

    task: str = param("reach", "task of the env: reach, push or lift")
    seed: int = param(0, "episode n resets with seed + n")
    clock_mode: str = param(
        "lockstep",
        "realtime (a wall-clock timer steps, holding the last targets) or lockstep (a step per command)",
    )
    control_period: float = param(0.16, "seconds of sim time per decision")
    episode_length: int = param(25, "decisions per episode before an automatic reset")
    publish_images: bool = param(True, "publish the 640x480 camera image and camera info")
    frame_id: str = param("camera_color_optical_frame", "frame_id of the camera messages")
    episode_events: bool = param(
        True,
        "own the episodes: publish /fowm/episode events and reset after episode_length decisions; false "
        "when fowm_episode_manager owns them (it resets the scene through ~/reset)",
    )

    def __post_init__(self) -> None:
        if self.clock_mode not in CLOCK_MODES:
            raise ValueError(f"clock_mode must be one of {CLOCK_MODES}, got {self.clock_mode!r}")
        if not self.control_period > 0:
            raise ValueError(f"control_period must be > 0 s, got {self.control_period}")
        if self.episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {self.episode_length}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


def ros_message_class(spec: TopicSpec) -> type:
    """The rclpy message class of a topic spec ("sensor_msgs/msg/Image" -> sensor_msgs.msg.Image)."""
    package, _, name = spec.msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class SimNode(Node):
    """XArmTaskEnv with the robot's topics; see the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__("fowm_sim", **overrides)
        self.config = declare_config(self, SimNodeConfig)
        cfg = self.config
        # Without episode ownership the env never truncates: the episode manager decides (homing
        # steps between its episodes included).
        env_length = cfg.episode_length if cfg.episode_events else 2**31 - 1
        self.env = XArmTaskEnv(
            cfg.task, SimConfig(task=cfg.task, control_period=cfg.control_period, episode_length=env_length)
        )
        self._lockstep = cfg.clock_mode == "lockstep"

        def pub(spec: TopicSpec) -> Any:
            return self.create_publisher(ros_message_class(spec), spec.name, topics.rclpy_qos(spec.qos))

        self._pubs = {
            s.name: pub(s)
            for s in (
                topics.IMAGE,
                topics.CAMERA_INFO,
                topics.JOINT_STATES,
                topics.REWARD,
                topics.EPISODE,
                topics.CLOCK,
            )
        }
        # Created before the trajectory subscription so that, when both are ready in one wait, the
        # single-threaded executor applies a gripper command before the trajectory that follows it.
        self.create_subscription(
            Float32,
            topics.GRIPPER_COMMAND.name,
            self._on_gripper,
            topics.rclpy_qos(topics.GRIPPER_COMMAND.qos),
        )
        self.create_subscription(
            JointTrajectory,
            topics.JOINT_TRAJECTORY.name,
            self._on_trajectory,
            topics.rclpy_qos(topics.JOINT_TRAJECTORY.qos),
        )
        self.create_service(Trigger, "~/reset", self._on_reset)

        self._episode = -1
        self._last_observation: list[tuple[str, bytes]] = []  # (topic, CDR) of the latest observation
        self._period_ns = round(cfg.control_period * 1e9)
        self._sim_time_ns = LOCKSTEP_START_NS
        self._start_episode()
        # Realtime: the timer steps the sim. Lockstep: it republishes the current observation (same
        # stamp) so that a subscriber that joined late, e.g. a planner, still gets the state to act on.
        self.create_timer(cfg.control_period, self._on_timer)
        self.get_logger().info(f"sim node up: task={cfg.task} clock_mode={cfg.clock_mode} seed={cfg.seed}")

    # -- episode bookkeeping ------------------------------------------------------------------

    def _start_episode(self) -> None:
        self._episode += 1
        if self._lockstep and self._episode > 0:
            # The reset takes one control period of sim time, so the first observation of the new
            # episode has a stamp of its own (consumers key observations by stamp).
            self._sim_time_ns += self._period_ns
            self._pubs[topics.CLOCK.name].publish(topics.clock_msg(self._sim_time_ns))
        seed = self.config.seed + self._episode
        self.env.reset(seed=seed)
        self._targets = self.env.joint_positions().copy()  # hold still until commanded
        self._gripper_target = float(self.env.gripper_position())
        self._return = 0.0
        self._steps = 0
        self._success = False
        stamp = self._now_ns()
        event = EpisodeEvent("start", self._episode, self.config.task, seed, first_obs_stamp_ns=stamp)
        self._publish_event(event)
        self._publish_observation(stamp)

    def _end_episode(self) -> None:
        self._publish_event(
            EpisodeEvent(
                "end",
                self._episode,
                self.config.task,
                self.config.seed + self._episode,
                success=self._success,
                episode_return=self._return,
                steps=self._steps,
            )
        )

    def _publish_event(self, event: EpisodeEvent) -> None:
        if not self.config.episode_events:
            return
        publish_episode_event(self, self._pubs[topics.EPISODE.name], event)

    # -- stepping -------------------------------------------------------------------------------

    def _step(self) -> None:
        _, reward, terminated, truncated, info = self.env.step_joint_targets(
            self._targets, self._gripper_target
        )
        self._steps += 1
        self._return += float(reward)
        self._success = self._success or bool(info.get("success", False))
        if self._lockstep:
            self._sim_time_ns += self._period_ns
            self._pubs[topics.CLOCK.name].publish(topics.clock_msg(self._sim_time_ns))
        self._pubs[topics.REWARD.name].publish(topics.float32_msg(reward))
        self._publish_observation()
        ended = terminated or truncated or self._steps >= self.config.episode_length
        if ended and self.config.episode_events:
            self._end_episode()
            self._start_episode()

    def _now_ns(self) -> int:
        return self._sim_time_ns if self._lockstep else self.get_clock().now().nanoseconds

    def _publish_observation(self, stamp: int | None = None) -> None:
        stamp = self._now_ns() if stamp is None else stamp
        js = topics.joint_state_msg(
            stamp, self.env.joint_positions(), self.env.joint_velocities(), self.env.gripper_position()
        )
        self._last_observation = [(topics.JOINT_STATES.name, js)]
        if self.config.publish_images:
            frame = self.env.render_camera()  # (480, 640, 3) uint8
            info = topics.camera_info_msg(stamp, self.env.camera_intrinsics(), self.config.frame_id)
            image = topics.image_msg(stamp, frame, self.config.frame_id)
            self._last_observation += [(topics.CAMERA_INFO.name, info), (topics.IMAGE.name, image)]
        self._republish_observation()

    def _republish_observation(self) -> None:
        # Serialised once per step; idle lockstep republishing costs no render.
        for topic, data in self._last_observation:
            self._pubs[topic].publish(data)

    # -- callbacks --------------------------------------------------------------------------------

    def _on_gripper(self, msg: Float32) -> None:
        value = float(msg.data)
        if not np.isfinite(value) or not 0.0 <= value <= 1.0:
            self.get_logger().error(f"rejected gripper command {value}: must be a finite opening in [0, 1]")
            return
        self._gripper_target = value

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            targets = topics.trajectory_targets(msg.joint_names, msg.points, JOINT_LOWER, JOINT_UPPER)
        except ValueError as exc:
            # No motion: the previous targets stay, and in lockstep the sim does not advance.
            self.get_logger().error(f"rejected joint trajectory: {exc}")
            return
        self._targets = targets
        if self._lockstep:
            self._step()

    def _on_timer(self) -> None:
        if self._lockstep:
            self._pubs[topics.CLOCK.name].publish(topics.clock_msg(self._sim_time_ns))
            self._republish_observation()
        else:
            self._step()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._end_episode()
        self._start_episode()
        response.success = True
        response.message = f"episode {self._episode} started with seed {self.config.seed + self._episode}"
        return response

    def close(self) -> None:
        self.env.close()


def main(args: list[str] | None = None) -> None:
    spin_node(SimNode, args, SimNode.close)


if __name__ == "__main__":
    main()
