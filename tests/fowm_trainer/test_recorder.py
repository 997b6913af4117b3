"""The recorder node over real DDS, against the lockstep sim driven by a stand-in planner in the test:
its bags open with the independent mcap reader (CRCs checked) and rosbags, and ingesting them gives
the same episodes as assembling the live topics."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from fowm_testing import spin_until

pytestmark = pytest.mark.ros

EPISODE_LENGTH = 3
EPISODES = 2
PERIOD_NS = 160_000_000


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


class StandInPlanner:
    """Acts once per new observation stamp, like the planner in lockstep: publishes an action that
    names the observation's stamp, then a trajectory holding the measured joints."""

    def __init__(self, node) -> None:
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float32, Float32MultiArray, String
        from trajectory_msgs.msg import JointTrajectory

        from fowm_xarm import topics

        self.node = node
        self.images: set[int] = set()
        self.joints: dict[int, JointState] = {}
        self.rewards: list[float] = []
        self.events: list[str] = []
        self.acted: list[tuple[int, np.ndarray]] = []
        q = topics.rclpy_qos
        node.create_subscription(
            Image, topics.IMAGE.name, lambda m: self.images.add(_stamp(m)), q(topics.IMAGE.qos)
        )
        node.create_subscription(
            JointState,
            topics.JOINT_STATES.name,
            lambda m: self.joints.setdefault(_stamp(m), m),
            q(topics.JOINT_STATES.qos),
        )
        node.create_subscription(
            Float32, topics.REWARD.name, lambda m: self.rewards.append(m.data), q(topics.REWARD.qos)
        )
        node.create_subscription(
            String, topics.EPISODE.name, lambda m: self.events.append(m.data), q(topics.EPISODE.qos)
        )
        self.action_pub = node.create_publisher(Float32MultiArray, topics.ACTION.name, q(topics.ACTION.qos))
        self.traj_pub = node.create_publisher(
            JointTrajectory, topics.JOINT_TRAJECTORY.name, q(topics.JOINT_TRAJECTORY.qos)
        )

    def act(self, k: int) -> bool:
        """Wait for an observation newer than the last one acted on, then act on it."""
        from rclpy.serialization import deserialize_message
        from std_msgs.msg import Float32MultiArray
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from fowm_xarm import topics
        from fowm_xarm.limits import JOINT_NAMES

        last = self.acted[-1][0] if self.acted else -1
        if k and k % EPISODE_LENGTH == 0:
            # The observation after an episode's last step is its final one: the sim has already reset,
            # so the next action belongs to the new episode's first observation (one period later).
            last += PERIOD_NS
        if not spin_until(self.node, lambda: any(s > last and s in self.joints for s in self.images), 20):
            return False
        stamp = min(s for s in self.images if s > last and s in self.joints)
        spin_until(self.node, lambda: False, 0.08)  # think like a planner (and pace the sim like one)
        action = np.array([0.1 * k, -0.1, 0.2, 1.0 if k % 2 else -1.0], np.float32)
        self.action_pub.publish(
            deserialize_message(topics.action_msg(action, obs_stamp_ns=stamp), Float32MultiArray)
        )
        point = JointTrajectoryPoint(positions=[float(p) for p in self.joints[stamp].position[:7]])
        point.time_from_start.nanosec = 160_000_000
        self.traj_pub.publish(JointTrajectory(joint_names=list(JOINT_NAMES), points=[point]))
        self.acted.append((stamp, action))
        return True


def test_recorder_bags_open_everywhere_and_equal_the_live_episodes(ros_node, ros_processes, tmp_path):
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader

    from fowm_trainer.assembler import EpisodeAssembler
    from fowm_trainer.ingest import BagIngestor
    from fowm_trainer.live_feed import LiveEpisodeFeed
    from fowm_xarm import topics
    from fowm_xarm.episode_bag import list_episode_bags, read_episode_bag

    out = tmp_path / "online"
    live, live_errors = [], []
    LiveEpisodeFeed(ros_node, EpisodeAssembler(), live.append, live_errors.append)
    planner = StandInPlanner(ros_node)
    ros_processes.start(
        [sys.executable, "-m", "fowm_trainer.recorder_node", "--ros-args", "-p", f"output_dir:={out}"],
        "recorder",
    )
    # The recorder must hear the first "start" (it is latched, but let it subscribe first anyway).
    assert spin_until(ros_node, lambda: ros_node.count_subscribers(topics.EPISODE.name) >= 3, 30)
    ros_processes.start(
        [
            sys.executable,
            "-m",
            "fowm_sim.sim_node",
            "--ros-args",
            "-p",
            "clock_mode:=lockstep",
            "-p",
            f"episode_length:={EPISODE_LENGTH}",
            "-p",
            "seed:=4",
        ],
        "sim",
    )
    # Act once the recorder has the episode (it gets the latched "start" on matching the sim, and the
    # first observation from the lockstep sim's republishing): a recorder runs before episodes start.
    assert spin_until(ros_node, lambda: "recording episode 0" in ros_processes.log("recorder"), 60)
    spin_until(ros_node, lambda: False, 0.5)
    for k in range(EPISODES * EPISODE_LENGTH):
        assert planner.act(k), f"no observation to act on at decision {k}"
        ros_processes.assert_running("sim")
    # The recorder closes a bag `tail_s` after its "end"; the live feed returns it after its lag.
    assert spin_until(
        ros_node, lambda: len(live) >= EPISODES and len(list_episode_bags(out)) >= EPISODES, 30
    ), (
        f"live episodes {len(live)}, bags {list_episode_bags(out) if out.exists() else []}, "
        f"errors {live_errors}"
    )
    time.sleep(0.2)
    ros_processes.stop("recorder")
    assert "its first action came before" not in ros_processes.log("recorder")
    bags = list_episode_bags(out)
    assert len(bags) == EPISODES and not (out / ".partial").exists()
    for bag in bags:
        counts: dict[str, int] = {}
        with open(bag / f"{bag.name}.mcap", "rb") as f:
            for schema, channel, _ in make_reader(f, validate_crcs=True).iter_messages():
                assert schema.name == topics.TOPICS_BY_NAME[channel.topic].msgtype
                counts[channel.topic] = counts.get(channel.topic, 0) + 1
        # A bag spans its episode plus a preroll and a tail, which may overlap the neighbours.
        assert counts[topics.ACTION.name] >= EPISODE_LENGTH and counts[topics.REWARD.name] >= EPISODE_LENGTH
        assert counts[topics.EPISODE.name] >= 2 and counts[topics.IMAGE.name] >= EPISODE_LENGTH + 1
        assert read_episode_bag(bag, require_checksum=True).verified  # CRCs and content digest
        with Reader(bag) as reader:  # rosbags (checks chunk CRCs too)
            assert sum(1 for _ in reader.messages()) == sum(counts.values())
    report = BagIngestor().scan(out)
    assert report.errors == {} and len(report.episodes) == EPISODES
    actions = np.stack([a for _, a in planner.acted])
    for i, (from_bag, from_live) in enumerate(zip(report.episodes, live[:EPISODES], strict=True)):
        assert len(from_bag) == EPISODE_LENGTH and from_bag.info["fallback_steps"] == 0
        np.testing.assert_array_equal(from_bag.action, actions[i * EPISODE_LENGTH : (i + 1) * EPISODE_LENGTH])
        np.testing.assert_array_equal(
            from_bag.reward,
            np.asarray(planner.rewards[i * EPISODE_LENGTH : (i + 1) * EPISODE_LENGTH], np.float32),
        )
        for key in from_bag.obs:
            np.testing.assert_array_equal(from_bag.obs[key], from_live.obs[key], err_msg=key)
        np.testing.assert_array_equal(from_bag.action, from_live.action)
        np.testing.assert_array_equal(from_bag.reward, from_live.reward)
        assert from_bag.info["obs_stamps_ns"] == from_live.info["obs_stamps_ns"]


def test_recorder_reports_an_episode_whose_first_action_precedes_any_observation(
    ros_node, ros_processes, tmp_path
):
    """A bag can only be ingested if it holds the observation its first action was computed from; when
    the first action comes before any camera image or joint state (camera down, recorder started
    late), the operator is told at once instead of learning it from ingestion after the episode."""
    from std_msgs.msg import Float32MultiArray, String

    from fowm_xarm import topics

    q = topics.rclpy_qos
    events = ros_node.create_publisher(String, topics.EPISODE.name, q(topics.EPISODE.qos))
    actions = ros_node.create_publisher(Float32MultiArray, topics.ACTION.name, q(topics.ACTION.qos))
    ros_processes.start(
        [sys.executable, "-m", "fowm_trainer.recorder_node", "--ros-args", "-p", f"output_dir:={tmp_path}"],
        "recorder",
    )
    assert spin_until(ros_node, lambda: actions.get_subscription_count() >= 1, 30)
    events.publish(String(data=topics.EpisodeEvent("start", 7, "reach", 1).to_json()))
    assert spin_until(ros_node, lambda: "recording episode 7" in ros_processes.log("recorder"), 30)
    actions.publish(Float32MultiArray(data=[0.0, 0.0, 0.0, 1.0]))
    assert spin_until(ros_node, lambda: "its first action came before" in ros_processes.log("recorder"), 30)
    log = ros_processes.log("recorder")
    assert topics.IMAGE.name in log.split("its first action came before")[1].splitlines()[0]
    ros_processes.assert_running("recorder")
