"""fowm_teleop over DDS: keys drive the lockstep sim through the shared action path, the operator's
keys start and label an episode through the episode manager, and the recorded bag holds the
operator's label and actions paired with the joint states they acted on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fowm_xarm.teleop_node import spacemouse_action

# Topics the recorder keeps, as a bag recorder of the contract would.
RECORDED = (
    "/camera/color/image_raw",
    "/joint_states",
    "/xarm7_traj_controller/joint_trajectory",
    "/xarm_gripper/command",
    "/fowm/action",
    "/fowm/reward",
    "/fowm/episode",
)


def test_spacemouse_deflection_maps_to_actions_with_a_deadzone():
    a = spacemouse_action(np.array([0.05, -1.0, 0.55]), gripper_open=False, deadzone=0.1)
    np.testing.assert_allclose(a, [0.0, -1.0, 0.5, -1.0], atol=1e-6)
    assert spacemouse_action(np.array([2.0, 0.0, 0.0]), True, 0.0)[0] == 1.0


class InTestRecorder:
    """One bag per episode from the /fowm/episode events (raw CDR, as a recorder node does)."""

    def __init__(self, node, dataset: Path) -> None:
        from fowm_sim.sim_node import ros_message_class
        from fowm_xarm import topics
        from fowm_xarm.episode_bag import EpisodeBagWriter

        self.dataset, self.writer, self.closed = dataset, None, []
        # The observation the first decision acts on arrives before the start event: keep the latest
        # of each observation topic and open every bag with them.
        self.latest: dict[str, tuple[int, bytes]] = {}
        self._writer_cls, self._topics = EpisodeBagWriter, topics
        for name in RECORDED:
            spec = topics.TOPICS_BY_NAME[name]
            qos = topics.rclpy_qos(spec.qos)
            node.create_subscription(
                ros_message_class(spec), name, lambda data, n=name: self._on(n, data, node), qos, raw=True
            )

    def _on(self, topic: str, data: bytes, node) -> None:
        stamp = node.get_clock().now().nanoseconds
        if topic == "/fowm/episode":
            event = self._topics.EpisodeEvent.from_json(
                self._topics.deserialize(data, "std_msgs/msg/String").data
            )
            if event.event == "start":
                self.writer = self._writer_cls(
                    self.dataset / f"episode_{event.episode:06d}",
                    dict(task=event.task, episode=event.episode),
                )
                for name, (t, latest) in self.latest.items():
                    self.writer.write(name, t, latest)
            if self.writer is not None:
                self.writer.write(topic, stamp, data)
            if event.event == "end" and self.writer is not None:
                self.writer.update_metadata(success=event.success, steps=event.steps)
                self.closed.append(self.writer.close())
                self.writer = None
        else:
            if topic in ("/camera/color/image_raw", "/joint_states"):
                self.latest[topic] = (stamp, data)
            if self.writer is not None:
                self.writer.write(topic, stamp, data)


@pytest.mark.ros
def test_teleop_in_the_sim_records_a_labelled_episode(ros_processes, ros_node, tmp_path):
    from std_msgs.msg import String

    from fowm_testing import spin_until
    from fowm_xarm import topics
    from fowm_xarm.command import ActionMapper
    from fowm_xarm.episode_bag import read_episode_bag
    from fowm_xarm.kinematics import XArm7Kinematics

    recorder = InTestRecorder(ros_node, tmp_path / "teleop")

    def node_args(params: list[str]) -> list[str]:
        return [a for p in params for a in ("-p", p)]

    ros_processes.start_module(
        "fowm_sim.sim_node", "sim", node_args(["task:=push", "clock_mode:=lockstep", "episode_events:=false"])
    )
    ros_processes.start_module(
        "fowm_xarm.episode_manager_node",
        "manager",
        node_args(["task:=push", "episode_length:=200", "scene_reset_service:=/fowm_sim/reset"]),
    )
    teleop = ros_processes.start(
        [sys.executable, "-m", "fowm_xarm.teleop_node", "--ros-args", "-p", "read_stdin:=false"], "teleop"
    )
    keys = ros_node.create_publisher(String, "/fowm_teleop/keys", topics.rclpy_qos(topics.QosKind.RELIABLE))
    assert spin_until(ros_node, lambda: keys.get_subscription_count() > 0, 60), ros_processes.log_tails()
    assert spin_until(ros_node, lambda: "phase: waiting" in ros_processes.log("manager"), 60), (
        ros_processes.log_tails()
    )
    spin_until(ros_node, lambda: False, 1.0)  # the manager calls the sim's scene reset

    keys.publish(String(data="g"))  # operator: the scene is ready
    assert spin_until(ros_node, lambda: recorder.writer is not None, 30), ros_processes.log_tails()
    for burst in ("ww", "w", "ss", " ", "rr", "aa", "d"):  # motion keys, a gripper toggle
        keys.publish(String(data=burst))
        spin_until(ros_node, lambda: False, 0.4)
    keys.publish(String(data="y"))  # operator: success
    assert spin_until(ros_node, lambda: len(recorder.closed) == 1, 30), ros_processes.log_tails()
    assert teleop.poll() is None

    bag = read_episode_bag(recorder.closed[0])
    assert bag.metadata["success"] is True
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

    episode = BagIngestor().ingest_bag(recorder.closed[0]).episodes
    assert len(episode) == 1 and len(episode[0].action) == n
    assert episode[0].info["success"] is True
    np.testing.assert_array_equal(episode[0].action, actions)
    assert episode[0].obs["rgb"].shape == (n + 1, 3, 84, 84)

    # Every action names a recorded joint state, and its command is what the shared action path
    # makes of that state: the safety layer's limits hold.
    js_msgs = bag.messages["/joint_states"]
    by_stamp = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in js_msgs}
    mapper = ActionMapper(XArm7Kinematics())
    for msg, target in zip(bag.messages["/fowm/action"], bag.arrays["joint_target"]):
        stamp = topics.action_obs_stamp(msg)
        assert stamp in by_stamp, "the action's observation stamp is not a recorded joint state"
        q = np.asarray(by_stamp[stamp].position[:7])
        expected = mapper.command(np.asarray(msg.data), q, float(by_stamp[stamp].position[7]))
        np.testing.assert_allclose(target, expected.joint_targets, atol=1e-9)
        assert mapper.satisfied(expected, q)
