"""The sim node over real DDS: it must behave like the gymnasium env behind the robot's topics."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fowm_testing import spin_until

pytestmark = pytest.mark.ros

SEED = 3
PERIOD_NS = 160_000_000
START_NS = 1_000_000_000  # lockstep sim time of the first observation


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


class Listener:
    """Collects what the sim node publishes, keyed by header stamp (lockstep republishes duplicates)."""

    def __init__(self, node) -> None:
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float32, String

        from fowm_xarm import topics

        self.joint_states: dict[int, JointState] = {}
        self.images: dict[int, Image] = {}
        self.rewards: list[float] = []
        self.events: list[dict] = []
        self.clock_ns = 0

        def qos(spec):
            return topics.rclpy_qos(spec.qos)

        def on_clock(m) -> None:
            self.clock_ns = m.clock.sec * 10**9 + m.clock.nanosec

        node.create_subscription(
            JointState,
            topics.JOINT_STATES.name,
            lambda m: self.joint_states.setdefault(_stamp_ns(m), m),
            qos(topics.JOINT_STATES),
        )
        node.create_subscription(
            Image, topics.IMAGE.name, lambda m: self.images.setdefault(_stamp_ns(m), m), qos(topics.IMAGE)
        )
        node.create_subscription(
            Float32, topics.REWARD.name, lambda m: self.rewards.append(m.data), qos(topics.REWARD)
        )
        node.create_subscription(
            String, topics.EPISODE.name, lambda m: self.events.append(json.loads(m.data)), qos(topics.EPISODE)
        )
        node.create_subscription(Clock, topics.CLOCK.name, on_clock, qos(topics.CLOCK))


def _command_publishers(node):
    from std_msgs.msg import Float32
    from trajectory_msgs.msg import JointTrajectory

    from fowm_xarm import topics

    traj = node.create_publisher(
        JointTrajectory, topics.JOINT_TRAJECTORY.name, topics.rclpy_qos(topics.JOINT_TRAJECTORY.qos)
    )
    grip = node.create_publisher(
        Float32, topics.GRIPPER_COMMAND.name, topics.rclpy_qos(topics.GRIPPER_COMMAND.qos)
    )
    return traj, grip


def _trajectory(names, positions):
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory()
    msg.joint_names = list(names)
    if positions is not None:
        point = JointTrajectoryPoint()
        point.positions = [float(p) for p in positions]
        point.time_from_start.nanosec = PERIOD_NS
        msg.points = [point]
    return msg


def _start_sim(ros_processes, *params: str):
    args = [
        sys.executable,
        "-m",
        "fowm_sim.sim_node",
        "--ros-args",
        "-p",
        "task:=reach",
        "-p",
        f"seed:={SEED}",
    ]
    for p in params:
        args += ["-p", p]
    return ros_processes.start(args, "sim")


def _wait_connected(node, pub, ros_processes, timeout_s: float = 30.0) -> None:
    ok = spin_until(node, lambda: pub.get_subscription_count() > 0, timeout_s)
    ros_processes.assert_running("sim")
    assert ok, "the sim node never subscribed to the command topic"


def _gym_reference(actions: list[np.ndarray]):
    from fowm_sim.config import SimConfig
    from fowm_sim.env import XArmTaskEnv

    env = XArmTaskEnv("reach", SimConfig(task="reach"))
    try:
        env.reset(seed=SEED)
        steps = [dict(q=env.joint_positions(), gripper=env.gripper_position(), frame=env.render_camera())]
        for a in actions:
            _, reward, _, _, info = env.step(a)
            steps.append(
                dict(
                    q=env.joint_positions(),
                    gripper=env.gripper_position(),
                    frame=env.render_camera(),
                    reward=reward,
                    joint_targets=info["joint_targets"],
                    gripper_target=info["gripper_target"],
                )
            )
    finally:
        env.close()
    return steps


def test_lockstep_node_reproduces_the_gym_env(ros_node, ros_processes):
    from std_msgs.msg import Float32

    from fowm_xarm.limits import JOINT_NAMES

    actions = [
        np.array(a, dtype=np.float32)
        for a in ([1, 0, 0, 1], [0, 1, -1, -1], [-0.5, -0.5, 0.5, -1], [0.3, 0.2, -1, 1])
    ]
    ref = _gym_reference(actions)
    listener = Listener(ros_node)
    traj_pub, grip_pub = _command_publishers(ros_node)
    _start_sim(ros_processes, "clock_mode:=lockstep")
    _wait_connected(ros_node, traj_pub, ros_processes)

    assert spin_until(ros_node, lambda: START_NS in listener.joint_states and START_NS in listener.images, 20)
    first = listener.joint_states[START_NS]
    assert list(first.name) == [*JOINT_NAMES, "gripper"]
    np.testing.assert_allclose(first.position[:7], ref[0]["q"], atol=1e-6)
    assert any(e["event"] == "start" and e["seed"] == SEED for e in listener.events) or spin_until(
        ros_node, lambda: any(e["event"] == "start" for e in listener.events), 5
    )

    # Joint names in a shuffled order must be accepted: the controller matches by name.
    order = [6, 0, 5, 1, 4, 2, 3]
    for k, step in enumerate(ref[1:], start=1):
        grip_pub.publish(Float32(data=float(step["gripper_target"])))
        spin_until(ros_node, lambda: False, 0.05)  # let the gripper command land before the trajectory
        traj_pub.publish(_trajectory([JOINT_NAMES[i] for i in order], step["joint_targets"][order]))
        stamp = START_NS + k * PERIOD_NS
        assert spin_until(
            ros_node, lambda s=stamp, n=k: s in listener.joint_states and len(listener.rewards) >= n, 20
        ), f"no observation for decision {k}"
        js = listener.joint_states[stamp]
        np.testing.assert_allclose(js.position[:7], step["q"], atol=1e-6)
        assert js.position[7] == pytest.approx(step["gripper"], abs=1e-6)
        assert listener.rewards[k - 1] == pytest.approx(step["reward"], abs=1e-5)
    final = START_NS + len(actions) * PERIOD_NS
    assert spin_until(ros_node, lambda: listener.clock_ns == final, 10), (
        f"/clock at {listener.clock_ns}, not {final}"
    )
    assert spin_until(ros_node, lambda: final in listener.images, 10)
    img = listener.images[final]
    assert (img.height, img.width, img.encoding) == (480, 640, "rgb8")
    frame = np.frombuffer(bytes(img.data), np.uint8).reshape(480, 640, 3)
    diff = np.abs(frame.astype(np.int16) - ref[-1]["frame"].astype(np.int16))
    assert diff.mean() < 1.0, (
        f"sim node image differs from the gym env's render (mean abs diff {diff.mean():.2f})"
    )
    assert np.abs(frame.astype(np.int16) - ref[0]["frame"].astype(np.int16)).mean() > diff.mean(), (
        "the arm moved, so the last image must differ from the first more than from the reference"
    )


def test_malformed_trajectories_are_rejected_without_motion(ros_node, ros_processes):
    from fowm_xarm.limits import JOINT_NAMES, JOINT_UPPER

    listener = Listener(ros_node)
    traj_pub, _ = _command_publishers(ros_node)
    _start_sim(ros_processes, "clock_mode:=lockstep", "publish_images:=false")
    _wait_connected(ros_node, traj_pub, ros_processes)
    assert spin_until(ros_node, lambda: START_NS in listener.joint_states, 20)
    q0 = np.array(listener.joint_states[START_NS].position[:7])

    too_far = q0.copy()
    too_far[3] = JOINT_UPPER[3] + 0.5
    with_nan = q0.copy()
    with_nan[2] = np.nan
    bad = {
        "NaN": _trajectory(JOINT_NAMES, with_nan),
        "joint names": _trajectory(["j1", "j2", "j3", "j4", "j5", "j6", "j7"], q0),
        "joint limits": _trajectory(JOINT_NAMES, too_far),
        "no points": _trajectory(JOINT_NAMES, None),
    }
    for msg in bad.values():
        traj_pub.publish(msg)
    log_has = {
        "NaN": "NaN or Inf",
        "joint names": "joint names must be",
        "joint limits": "outside joint limits",
        "no points": "no points",
    }
    assert spin_until(ros_node, lambda: all(s in ros_processes.log("sim") for s in log_has.values()), 15), (
        ros_processes.log("sim")[-2000:]
    )
    spin_until(ros_node, lambda: False, 0.5)
    assert set(listener.joint_states) == {START_NS}, "a rejected command advanced the sim"
    assert listener.rewards == []
    np.testing.assert_allclose(listener.joint_states[START_NS].position[:7], q0)
    assert "rejected joint trajectory" in ros_processes.log("sim")

    # The node is still healthy: a valid command (hold position) advances one decision.
    traj_pub.publish(_trajectory(JOINT_NAMES, q0))
    assert spin_until(ros_node, lambda: START_NS + PERIOD_NS in listener.joint_states, 15)
    np.testing.assert_allclose(listener.joint_states[START_NS + PERIOD_NS].position[:7], q0, atol=2e-3)


def test_episodes_reset_after_episode_length_and_on_service(ros_node, ros_processes):
    from std_srvs.srv import Trigger

    from fowm_xarm.limits import JOINT_NAMES

    listener = Listener(ros_node)
    traj_pub, _ = _command_publishers(ros_node)
    _start_sim(ros_processes, "clock_mode:=lockstep", "publish_images:=false", "episode_length:=2")
    _wait_connected(ros_node, traj_pub, ros_processes)
    assert spin_until(ros_node, lambda: START_NS in listener.joint_states, 20)
    q0 = np.array(listener.joint_states[START_NS].position[:7])
    for k in (1, 2):
        traj_pub.publish(_trajectory(JOINT_NAMES, q0))
        assert spin_until(ros_node, lambda n=k: len(listener.rewards) >= n, 15)
    assert spin_until(ros_node, lambda: sum(e["event"] == "start" for e in listener.events) >= 2, 10), (
        listener.events
    )
    end = next(e for e in listener.events if e["event"] == "end")
    assert (end["episode"], end["steps"], end["seed"]) == (0, 2, SEED)
    # The new episode's first observation has a stamp of its own (the reset takes one period), and
    # the start event names it, so a consumer that hears the latched event late knows its episode.
    first_obs = START_NS + 3 * PERIOD_NS
    assert listener.events[-1] == {
        "event": "start", "episode": 1, "seed": SEED + 1, "task": "reach", "first_obs_stamp_ns": first_obs
    }  # fmt: skip
    assert listener.events[0]["first_obs_stamp_ns"] == START_NS
    assert spin_until(ros_node, lambda: first_obs in listener.joint_states, 10)

    client = ros_node.create_client(Trigger, "/fowm_sim/reset")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    assert spin_until(ros_node, future.done, 10)
    assert future.result().success
    assert spin_until(ros_node, lambda: listener.events[-1].get("episode") == 2, 10), listener.events
    assert listener.events[-1]["seed"] == SEED + 2


def test_realtime_node_steps_on_its_own_and_follows_commands(ros_node, ros_processes):
    from fowm_xarm.limits import JOINT_NAMES

    listener = Listener(ros_node)
    traj_pub, _ = _command_publishers(ros_node)
    _start_sim(
        ros_processes,
        "clock_mode:=realtime",
        "publish_images:=false",
        "control_period:=0.1",
        "episode_length:=1000",
    )
    _wait_connected(ros_node, traj_pub, ros_processes)
    assert spin_until(ros_node, lambda: len(listener.rewards) >= 3, 20), (
        "realtime mode must step without commands"
    )
    latest = listener.joint_states[max(listener.joint_states)]
    target = np.array(latest.position[:7])
    target[0] += 0.15
    traj_pub.publish(_trajectory(JOINT_NAMES, target))

    def reached() -> bool:
        q = np.array(listener.joint_states[max(listener.joint_states)].position[:7])
        return abs(q[0] - target[0]) < 0.01

    assert spin_until(ros_node, reached, 20), "the arm did not follow the commanded joint1 target"
