"""One rosbag2 (MCAP storage) per episode: writing and reading.

Layout: `<dataset>/<episode_name>/` holding `metadata.yaml` and `<episode_name>.mcap`, the rosbag2
layout `ros2 bag record -s mcap` makes, so `ros2 bag info/play` on a real ROS install read our bags and our
reader reads theirs. The episode's metadata (task, seed, noise, success, return, ...) is stored as
JSON under the rosbag2 `custom_data` key `fowm_episode`; the episode-events topic carries the same
facts for live listeners.

A bag is written under `<dataset>/.partial/<episode_name>/` and moved into place when closed, so an
interrupted episode never looks like a complete one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from ruamel.yaml import YAML

from fowm_xarm import topics
from fowm_xarm.topics import TYPESTORE, EpisodeEvent, TopicSpec

METADATA_KEY = "fowm_episode"
PARTIAL_DIR = ".partial"
# rosbag2 metadata version 9 is what Jazzy's rosbag2 writes.
BAG_VERSION = 9


class EpisodeBagError(RuntimeError):
    """A bag that is missing, incomplete, corrupt, or not laid out like an episode."""


class EpisodeBagWriter:
    """Writes one episode to a rosbag2 MCAP directory.

    Messages go in as CDR bytes (raw from an rclpy subscription, or from the builders in
    `fowm_xarm.topics`). Topics of the contract are registered on first use; others need
    `add_topic` first (e.g. remapped names).
    """

    def __init__(self, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise EpisodeBagError(f"{self.path} exists already; episode bags are never overwritten")
        self._partial = self.path.parent / PARTIAL_DIR / self.path.name
        if self._partial.exists():
            # Left over by a crashed run: it can never be completed, so it is safe to drop.
            shutil.rmtree(self._partial)
        self._partial.parent.mkdir(parents=True, exist_ok=True)
        self.metadata: dict[str, Any] = {}
        self.update_metadata(**(metadata or {}))
        self._writer = Writer(self._partial, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.message_count = 0

    def add_topic(self, name: str, spec: TopicSpec) -> None:
        """Register a topic under `name` with the type and QoS of `spec`."""
        if name in self._connections:
            raise EpisodeBagError(f"topic {name} is registered already")
        self._connections[name] = self._writer.add_connection(
            name, spec.msgtype, typestore=TYPESTORE, offered_qos_profiles=[topics.bag_qos(spec.qos)]
        )

    def write(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """Append one serialised message received (or produced) at `stamp_ns`."""
        if self._writer is None:
            raise EpisodeBagError(f"{self.path}: write after close")
        if topic not in self._connections:
            spec = topics.TOPICS_BY_NAME.get(topic)
            if spec is None:
                raise EpisodeBagError(f"unknown topic {topic}: call add_topic(name, spec) first")
            self.add_topic(topic, spec)
        self._writer.write(self._connections[topic], int(stamp_ns), data)
        self.message_count += 1

    def update_metadata(self, **values: Any) -> None:
        """Set episode metadata (JSON-serialisable values: task, seed, noise, success, return, ...)."""
        try:
            json.dumps(values)
        except TypeError as exc:
            raise ValueError(f"episode metadata must be JSON-serialisable: {exc}") from exc
        self.metadata.update(values)

    def close(self) -> Path:
        """Finish the bag (writes metadata.yaml) and move it to its final name."""
        if self._writer is None:
            return self.path
        self._writer.set_custom_data(METADATA_KEY, json.dumps(self.metadata, sort_keys=True))
        self._writer.close()
        self._writer = None
        self._partial.rename(self.path)
        try:
            self._partial.parent.rmdir()  # only succeeds once no other episode is in flight
        except OSError:
            pass
        return self.path

    def abort(self) -> None:
        """Drop the episode (nothing is left on disk)."""
        if self._writer is not None:
            self._writer = None
        shutil.rmtree(self._partial, ignore_errors=True)

    def __enter__(self) -> EpisodeBagWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class EpisodeBag:
    """A decoded episode bag. Arrays follow message order on each topic (time-major)."""

    path: Path
    metadata: dict[str, Any]  # the writer's episode metadata (custom_data)
    stamps_ns: dict[str, np.ndarray]  # topic -> (N,) int64 receive/record times
    messages: dict[str, list[Any]]  # topic -> rosbags message objects
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # see _ARRAY_DECODERS
    events: list[EpisodeEvent] = field(default_factory=list)  # from the episode-events topic
    camera_info: dict[str, float] | None = None  # intrinsics of the first CameraInfo

    @property
    def num_decisions(self) -> int:
        return len(self.arrays.get("joint_target", ()))


def _image(msg: Any) -> np.ndarray:
    if msg.encoding != "rgb8":
        raise EpisodeBagError(f"images must be rgb8, got {msg.encoding!r}")
    return (
        np.asarray(msg.data, dtype=np.uint8)
        .reshape(msg.height, msg.step)[:, : 3 * msg.width]
        .reshape(msg.height, msg.width, 3)
    )


# array name -> (topic, decoder); image (N,H,W,3) uint8, joint_position/velocity (N,8) with the
# gripper last, joint_target (N,7) (last trajectory point), gripper_command (N,), action (N,4), reward (N,)
_ARRAY_DECODERS = {
    "image": (topics.IMAGE.name, _image),
    "joint_position": (topics.JOINT_STATES.name, lambda m: np.asarray(m.position, dtype=np.float64)),
    "joint_velocity": (topics.JOINT_STATES.name, lambda m: np.asarray(m.velocity, dtype=np.float64)),
    "joint_target": (topics.JOINT_TRAJECTORY.name, lambda m: np.asarray(m.points[-1].positions, np.float64)),
    "gripper_command": (topics.GRIPPER_COMMAND.name, lambda m: np.float32(m.data)),
    "action": (topics.ACTION.name, lambda m: np.asarray(m.data, dtype=np.float32)),
    "reward": (topics.REWARD.name, lambda m: np.float32(m.data)),
}


def read_episode_bag(path: str | Path) -> EpisodeBag:
    """Read and decode one episode bag; raises EpisodeBagError naming the problem."""
    path = Path(path)
    if path.parent.name == PARTIAL_DIR:
        raise EpisodeBagError(f"{path} is an unfinished episode (writer did not close it)")
    if not path.is_dir():
        raise EpisodeBagError(f"{path} is not an episode bag directory")
    if not (path / "metadata.yaml").is_file():
        raise EpisodeBagError(f"{path} has no metadata.yaml: not a finished rosbag2 bag")
    stamps: dict[str, list[int]] = {}
    messages: dict[str, list[Any]] = {}
    try:
        info = YAML(typ="safe").load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        metadata = json.loads((info.get("custom_data") or {}).get(METADATA_KEY, "{}"))
        with Reader(path) as reader:
            expected = reader.message_count
            for conn, stamp, data in reader.messages():
                messages.setdefault(conn.topic, []).append(TYPESTORE.deserialize_cdr(data, conn.msgtype))
                stamps.setdefault(conn.topic, []).append(stamp)
    except EpisodeBagError:
        raise
    except Exception as exc:  # rosbags/mcap raise many types for damaged files; name the bag in one
        raise EpisodeBagError(f"{path}: corrupt or unreadable bag ({type(exc).__name__}: {exc})") from exc
    got = sum(len(v) for v in messages.values())
    if got != expected:
        raise EpisodeBagError(f"{path}: truncated bag, metadata says {expected} messages but {got} were read")

    bag = EpisodeBag(
        path=path,
        metadata=metadata,
        messages=messages,
        stamps_ns={k: np.asarray(v, dtype=np.int64) for k, v in stamps.items()},
    )
    for key, (topic, decode) in _ARRAY_DECODERS.items():
        if messages.get(topic):
            bag.arrays[key] = np.stack([decode(m) for m in messages[topic]])
    bag.events = [EpisodeEvent.from_json(m.data) for m in messages.get(topics.EPISODE.name, [])]
    if messages.get(topics.CAMERA_INFO.name):
        info = messages[topics.CAMERA_INFO.name][0]
        bag.camera_info = dict(
            width=int(info.width),
            height=int(info.height),
            fx=float(info.k[0]),
            fy=float(info.k[4]),
            cx=float(info.k[2]),
            cy=float(info.k[5]),
        )
    return bag


def list_episode_bags(dataset_dir: str | Path) -> list[Path]:
    """The finished episode bags in a dataset directory, sorted by name (unfinished ones skipped)."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise EpisodeBagError(f"{root} is not a dataset directory")
    return sorted(
        p for p in root.iterdir() if p.is_dir() and (p / "metadata.yaml").is_file() and p.name != PARTIAL_DIR
    )
