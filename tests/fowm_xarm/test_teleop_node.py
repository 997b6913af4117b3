"""fowm_teleop over DDS, in the teleop_sim graph started by the pip-path runner: keys drive the
lockstep sim through the shared action path, the operator's keys start and label an episode through
the episode manager, the recorder node writes its bag, and ingestion accepts it with the operator's
label and every action paired with the joint state it acted on."""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import pytest

from fowm_xarm.teleop_node import spacemouse_action


def test_spacemouse_deflection_maps_to_actions_with_a_deadzone():
    a = spacemouse_action(np.array([0.05, -1.0, 0.55]), gripper_open=False, deadzone=0.1)
    np.testing.assert_allclose(a, [0.0, -1.0, 0.5, -1.0], atol=1e-6)
    assert spacemouse_action(np.array([2.0, 0.0, 0.0]), True, 0.0)[0] == 1.0


@pytest.mark.ros
def test_teleop_in_the_sim_records_a_labelled_episode(ros_processes, ros_node, tmp_path):
    from std_msgs.msg import String

    from fowm_testing import spin_until
    from fowm_xarm import topics
    from fowm_xarm.command import ActionMapper
    from fowm_xarm.episode_bag import read_episode_bag
    from fowm_xarm.kinematics import XArm7Kinematics

    # The teleop_sim graph through the pip-path runner: sim (episodes owned by the manager), teleop,
    # episode manager, recorder.
    bags = tmp_path / "teleop"
    runner = ros_processes.start(
        [sys.executable, "-m", "fowm_bringup.run", "teleop_sim", "task:=push", f"bag_dir:={bags}",
         "episode_length:=200"],
        "teleop_sim",
    )  # fmt: skip
    keys = ros_node.create_publisher(String, "/fowm_teleop/keys", topics.rclpy_qos(topics.QosKind.RELIABLE))
    assert spin_until(ros_node, lambda: keys.get_subscription_count() > 0, 90), ros_processes.log_tails()
    log = lambda: ros_processes.log("teleop_sim")  # noqa: E731
    assert spin_until(ros_node, lambda: "scene reset:" in log(), 90), log()[-3000:]
    assert spin_until(ros_node, lambda: "fowm_recorder" in ros_node.get_node_names(), 60), log()[-3000:]

    def recorder_subscribed() -> bool:
        return all(
            any(i.node_name == "fowm_recorder" for i in ros_node.get_subscriptions_info_by_topic(t.name))
            for t in (topics.IMAGE, topics.JOINT_STATES)
        )

    # An operator presses `g` seconds after the graph is up; on a loaded CPU the recorder's node name
    # shows before its sensor subscriptions are matched, and a bag opened then would hold no
    # observation before the first action. Wait for them, then for its preroll to fill.
    assert spin_until(ros_node, recorder_subscribed, 60), log()[-3000:]
    spin_until(ros_node, lambda: False, 1.5)

    keys.publish(String(data="g"))  # operator: the scene is ready
    assert spin_until(ros_node, lambda: '"event": "start"' in log(), 30), log()[-3000:]
    for burst in ("ww", "w", "ss", " ", "rr", "aa", "d"):  # motion keys, a gripper toggle
        keys.publish(String(data=burst))
        spin_until(ros_node, lambda: False, 0.4)
    keys.publish(String(data="y"))  # operator: success
    assert spin_until(ros_node, lambda: bags.is_dir() and any(bags.glob("episode_*")), 60), log()[-3000:]
    assert runner.poll() is None
    finished = sorted(bags.glob("episode_*"))
    assert len(finished) == 1

    bag = read_episode_bag(finished[0])
    assert bag.events[0].event == "start" and bag.events[-1].event == "end" and bag.events[-1].success is True
    actions = bag.arrays["action"]  # (N, 4)
    n = len(actions)
    assert n >= 8, f"expected a decision per ~0.16 s over ~3 s of keys, got {n}"
    assert bag.events[-1].steps == n
    assert np.any(actions[:, 0] > 0.5) and np.any(actions[:, 0] < -0.5), "w and s keys became +-x actions"
    assert np.any(actions[:, 2] > 0.5), "r became +z"
    assert set(np.unique(actions[:, 3])) == {-1.0, 1.0}, "space toggled the gripper"

    # Ingestion (fowm_trainer) accepts the bag: one episode, every decision, the operator's label.
    from fowm_trainer.ingest import BagIngestor

    episode = BagIngestor().ingest_bag(finished[0]).episodes
    assert len(episode) == 1 and len(episode[0].action) == n
    assert episode[0].info["success"] is True
    np.testing.assert_array_equal(episode[0].action, actions)
    assert episode[0].obs["rgb"].shape == (n + 1, 3, 84, 84)

    # Every action names a recorded joint state, and its command is what the shared action path
    # makes of that state: the safety layer's limits hold.
    js_msgs = bag.messages["/joint_states"]
    by_stamp = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in js_msgs}
    mapper = ActionMapper(XArm7Kinematics())
    # (The bag also holds the manager's homing commands around the episode: its pre-roll and tail.)
    targets = bag.arrays["joint_target"]  # (M, 7), M >= n
    for msg in bag.messages["/fowm/action"]:
        stamp = topics.action_obs_stamp(msg)
        assert stamp in by_stamp, "the action's observation stamp is not a recorded joint state"
        q = np.asarray(by_stamp[stamp].position[:7])
        expected = mapper.command(np.asarray(msg.data), q, float(by_stamp[stamp].position[7]))
        assert np.any(np.all(np.abs(targets - expected.joint_targets) < 1e-9, axis=1)), "command not recorded"
        assert mapper.satisfied(expected, q)


@pytest.mark.ros
def test_keys_typed_in_the_runners_terminal_reach_teleop(tmp_path):
    """The runner hands its terminal to the teleop node (cbreak mode): g starts, y labels, q quits,
    and quitting teleop stops the graph cleanly."""
    import os
    import pty
    import select
    import time

    bags = tmp_path / "bags"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the runner on a pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-m", "fowm_bringup.run", "teleop_sim", f"bag_dir:={bags}"])
    out = b""

    def read_until(text: bytes, timeout_s: float) -> bool:
        nonlocal out
        deadline = time.monotonic() + timeout_s
        while text not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
        return text in out

    try:
        assert read_until(b"scene reset:", 120), out.decode(errors="replace")[-3000:]
        os.write(fd, b"g")
        assert read_until(b'"event": "start"', 30), out.decode(errors="replace")[-3000:]
        os.write(fd, b"wwrr")
        time.sleep(1.0)
        os.write(fd, b"y")
        assert read_until(b'"success": true', 30), out.decode(errors="replace")[-3000:]
        assert read_until(b"saved episode 0", 30)
        os.write(fd, b"q")
        assert read_until(b"run: required node fowm_teleop exited with 0", 30)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert len(list(bags.glob("episode_*"))) == 1
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
