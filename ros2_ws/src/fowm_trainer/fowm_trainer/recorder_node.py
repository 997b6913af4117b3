"""The recorder node: the contract topics -> one episode bag (EpisodeBagWriter) per episode.

Subscribes to every topic with raw serialized messages (as `ros2 bag record` does: rclpy's own
serialize_message pads JointState in a way other readers reject) and writes them as received, with
the receive time (the node's clock, so sim time under use_sim_time) as the log time.

Log times are the middleware's receive times (system clock), so the bag holds the true arrival
order even when the single-threaded executor runs queued callbacks in another order.

Episodes are delimited by the episode events: "start" opens a bag (the last `preroll_s` of messages
go in first, so the observation the first action was computed from is in the bag), "end" is written
and the bag keeps recording `tail_s` longer for a late frame or reward (overlapping the next
episode's bag if it starts meanwhile: the assembler reads each episode between its own events), then
it is closed and moved into `output_dir` in one rename. A bag being written lives under
`output_dir/.partial/`, and an episode that never ends (a new "start", shutdown) is dropped, so
readers never see a partial bag. An episode whose first action comes before any camera image or
joint state reached the recorder is reported as an error at once: ingestion would refuse its bag.
Bags are named `episode_<start time ns>_<episode index>` so that name order is time order.
"""

from __future__ import annotations

import importlib
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.node import Node

from fowm_xarm import topics
from fowm_xarm.episode_bag import DEFAULT_COMPRESSION, EpisodeBagError, EpisodeBagWriter, check_compression
from fowm_xarm.ros_node import declare_config, param, spin_node
from fowm_xarm.topics import EpisodeEvent, QosKind, TopicSpec

NODE_NAME = "fowm_recorder"
RECORDED = (
    topics.IMAGE,
    topics.CAMERA_INFO,
    topics.JOINT_STATES,
    topics.JOINT_TRAJECTORY,
    topics.GRIPPER_COMMAND,
    topics.ACTION,
    topics.REWARD,
    topics.EPISODE,
)


@dataclass
class RecorderConfig:
    """Parameters of the recorder node; each field is declared as a ROS parameter with its doc."""

    output_dir: str = param("data/online", "dataset directory the finished episode bags are moved into")
    topics: list[str] = field(
        default_factory=lambda: [t.name for t in RECORDED],
        metadata={"doc": "contract topics to record (names as in fowm_xarm.topics; remap to rename)"},
    )
    preroll_s: float = param(1.0, "seconds of sensor messages before 'start' written into the bag")
    tail_s: float = param(0.5, "seconds recorded after 'end' (late frames and rewards) before closing")
    max_episode_s: float = param(600.0, "an episode without 'end' after this long is dropped (disk bound)")
    bag_compression: str = param(
        DEFAULT_COMPRESSION,
        "MCAP chunk compression of the bags: zstd (sim bags 24-31x smaller, written as fast), lz4 or "
        "none (camera noise barely compresses: the real-robot configs set none)",
    )

    def __post_init__(self) -> None:
        unknown = sorted(set(self.topics) - set(topics.TOPICS_BY_NAME))
        if unknown:
            raise ValueError(f"topics {unknown} are not contract topics ({sorted(topics.TOPICS_BY_NAME)})")
        if topics.EPISODE.name not in self.topics:
            raise ValueError(f"topics must include {topics.EPISODE.name}: its events delimit the bags")
        if self.preroll_s < 0 or self.tail_s < 0 or not self.max_episode_s > 0:
            raise ValueError("preroll_s and tail_s must be >= 0 and max_episode_s > 0")
        check_compression(self.bag_compression, "bag_compression")


def subscription_qos(spec: TopicSpec) -> Any:
    """The contract QoS with a deeper history on our side (compatible with every publisher): latched
    topics keep 10 samples ("end" and the next "start" come back to back and a depth-1 history would
    let "start" overwrite "end" before the callback runs), sensor topics 20 (a recorder that falls
    behind for a moment on a loaded machine should not drop the frames the actions were planned on)."""
    qos = topics.rclpy_qos(spec.qos)
    if spec.qos is QosKind.LATCHED:
        qos.depth = 10
    elif spec.qos is QosKind.SENSOR:
        qos.depth = 20
    return qos


def message_class(spec: TopicSpec) -> type:
    """The rclpy message class of a topic ("sensor_msgs/msg/Image" -> sensor_msgs.msg.Image)."""
    package, _, name = spec.msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def received_ns(info: Any) -> int:
    """The middleware's receive time of a message (system clock), or now when it has none. Receive
    times give the true arrival order across topics, which the executor's callback order does not."""
    stamp = info.get("received_timestamp", 0) if isinstance(info, dict) else 0
    return int(stamp) or time.time_ns()


@dataclass
class _Bag:
    writer: EpisodeBagWriter
    event: EpisodeEvent
    opened_ns: int
    ended_ns: int | None = None
    next_start_written: bool = False  # a bag in its tail gets the next "start" (only) as its boundary
    tail_over: bool = False  # its tail has passed; closed on the next timer tick (see _on_timer)
    observed: set[str] = field(default_factory=set)  # observation topics written so far
    first_action_checked: bool = False


class RecorderNode(Node):
    """Records one bag per episode; see the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__(NODE_NAME, **overrides)
        self.config = declare_config(self, RecorderConfig)
        cfg = self.config
        self.output = Path(cfg.output_dir)
        self.output.mkdir(parents=True, exist_ok=True)
        self._preroll: deque[tuple[str, int, bytes]] = deque()
        # Bags being written, oldest first: the current episode, and ended ones still in their tail
        # (every message goes to each of them; the assembler reads each episode's span by its events).
        self._bags: list[_Bag] = []
        self.saved: list[Path] = []
        # What an action is computed from: a bag without them before its first action is refused at
        # ingestion, so the operator hears about it now, not after the episode.
        self._observation_topics = {t.name for t in (topics.IMAGE, topics.JOINT_STATES)} & set(cfg.topics)
        for name in cfg.topics:
            spec = topics.TOPICS_BY_NAME[name]
            self.create_subscription(
                message_class(spec),
                name,
                lambda data, info, topic=name: self._on_message(topic, data, received_ns(info)),
                subscription_qos(spec),
                raw=True,
            )
        self.create_timer(0.1, self._on_timer)
        self.get_logger().info(f"recording {len(cfg.topics)} topics into {self.output}, one bag per episode")

    def _on_message(self, topic: str, data: bytes, now: int) -> None:
        if topic == topics.EPISODE.name:
            # Events go to their own episode's bag only; a "start" also to the bags in their tail, as
            # the boundary their final observation must precede (their other events never: a short
            # episode inside another's tail must not be read from both bags).
            for bag in self._on_event(now, data):
                bag.writer.write(topic, now, data)
            return
        for bag in self._bags:
            bag.writer.write(topic, now, data)
            if topic in self._observation_topics:
                bag.observed.add(topic)
            elif topic == topics.ACTION.name and not bag.first_action_checked and bag.ended_ns is None:
                bag.first_action_checked = True
                self._check_first_action(bag)
        self._preroll.append((topic, now, data))
        horizon = time.time_ns() - round(self.config.preroll_s * 1e9)
        while self._preroll and self._preroll[0][1] < horizon:
            self._preroll.popleft()

    def _on_event(self, now: int, data: bytes) -> list[_Bag]:
        """Handle an episode event; returns the bags it is to be written to."""
        try:
            event = EpisodeEvent.from_json(topics.deserialize(data, topics.EPISODE.msgtype).data)
        except ValueError as exc:
            self.get_logger().error(f"ignored a malformed episode event: {exc}")
            return []
        current = self._bags[-1] if self._bags and self._bags[-1].ended_ns is None else None
        if event.event == "start":
            if current is not None:
                self._drop(current, f"episode {current.event.episode} got no 'end' before the next 'start'")
            tails = [b for b in self._bags if b.ended_ns is not None and not b.next_start_written]
            for bag in tails:
                bag.next_start_written = True
            new = self._open(now, event)
            return [*tails, new] if new is not None else tails
        if current is None:
            return []
        current.writer.update_metadata(
            success=event.success, episode_return=event.episode_return, steps=event.steps
        )
        current.ended_ns = now
        return [current]

    def _open(self, now: int, event: EpisodeEvent) -> _Bag | None:
        path = self.output / f"episode_{now:019d}_{event.episode:06d}"
        try:
            writer = EpisodeBagWriter(
                path,
                dict(task=event.task, seed=event.seed, episode=event.episode, source=NODE_NAME),
                compression=self.config.bag_compression,
            )
        except EpisodeBagError as exc:
            self.get_logger().error(f"cannot record episode {event.episode}: {exc}")
            return None
        # The sensor messages (and commands) just before "start": the first action's observation.
        for topic, stamp, msg in self._preroll:
            writer.write(topic, stamp, msg)
        observed = {t for t, _, _ in self._preroll} & self._observation_topics
        self._bags.append(_Bag(writer, event, now, observed=observed))
        self.get_logger().info(
            f"recording episode {event.episode} ({event.task}, seed {event.seed}) -> {path.name}"
        )
        return self._bags[-1]

    def _check_first_action(self, bag: _Bag) -> None:
        missing = sorted(self._observation_topics - bag.observed)
        if missing:
            self.get_logger().error(
                f"episode {bag.event.episode}: its first action came before any message on "
                f"{' or '.join(missing)} reached the recorder (preroll_s={self.config.preroll_s}), so its "
                "bag cannot hold the observation that action was computed from and ingestion will refuse "
                "the episode; are the camera and the arm driver publishing, and was the recorder up "
                "before the episode started?"
            )

    def _close(self, bag: _Bag) -> None:
        self._bags.remove(bag)
        path = bag.writer.close()
        self.saved.append(path)
        self.get_logger().info(
            f"saved episode {bag.event.episode} ({bag.writer.message_count} messages) -> {path}"
        )

    def _drop(self, bag: _Bag, why: str) -> None:
        self._bags.remove(bag)
        bag.writer.abort()
        self.get_logger().warning(f"dropped an unfinished episode bag: {why}")

    def _on_timer(self) -> None:
        now = time.time_ns()
        for bag in list(self._bags):
            if bag.tail_over:
                self._close(bag)
            elif bag.ended_ns is not None and now - bag.ended_ns >= round(self.config.tail_s * 1e9):
                # Close one tick later: the executor runs timers before subscriptions, so on a starved
                # process a late reward can be queued right now; by the next tick it has been written.
                bag.tail_over = True
            elif bag.ended_ns is None and now - bag.opened_ns > round(self.config.max_episode_s * 1e9):
                self._drop(
                    bag, f"episode {bag.event.episode} ran over max_episode_s={self.config.max_episode_s}"
                )

    def shutdown(self) -> None:
        """Finish ended episodes; drop one still running (it has no end, so it is not data)."""
        for bag in list(self._bags):
            if bag.ended_ns is not None:
                self._close(bag)
            else:
                self._drop(bag, "shutdown during the episode")


def main(args: list[str] | None = None) -> None:
    spin_node(RecorderNode, args, RecorderNode.shutdown)


if __name__ == "__main__":
    main()
