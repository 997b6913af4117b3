"""fowm_reward over DDS: one reward per decision, from the operator's label or from the camera frame
the decision led to (colour source, against the lockstep sim's camera)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _collect_rewards(ros_node, out: list[float], topic: str = "/fowm/reward"):
    from std_msgs.msg import Float32

    from fowm_xarm import topics

    return ros_node.create_subscription(
        Float32,
        topic,
        lambda m: out.append(float(m.data)),
        topics.rclpy_qos(topics.QosKind.RELIABLE),
    )


def test_operator_source_rewards_decisions_after_the_success_label(ros_processes, ros_node):
    from std_msgs.msg import Float32MultiArray, String

    from fowm_testing import spin_until
    from fowm_xarm import topics
    from fowm_xarm.topics import EpisodeEvent

    rewards: list[float] = []
    _collect_rewards(ros_node, rewards)
    reliable = topics.rclpy_qos(topics.QosKind.RELIABLE)
    events = ros_node.create_publisher(String, topics.EPISODE.name, topics.rclpy_qos(topics.QosKind.LATCHED))
    labels = ros_node.create_publisher(String, "/fowm/operator_label", reliable)
    actions = ros_node.create_publisher(Float32MultiArray, topics.ACTION.name, reliable)
    ros_processes.start_module("fowm_trainer.reward_node", "reward", ["-p", "source:=operator"])
    assert spin_until(ros_node, lambda: actions.get_subscription_count() > 0, 60), ros_processes.log_tails()

    def decide() -> float:
        n = len(rewards)
        actions.publish(topics.action_msg(np.zeros(4)))
        assert spin_until(ros_node, lambda: len(rewards) > n, 20)
        return rewards[-1]

    events.publish(topics.episode_event_msg(EpisodeEvent("start", 0, "push")))
    spin_until(ros_node, lambda: False, 0.5)
    assert [decide(), decide()] == [0.0, 0.0]
    labels.publish(String(data="success"))
    spin_until(ros_node, lambda: False, 0.5)
    assert decide() == 1.0
    events.publish(topics.episode_event_msg(EpisodeEvent("start", 1, "push")))
    spin_until(ros_node, lambda: False, 0.5)
    assert decide() == 0.0, "a new episode starts unlabelled"
    assert len(rewards) == 4, "exactly one reward per decision"


def test_color_source_judges_the_frame_each_decision_led_to(ros_processes, ros_node):
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float32MultiArray
    from trajectory_msgs.msg import JointTrajectory

    from fowm_testing import spin_until
    from fowm_trainer.color_reward import ColorRewardConfig, color_reward
    from fowm_xarm import topics
    from fowm_xarm.observation import image_to_rgb

    rewards: list[float] = []
    # The sim publishes its own task reward on /fowm/reward: the node's goes to a remapped topic here.
    _collect_rewards(ros_node, rewards, "/fowm/color_reward")
    frames: dict[int, np.ndarray] = {}
    joints: list[tuple[int, np.ndarray]] = []

    def stamp(msg) -> int:
        return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec

    sensor = topics.rclpy_qos(topics.QosKind.SENSOR)
    ros_node.create_subscription(
        Image,
        topics.IMAGE.name,
        lambda m: frames.setdefault(
            stamp(m), image_to_rgb(m.height, m.width, m.encoding, m.step, bytes(m.data))
        ),
        sensor,
    )
    ros_node.create_subscription(
        JointState,
        topics.JOINT_STATES.name,
        lambda m: joints.append((stamp(m), np.array(m.position[:7]))),
        sensor,
    )
    reliable = topics.rclpy_qos(topics.QosKind.RELIABLE)
    actions = ros_node.create_publisher(Float32MultiArray, topics.ACTION.name, reliable)
    trajectories = ros_node.create_publisher(JointTrajectory, topics.JOINT_TRAJECTORY.name, reliable)

    goal = "[0.4, 0.4, 0.6, 0.6]"
    ros_processes.start_module(
        "fowm_sim.sim_node",
        "sim",
        ["-p", "task:=push", "-p", "clock_mode:=lockstep", "-p", "episode_events:=false"],
    )
    ros_processes.start_module(
        "fowm_trainer.reward_node",
        "reward",
        ["-p", "source:=color", "-p", f"goal_region:={goal}", "-r", "/fowm/reward:=/fowm/color_reward"],
    )
    assert spin_until(ros_node, lambda: bool(joints) and bool(frames), 90), ros_processes.log_tails()
    assert spin_until(ros_node, lambda: actions.get_subscription_count() >= 1, 60)
    spin_until(ros_node, lambda: False, 1.0)  # the reward node's image subscription matches too

    cfg = ColorRewardConfig(goal_region=(0.4, 0.4, 0.6, 0.6))
    for _ in range(3):
        obs_stamp, q = joints[-1]
        n = len(rewards)
        actions.publish(topics.action_msg(np.zeros(4), obs_stamp_ns=obs_stamp))
        target = q.copy()
        target[0] += 0.1  # sweep the arm a little: frames differ
        trajectories.publish(topics.joint_trajectory_msg(0, target, 0.16))
        assert spin_until(ros_node, lambda n=n: len(rewards) > n, 30), ros_processes.log_tails()
        assert spin_until(ros_node, lambda o=obs_stamp: any(s > o for s in frames), 10)
        after = min(s for s in frames if s > obs_stamp)  # the lockstep frame the decision led to
        expected, found = color_reward(frames[after], cfg)
        assert found is not None, "the cube is in view"
        assert rewards[-1] == pytest.approx(expected, abs=1e-6)
        assert spin_until(ros_node, lambda o=obs_stamp: joints[-1][0] > o, 10)
    assert len(rewards) == 3
