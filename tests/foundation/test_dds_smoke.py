"""Two real node processes exchange a JointState over DDS, isolated by the session's domain."""

from __future__ import annotations

import sys
import textwrap

import pytest

pytestmark = pytest.mark.ros

TALKER = textwrap.dedent(
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import JointState

    rclpy.init()
    node = rclpy.create_node("smoke_talker")
    pub = node.create_publisher(JointState, "/smoke/joint_states", 10)

    def tick():
        msg = JointState()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.name = [f"joint{i}" for i in range(1, 8)]
        msg.position = [0.1 * i for i in range(1, 8)]
        pub.publish(msg)

    node.create_timer(0.05, tick)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    """
)

LISTENER = textwrap.dedent(
    """
    import sys
    import rclpy
    from sensor_msgs.msg import JointState

    rclpy.init()
    node = rclpy.create_node("smoke_listener")
    got = []
    node.create_subscription(JointState, "/smoke/joint_states", got.append, 10)
    while not got:
        rclpy.spin_once(node, timeout_sec=0.1)
    msg = got[0]
    print("RECEIVED", ",".join(msg.name), ",".join(f"{p:.1f}" for p in msg.position), flush=True)
    sys.exit(0)
    """
)


def test_two_processes_exchange_joint_state(ros_processes):
    ros_processes.start([sys.executable, "-c", TALKER], "talker")
    listener = ros_processes.start([sys.executable, "-c", LISTENER], "listener")
    assert listener.wait(timeout=60) == 0, ros_processes.log("listener")
    line = next(ln for ln in ros_processes.log("listener").splitlines() if ln.startswith("RECEIVED"))
    names, positions = line.split()[1:]
    assert names.split(",") == [f"joint{i}" for i in range(1, 8)]
    assert positions.split(",") == ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    ros_processes.assert_running("talker")


def test_in_process_node_sees_a_node_process(ros_processes, ros_node):
    from sensor_msgs.msg import JointState

    from fowm_testing import wait_for_messages

    ros_processes.start([sys.executable, "-c", TALKER], "talker")
    first = wait_for_messages(ros_node, {"/smoke/joint_states": JointState}, timeout_s=60)
    assert list(first["/smoke/joint_states"].position) == pytest.approx([0.1 * i for i in range(1, 8)])


def test_session_is_isolated():
    import os

    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 101
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.path.isdir(os.environ["ROS_LOG_DIR"])
