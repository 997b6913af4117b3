"""The episode manager over DDS against the lockstep sim: home, wait for the operator, start, end at
the episode length, end on the operator's label."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from fowm_xarm.kinematics import HOME_Q
from fowm_xarm.topics import EpisodeEvent

pytestmark = pytest.mark.ros

MAX_STEP = 0.2


def test_home_wait_start_end_and_label(ros_processes, ros_node):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float32MultiArray, String
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory

    from fowm_testing import spin_until
    from fowm_xarm import topics

    events: list[EpisodeEvent] = []
    labels: list[str] = []
    joints: list[tuple[int, np.ndarray]] = []
    targets: list[np.ndarray] = []
    qos = topics.rclpy_qos
    ros_node.create_subscription(
        String,
        topics.EPISODE.name,
        lambda m: events.append(EpisodeEvent.from_json(m.data)),
        qos(topics.QosKind.LATCHED),
    )
    ros_node.create_subscription(
        String, "/fowm/operator_label", lambda m: labels.append(m.data), qos(topics.QosKind.RELIABLE)
    )
    ros_node.create_subscription(
        JointState,
        topics.JOINT_STATES.name,
        lambda m: joints.append(
            (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec, np.array(m.position[:7]))
        ),
        qos(topics.QosKind.SENSOR),
    )
    ros_node.create_subscription(
        JointTrajectory,
        topics.JOINT_TRAJECTORY.name,
        lambda m: targets.append(np.array(m.points[-1].positions)),
        qos(topics.QosKind.RELIABLE),
    )
    traj_pub = ros_node.create_publisher(
        JointTrajectory, topics.JOINT_TRAJECTORY.name, qos(topics.QosKind.RELIABLE)
    )
    action_pub = ros_node.create_publisher(
        Float32MultiArray, topics.ACTION.name, qos(topics.QosKind.RELIABLE)
    )

    # The sim alone first: move the arm well away from home (joint1 +0.6 rad in lockstep steps).
    ros_processes.start_module(
        "fowm_sim.sim_node",
        "sim",
        ["-p", "clock_mode:=lockstep", "-p", "publish_images:=false", "-p", "episode_events:=false"],
    )
    assert spin_until(ros_node, lambda: bool(joints), 60), ros_processes.log_tails()
    assert spin_until(ros_node, lambda: traj_pub.get_subscription_count() > 0, 30)
    away = HOME_Q.copy()
    away[0] += 0.6
    for k in range(1, 5):
        n = len(joints)
        traj_pub.publish(topics.joint_trajectory_msg(0, HOME_Q + (away - HOME_Q) * k / 4, 0.16))
        assert spin_until(ros_node, lambda n=n: len(joints) > n, 10)
    spin_until(ros_node, lambda: False, 1.0)
    assert abs(joints[-1][1][0] - HOME_Q[0]) > 0.4, "the arm did not move away from home"
    targets.clear()
    n_away = len(joints)

    manager = [
        "episode_length:=3",
        f"max_joint_step_rad:={MAX_STEP}",
        "scene_reset_service:=/fowm_sim/reset",
        "reset_timeout_s:=0.0",
        "seed:=7",
    ]
    ros_processes.start(
        [sys.executable, "-m", "fowm_xarm.episode_manager_node", "--ros-args",
         *(a for p in manager for a in ("-p", p))],
        "manager",
    )  # fmt: skip

    # 1. Home: stepwise commands, none larger than the safety layer's step, until the arm is home.
    def at_home() -> bool:
        return bool(joints) and np.max(np.abs(joints[-1][1] - HOME_Q)) < 0.03

    assert spin_until(ros_node, at_home, 60), ros_processes.log_tails()
    # The arm's own path (the sim's joint states, which this node has long been matched to; the
    # manager's new trajectory publisher may still be in discovery with this node while it homes):
    # from 0.6 rad away to home in several steps, none larger than the safety layer's.
    path = [q[0] - HOME_Q[0] for _, q in joints[n_away:]]
    homing = path[: next(i for i, d in enumerate(path) if abs(d) < 0.03) + 1]
    moves = [d for d in np.diff(homing) if abs(d) > 1e-4]
    assert len(moves) >= 3, f"homing 0.6 rad in steps of {MAX_STEP} takes >= 3 steps, saw {homing}"
    assert max(abs(d) for d in moves) <= MAX_STEP + 0.02, homing  # + tracking overshoot
    assert all(np.max(np.abs(t - HOME_Q)) < 0.65 for t in targets)  # the commands this node did see
    if len(targets) >= 2:
        assert np.max(np.abs(np.diff([t[0] for t in targets]))) <= MAX_STEP + 1e-6

    # 2. Wait: with reset_timeout_s 0 nothing starts until the operator says so.
    spin_until(ros_node, lambda: False, 3.0)
    assert events == [], f"an episode started without the operator: {events}"

    start = ros_node.create_client(Trigger, "/fowm_episode_manager/start")
    success = ros_node.create_client(Trigger, "/fowm_episode_manager/success")
    assert spin_until(ros_node, lambda: start.service_is_ready() and success.service_is_ready(), 30)

    def call(client) -> Trigger.Response:
        future = client.call_async(Trigger.Request())
        assert spin_until(ros_node, future.done, 30)
        return future.result()

    # 3. Start, 4. end at the episode length (3 decisions; nothing publishes rewards here).
    assert call(start).success
    assert spin_until(ros_node, lambda: len(events) == 1, 30)
    assert (events[0].event, events[0].episode, events[0].seed, events[0].task) == ("start", 0, 7, "reach")
    assert not call(start).success  # an episode is running
    for _ in range(3):
        action_pub.publish(topics.action_msg(np.zeros(4), obs_stamp_ns=joints[-1][0]))
        spin_until(ros_node, lambda: False, 0.1)
    assert spin_until(ros_node, lambda: len(events) == 2, 30)
    end = events[1]
    assert (end.event, end.episode, end.steps, end.success) == ("end", 0, 3, False)

    # Homing again, then 5. the operator's label ends the next episode after one more decision.
    assert call(start).success  # starts once the arm is home and the scene reset
    assert spin_until(ros_node, lambda: len(events) == 3, 60), ros_processes.log_tails()
    assert (events[2].event, events[2].episode, events[2].seed) == ("start", 1, 8)
    action_pub.publish(topics.action_msg(np.zeros(4)))
    spin_until(ros_node, lambda: False, 0.3)
    assert call(success).success
    assert spin_until(ros_node, lambda: labels == ["success"], 10)
    spin_until(ros_node, lambda: False, 1.0)
    assert len(events) == 3, "the label ends the episode only after the decision that follows it"
    t0 = time.monotonic()
    action_pub.publish(topics.action_msg(np.zeros(4)))
    assert spin_until(ros_node, lambda: len(events) == 4, 30)
    assert time.monotonic() - t0 < 10
    end = events[3]
    assert (end.event, end.episode, end.steps, end.success) == ("end", 1, 2, True)
