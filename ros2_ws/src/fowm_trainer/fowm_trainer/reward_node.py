"""fowm_reward: the reward on the real robot, one /fowm/reward message per decision (/fowm/action).

Source, by parameter `source`:
- operator: sparse. 1 for every decision after the operator labelled the episode a success (the
  episode manager's ~/success, teleop key `y`, publishes the label on /fowm/operator_label; the
  manager ends the episode after the next decision, which this node therefore rewards), else 0.
- classifier: the success classifier (fowm_trainer.success_classifier, trained by
  fowm-train-success-classifier from labelled bags) on the camera frame after the decision; its
  probability, or 0/1 at `threshold` when `binarize` (FOWM's sparse reward).
- color: dense; minus the distance of an object of a configured colour to a goal region of the
  image (fowm_trainer.color_reward), on the camera frame after the decision.

"After the decision": the first image stamped at least `reward_delay_s` after the observation the
action names (its obs_stamp_ns; the action's receive time when it names none), so the reward
judges the state the action led to, like the sim's. The frame goes through the shared observation
path (make_observation with the classifier's ObservationConfig) for the classifier.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float32MultiArray, String

from fowm_trainer.color_reward import ColorRewardConfig, color_reward
from fowm_xarm import topics
from fowm_xarm.observation import image_to_rgb, joint_state_to_arrays
from fowm_xarm.ros_node import spin_node
from fowm_xarm.topics import EpisodeEvent

SOURCES = ("operator", "classifier", "color")
OPERATOR_LABEL_TOPIC = "/fowm/operator_label"  # fowm_xarm.episode_manager_node publishes it
_COLOR_DEFAULTS = ColorRewardConfig()


def _param(default: Any, doc: str) -> Any:
    """A config field whose doc becomes the ROS parameter description."""
    return field(default=default, metadata={"doc": doc})


def _list_field(default: tuple, doc: str) -> Any:
    """A list-valued config field (a fresh list per instance)."""
    return field(default_factory=lambda: list(default), metadata={"doc": doc})


@dataclass
class RewardNodeConfig:
    """Parameters of fowm_reward; each field is declared as a ROS parameter with its doc."""

    source: str = _param("operator", "operator (success key), classifier (success classifier) or color")
    reward_delay_s: float = _param(0.15, "judge the first image stamped this long after the action's obs")
    classifier_file: str = _param("", "success classifier (.safetensors from fowm-train-success-classifier)")
    threshold: float = _param(0.5, "classifier: probability that counts as success")
    binarize: bool = _param(True, "classifier: publish 0/1 at threshold (sparse) instead of the probability")
    hsv_low: list[int] = _list_field(  # noqa: RUF009 (returns a dataclasses.field with a factory)
        _COLOR_DEFAULTS.hsv_low, "color: lower HSV bound (OpenCV: H<180)"
    )
    hsv_high: list[int] = _list_field(  # noqa: RUF009
        _COLOR_DEFAULTS.hsv_high, "color: upper HSV bound (H wraps if < low)"
    )
    goal_region: list[float] = _list_field(  # noqa: RUF009
        _COLOR_DEFAULTS.goal_region, "color: goal box x_min, y_min, x_max, y_max as image fractions"
    )
    min_area_px: int = _param(_COLOR_DEFAULTS.min_area_px, "color: smallest blob that counts as the object")
    missing_reward: float = _param(
        _COLOR_DEFAULTS.missing_reward, "color: reward when the object is not seen"
    )

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "classifier" and not self.classifier_file:
            raise ValueError("source classifier needs classifier_file")
        if not 0.0 <= self.reward_delay_s <= 5.0:
            raise ValueError(f"reward_delay_s must be in [0, 5] s, got {self.reward_delay_s}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")

    def color_config(self) -> ColorRewardConfig:
        return ColorRewardConfig(
            hsv_low=tuple(self.hsv_low),
            hsv_high=tuple(self.hsv_high),
            goal_region=tuple(self.goal_region),
            min_area_px=self.min_area_px,
            missing_reward=self.missing_reward,
        )


def _stamp_ns(header: Any) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


class RewardNode(Node):
    """See the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__("fowm_reward", **overrides)
        defaults = RewardNodeConfig()
        for f in fields(RewardNodeConfig):
            self.declare_parameter(
                f.name, getattr(defaults, f.name), ParameterDescriptor(description=f.metadata["doc"])
            )
        self.config = cfg = RewardNodeConfig(
            **{f.name: self.get_parameter(f.name).value for f in fields(RewardNodeConfig)}
        )
        self._color = cfg.color_config() if cfg.source == "color" else None
        self._classifier = None
        if cfg.source == "classifier":
            import torch

            from fowm_trainer.success_classifier import load_classifier
            from fowm_xarm.kinematics import XArm7Kinematics

            torch.set_num_threads(1)  # a few small convs per decision; leave the cores to the planner
            self._classifier, _, self._obs_config = load_classifier(cfg.classifier_file)
            self._kinematics = XArm7Kinematics()

        reliable = topics.rclpy_qos(topics.QosKind.RELIABLE)
        self._reward_pub = self.create_publisher(Float32, topics.REWARD.name, reliable)
        self.create_subscription(Float32MultiArray, topics.ACTION.name, self._on_action, reliable)
        self.create_subscription(
            String, topics.EPISODE.name, self._on_episode, topics.rclpy_qos(topics.EPISODE.qos)
        )
        self.create_subscription(String, OPERATOR_LABEL_TOPIC, self._on_label, reliable)
        if cfg.source != "operator":
            sensor = topics.rclpy_qos(topics.QosKind.SENSOR)
            self.create_subscription(Image, topics.IMAGE.name, self._on_image, sensor)
            self.create_subscription(JointState, topics.JOINT_STATES.name, self._on_joint_state, sensor)
        self._success_label = False
        self._pending: deque[int] = deque()  # per waiting decision: earliest image stamp that may judge it
        self._joint_state: JointState | None = None
        self.published = 0
        self.get_logger().info(f"reward node up: source={cfg.source}")

    # -- inputs ----------------------------------------------------------------------------------

    def _on_episode(self, msg: String) -> None:
        try:
            event = EpisodeEvent.from_json(msg.data)
        except ValueError as exc:
            self.get_logger().error(f"ignored episode event: {exc}")
            return
        if event.event == "start":
            self._success_label = False
            self._pending.clear()

    def _on_label(self, msg: String) -> None:
        self._success_label = msg.data == "success"

    def _on_joint_state(self, msg: JointState) -> None:
        self._joint_state = msg

    def _on_action(self, msg: Float32MultiArray) -> None:
        if self.config.source == "operator":
            self._publish(1.0 if self._success_label else 0.0)
            return
        try:
            obs_stamp = topics.action_obs_stamp(msg)
        except ValueError as exc:
            self.get_logger().warning(f"action without a usable stamp ({exc}); judging by receive time")
            obs_stamp = None
        if obs_stamp is None:
            obs_stamp = self.get_clock().now().nanoseconds
        self._pending.append(obs_stamp + round(self.config.reward_delay_s * 1e9))

    def _on_image(self, msg: Image) -> None:
        if not self._pending or _stamp_ns(msg.header) < self._pending[0]:
            return
        try:
            rgb = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, bytes(msg.data))
            reward = self._judge(rgb)
        except ValueError as exc:
            self.get_logger().error(f"cannot judge image: {exc}", throttle_duration_sec=5.0)
            return
        # One image may settle several decisions (a stalled camera): each gets its own message.
        while self._pending and _stamp_ns(msg.header) >= self._pending[0]:
            self._pending.popleft()
            self._publish(reward)

    def _judge(self, rgb: np.ndarray) -> float:
        if self._color is not None:
            return color_reward(rgb, self._color)[0]
        from fowm_xarm.observation import make_observation

        if self._joint_state is None:
            raise ValueError("no joint state yet (make_observation needs one)")
        q, gripper = joint_state_to_arrays(self._joint_state.name, self._joint_state.position)
        obs = make_observation(rgb, q, gripper, self._kinematics, self._obs_config)
        p = float(self._classifier.probability(obs["rgb"])[0])
        return float(p >= self.config.threshold) if self.config.binarize else p

    def _publish(self, reward: float) -> None:
        self._reward_pub.publish(Float32(data=float(reward)))
        self.published += 1


def main(args: list[str] | None = None) -> None:
    spin_node(RewardNode, args)


if __name__ == "__main__":
    main()
