"""Replay episode bags on their topics with their recorded timing (`ros2 bag play` for pip installs).

    python -m fowm_trainer.bag_play data/online/episode_... [more bags] [--rate 1.0]

Publishes the recorded CDR bytes unchanged (raw), each topic with its contract QoS, at the recorded
log-time offsets divided by `--rate`. With it, a trainer with `live_topics: true` learns from bags
through the live path, and the two ingestion paths can be compared on the same stream.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException

from fowm_trainer.recorder_node import message_class
from fowm_xarm import topics
from fowm_xarm.episode_bag import iter_raw_messages, load_bag_info

DISCOVERY_S = 1.0  # after the subscriber counts: let every matched reader settle
EPISODE_TOPICS = tuple(
    t.name for t in (topics.IMAGE, topics.JOINT_STATES, topics.ACTION, topics.REWARD, topics.EPISODE)
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fowm-bag-play", description=__doc__.split("\n\n")[0])
    parser.add_argument("bags", nargs="+", type=Path, help="episode bag directories, played in order")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument(
        "--wait-subscribers",
        type=int,
        default=0,
        help="before playing, wait (up to 30 s) for this many subscribers on each episode topic "
        "(image, joint states, action, reward, episode events)",
    )
    args, ros_args = parser.parse_known_args(argv)
    if not args.rate > 0:
        parser.error("--rate must be > 0")
    rclpy.init(args=ros_args)
    node = rclpy.create_node("fowm_bag_play")
    publishers = {}
    try:
        for bag in args.bags:
            files = [bag / f for f in load_bag_info(bag)["relative_file_paths"]]
            messages = list(iter_raw_messages(bag, files))
            for topic, _, _, _ in messages:
                if topic not in publishers:
                    spec = topics.TOPICS_BY_NAME[topic]
                    publishers[topic] = node.create_publisher(
                        message_class(spec), topic, topics.rclpy_qos(spec.qos)
                    )
            deadline = time.monotonic() + 30
            needed = [publishers[t] for t in EPISODE_TOPICS if t in publishers]
            while time.monotonic() < deadline and any(
                p.get_subscription_count() < args.wait_subscribers for p in needed
            ):
                rclpy.spin_once(node, timeout_sec=0.05)
            time.sleep(DISCOVERY_S)
            start_log, start_wall = messages[0][2], time.monotonic()
            for topic, _, log_ns, data in messages:
                delay = (log_ns - start_log) / 1e9 / args.rate - (time.monotonic() - start_wall)
                if delay > 0:
                    time.sleep(delay)
                publishers[topic].publish(bytes(data))
        time.sleep(0.5)  # let reliable messages drain before the publishers go
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
