"""One rosbag2 (MCAP storage) per episode: writing and reading, with integrity checks.

Layout: `<dataset>/<episode_name>/` holding `metadata.yaml` and `<episode_name>.mcap`, the rosbag2
layout `ros2 bag record -s mcap` makes, so `ros2 bag info/play` on a real ROS install read our bags and our
reader reads theirs. The episode's metadata (task, seed, noise, success, return, ...) is stored as
JSON under the rosbag2 `custom_data` key `fowm_episode`; the episode-events topic carries the same
facts for live listeners.

Integrity: the MCAP file is written chunked with a CRC32 over every chunk and over the data section
(the `mcap` library's writer), so any MCAP reader that checks CRCs (rosbags always does, `mcap` with
`validate_crcs=True`) rejects a flipped byte. On top of that the bag's metadata carries a sha256
content digest over every message (topic, log time, bytes), under the `custom_data` key
`fowm_integrity`; `read_episode_bag` recomputes it, and it is the bag's identity for ingestion
(two bags with the same messages are the same episode whatever their file names).

A bag is written under `<dataset>/.partial/<episode_name>/` and moved into place when closed, so an
interrupted episode never looks like a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np
import yaml
from mcap.reader import make_reader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.metadata import dump_qos_v9
from ruamel.yaml import YAML

from fowm_xarm import topics
from fowm_xarm.topics import TYPESTORE, EpisodeEvent, TopicSpec

METADATA_KEY = "fowm_episode"
INTEGRITY_KEY = "fowm_integrity"
PARTIAL_DIR = ".partial"
# rosbag2 metadata version 9 is what Jazzy's rosbag2 writes.
BAG_VERSION = 9
MCAP_MAGIC = b"\x89MCAP0\r\n"
# A chunk holds about one 640x480 frame: small enough that a reader holds little, large enough that
# the per-chunk index stays small.
CHUNK_BYTES = 1 << 20
# MCAP chunk compression, inside the storage file as `ros2 bag record -s mcap --storage-preset-profile
# zstd_fast` writes it (every MCAP reader, rosbag2's and rosbags' included, decompresses it). make demo's
# bags of rendered sim frames shrink 24-31x and are written as fast as raw ones (measured 2026-12-04);
# camera-like noisy frames shrank 7 % and ingested at 0.77x the speed, so a robot may prefer "none".
COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
DEFAULT_COMPRESSION = "zstd"  # the writer's, the recorder's and fowm-collect's default


def check_compression(name: str, what: str = "bag compression") -> str:
    """`name` if it is one of COMPRESSIONS, else a ValueError naming `what` and the choices."""
    if name not in COMPRESSIONS:
        raise ValueError(f"{what} must be one of {sorted(COMPRESSIONS)}, got {name!r}")
    return name


class EpisodeBagError(RuntimeError):
    """A bag that is missing, incomplete, corrupt, or not laid out like an episode.

    `reason` says which, for code that reacts differently: "missing", "unfinished", "metadata",
    "not_mcap" (garbage bytes), "truncated", "checksum" (CRC or content digest mismatch), "unchecked"
    (no content digest), "corrupt" (anything else a reader rejected), "content" (decodes but is not
    an episode, e.g. a required topic is missing)."""

    def __init__(self, message: str, reason: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason


def _message_hash(topic: str, stamp_ns: int, data: bytes | memoryview) -> bytes:
    h = hashlib.sha256(topic.encode())
    h.update(struct.pack("<qQ", int(stamp_ns), len(data)))
    h.update(data)
    return h.digest()


def content_digest(message_hashes: list[tuple[int, int, bytes]]) -> str:
    """sha256 hex over the per-message hashes (log time, index, hash) sorted by log time, then hash:
    independent of chunking and of the order a reader yields messages with equal log times."""
    h = hashlib.sha256()
    for _, _, mh in sorted(message_hashes, key=lambda x: (x[0], x[2])):
        h.update(mh)
    return h.hexdigest()


class EpisodeBagWriter:
    """Writes one episode to a rosbag2 MCAP directory (chunked, CRC32s, content digest).

    Messages go in as CDR bytes (raw from an rclpy subscription, or from the builders in
    `fowm_xarm.topics`). Topics of the contract are registered on first use; others need
    `add_topic` first (e.g. remapped names). `compression` is the MCAP chunk compression, one of
    COMPRESSIONS.
    """

    def __init__(
        self, path: str | Path, metadata: dict[str, Any] | None = None, compression: str = DEFAULT_COMPRESSION
    ) -> None:
        check_compression(compression)
        self.path = Path(path)
        if self.path.exists():
            raise EpisodeBagError(f"{self.path} exists already; episode bags are never overwritten")
        self._partial = self.path.parent / PARTIAL_DIR / self.path.name
        if self._partial.exists():
            # Left over by a crashed run: it can never be completed, so it is safe to drop.
            shutil.rmtree(self._partial)
        self._partial.mkdir(parents=True)
        self.metadata: dict[str, Any] = {}
        self.update_metadata(**(metadata or {}))
        self._file: BinaryIO | None = open(self._partial / f"{self.path.name}.mcap", "xb")
        self._mcap = McapWriter(
            self._file,
            chunk_size=CHUNK_BYTES,
            compression=COMPRESSIONS[compression],
            enable_crcs=True,
            enable_data_crcs=True,
        )
        self._mcap.start(profile="ros2", library="fowm_xarm.episode_bag")
        self._schemas: dict[str, int] = {}
        self._topics: dict[str, dict[str, Any]] = {}  # name -> channel id, spec, count
        self._hashes: list[tuple[int, int, bytes]] = []  # (log time, write index, message hash)
        self._t_min, self._t_max = 2**63 - 1, 0
        self.message_count = 0

    def add_topic(self, name: str, spec: TopicSpec) -> None:
        """Register a topic under `name` with the type and QoS of `spec`."""
        if name in self._topics:
            raise EpisodeBagError(f"topic {name} is registered already")
        if self._mcap is None:
            raise EpisodeBagError(f"{self.path}: add_topic after close")
        if spec.msgtype not in self._schemas:
            msgdef, _ = TYPESTORE.generate_msgdef(spec.msgtype, ros_version=2)
            self._schemas[spec.msgtype] = self._mcap.register_schema(spec.msgtype, "ros2msg", msgdef.encode())
        qos = dump_qos_v9([topics.bag_qos(spec.qos)])
        channel = self._mcap.register_channel(
            name, "cdr", self._schemas[spec.msgtype], {"offered_qos_profiles": _yaml_text(qos)}
        )
        self._topics[name] = dict(channel=channel, spec=spec, qos=qos, count=0)

    def write(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """Append one serialised message received (or produced) at `stamp_ns`."""
        if self._mcap is None:
            raise EpisodeBagError(f"{self.path}: write after close")
        if topic not in self._topics:
            spec = topics.TOPICS_BY_NAME.get(topic)
            if spec is None:
                raise EpisodeBagError(f"unknown topic {topic}: call add_topic(name, spec) first")
            self.add_topic(topic, spec)
        entry = self._topics[topic]
        stamp_ns = int(stamp_ns)
        data = bytes(data)
        self._mcap.add_message(entry["channel"], stamp_ns, data, stamp_ns, sequence=entry["count"])
        self._hashes.append((stamp_ns, self.message_count, _message_hash(topic, stamp_ns, data)))
        entry["count"] += 1
        self._t_min, self._t_max = min(self._t_min, stamp_ns), max(self._t_max, stamp_ns)
        self.message_count += 1

    def update_metadata(self, **values: Any) -> None:
        """Set episode metadata (JSON-serialisable values: task, seed, noise, success, return, ...)."""
        try:
            json.dumps(values)
        except TypeError as exc:
            raise ValueError(f"episode metadata must be JSON-serialisable: {exc}") from exc
        self.metadata.update(values)

    @property
    def content_sha256(self) -> str:
        """The content digest of the messages written so far (the bag's identity once closed)."""
        return content_digest(self._hashes)

    def _bag_info(self) -> dict[str, Any]:
        """rosbag2 metadata (version 9), as `ros2 bag record` writes it."""
        count = self.message_count
        start = self._t_min if count else 0
        duration = max(0, self._t_max - self._t_min) if count else 0
        integrity = dict(algorithm="sha256", message_count=count, content_sha256=self.content_sha256)
        name = f"{self.path.name}.mcap"
        return {
            "version": BAG_VERSION,
            "storage_identifier": "mcap",
            "relative_file_paths": [name],
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": count,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": topic,
                        "type": e["spec"].msgtype,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": e["qos"],
                        "type_description_hash": TYPESTORE.hash_rihs01(e["spec"].msgtype),
                    },
                    "message_count": e["count"],
                }
                for topic, e in self._topics.items()
            ],
            "compression_format": "",
            "compression_mode": "",
            "files": [
                {
                    "path": name,
                    "starting_time": {"nanoseconds_since_epoch": start},
                    "duration": {"nanoseconds": duration},
                    "message_count": count,
                }
            ],
            "custom_data": {
                METADATA_KEY: json.dumps(self.metadata, sort_keys=True),
                INTEGRITY_KEY: json.dumps(integrity, sort_keys=True),
            },
            "ros_distro": "jazzy",
        }

    def close(self) -> Path:
        """Finish the bag (MCAP summary, metadata.yaml, fsync) and move it to its final name."""
        if self._mcap is None:
            return self.path
        info = self._bag_info()
        # rosbag2's MCAP plugin keeps a copy of the bag metadata inside the file too.
        self._mcap.add_metadata("rosbag2", {"serialized_metadata": _yaml_text(info)})
        self._mcap.finish()
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._mcap, self._file = None, None
        meta_path = self._partial / "metadata.yaml"
        meta_path.write_text(_yaml_text({"rosbag2_bagfile_information": info}))
        with open(meta_path, "rb") as f:
            os.fsync(f.fileno())
        self._partial.rename(self.path)
        try:
            self._partial.parent.rmdir()  # only succeeds once no other episode is in flight
        except OSError:
            pass
        return self.path

    def abort(self) -> None:
        """Drop the episode (nothing is left on disk)."""
        if self._file is not None:
            self._file.close()
        self._mcap, self._file = None, None
        shutil.rmtree(self._partial, ignore_errors=True)
        try:
            self._partial.parent.rmdir()
        except OSError:
            pass

    def __enter__(self) -> EpisodeBagWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _yaml_text(data: Any) -> str:
    writer = YAML(typ="safe")
    writer.default_flow_style = False
    out = StringIO()
    writer.dump(data, out)
    return out.getvalue()


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
    records: list[tuple[str, int, Any]] = field(default_factory=list)  # (topic, log time, msg) in time order
    content_sha256: str = ""  # digest of every message (topic, log time, bytes): the bag's identity
    verified: bool = False  # the content digest matched the one the writer stored

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


def _check_mcap_file(bag: Path, file: Path) -> None:
    """Tell garbage and truncation apart before a reader gives a generic error."""
    if not file.is_file():
        raise EpisodeBagError(f"{bag}: storage file {file.name} is missing", "missing")
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(len(MCAP_MAGIC))
        f.seek(max(0, size - len(MCAP_MAGIC)))
        tail = f.read(len(MCAP_MAGIC))
    if head != MCAP_MAGIC:
        raise EpisodeBagError(
            f"{bag}: {file.name} is not an MCAP file (garbage bytes: it starts with {head!r})", "not_mcap"
        )
    if tail != MCAP_MAGIC or size < 2 * len(MCAP_MAGIC):
        raise EpisodeBagError(
            f"{bag}: {file.name} is truncated ({size} bytes, no MCAP footer): the writer did not finish it "
            "or the copy was cut short",
            "truncated",
        )


def load_bag_info(path: Path) -> dict[str, Any]:
    """The `rosbag2_bagfile_information` of a bag's metadata.yaml (libyaml: ~10x ruamel's speed)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load((path / "metadata.yaml").read_text(), Loader=loader)["rosbag2_bagfile_information"]


def iter_raw_messages(path: Path, files: list[Path]) -> Any:
    """(topic, msgtype, log time, CDR bytes) in log-time order. MCAP files are read with the `mcap`
    reader, validating every chunk CRC; other storage (sqlite3) with rosbags' reader."""
    if not all(f.suffix == ".mcap" for f in files):
        with Reader(path) as reader:
            for conn, stamp, data in reader.messages():
                yield conn.topic, conn.msgtype, stamp, data
        return
    for file in files:
        with open(file, "rb") as f:
            for schema, channel, message in make_reader(f, validate_crcs=True).iter_messages(
                log_time_order=True
            ):
                yield channel.topic, schema.name, message.log_time, message.data


def read_episode_bag(
    path: str | Path, require_checksum: bool = False, decode_arrays: bool = True, verify_digest: bool = True
) -> EpisodeBag:
    """Read, verify and decode one episode bag; raises EpisodeBagError naming the bag and the problem.

    Verification: chunk CRCs (by the reader), the content digest in the metadata (when present; with
    `require_checksum` a bag without one is refused) and the per-topic message counts. Without
    `verify_digest` a stored digest is taken as the bag's identity unchecked (the CRCs still catch
    flipped bits; hashing every byte again costs about as much as reading it). Without
    `decode_arrays` only the messages are decoded (`arrays` stays empty; ingestion needs no more)."""
    path = Path(path)
    if path.parent.name == PARTIAL_DIR:
        raise EpisodeBagError(f"{path} is an unfinished episode (writer did not close it)", "unfinished")
    if not path.is_dir():
        raise EpisodeBagError(f"{path} is not an episode bag directory", "missing")
    if not (path / "metadata.yaml").is_file():
        raise EpisodeBagError(f"{path} has no metadata.yaml: not a finished rosbag2 bag", "unfinished")
    try:
        info = load_bag_info(path)
        custom = info.get("custom_data") or {}
        metadata = json.loads(custom.get(METADATA_KEY, "{}"))
        integrity = json.loads(custom[INTEGRITY_KEY]) if INTEGRITY_KEY in custom else None
        files = [path / f for f in info["relative_file_paths"]]
    except Exception as exc:  # YAML, JSON and key errors alike: the metadata is unusable
        raise EpisodeBagError(
            f"{path}: corrupt metadata.yaml ({type(exc).__name__}: {exc})", "metadata"
        ) from exc
    if integrity is None and require_checksum:
        raise EpisodeBagError(
            f"{path}: the bag carries no content checksum ({INTEGRITY_KEY}), so its data cannot be verified "
            "(bags written by EpisodeBagWriter carry one)",
            "unchecked",
        )
    for file in files:
        if file.suffix == ".mcap":
            _check_mcap_file(path, file)
    stamps: dict[str, list[int]] = {}
    messages: dict[str, list[Any]] = {}
    records: list[tuple[str, int, Any]] = []
    hashes: list[tuple[int, int, bytes]] = []
    hashing = verify_digest or integrity is None or "content_sha256" not in integrity
    try:
        expected = int(info["message_count"])
        for topic, msgtype, stamp, data in iter_raw_messages(path, files):
            if hashing:
                hashes.append((stamp, len(hashes), _message_hash(topic, stamp, data)))
            msg = TYPESTORE.deserialize_cdr(data, msgtype)
            messages.setdefault(topic, []).append(msg)
            stamps.setdefault(topic, []).append(stamp)
            records.append((topic, stamp, msg))
    except EpisodeBagError:
        raise
    except Exception as exc:  # rosbags/mcap raise many types for damaged files; name the bag in one
        text = f"{type(exc).__name__}: {exc}"
        if "checksum" in str(exc).lower() or "crc" in str(exc).lower():
            raise EpisodeBagError(
                f"{path}: checksum mismatch, the bag's data is corrupted ({text})", "checksum"
            ) from exc
        raise EpisodeBagError(f"{path}: corrupt or unreadable bag ({text})", "corrupt") from exc
    got = sum(len(v) for v in messages.values())
    if got != expected:
        raise EpisodeBagError(
            f"{path}: truncated bag, metadata says {expected} messages but {got} were read", "truncated"
        )
    digest = content_digest(hashes) if hashing else str(integrity["content_sha256"])
    if integrity is not None and digest != integrity.get("content_sha256"):
        raise EpisodeBagError(
            f"{path}: content checksum mismatch: metadata says sha256 {integrity.get('content_sha256')}, "
            f"the messages hash to {digest}; the bag's data is corrupted",
            "checksum",
        )

    bag = EpisodeBag(
        path=path,
        metadata=metadata,
        messages=messages,
        stamps_ns={k: np.asarray(v, dtype=np.int64) for k, v in stamps.items()},
        records=records,
        content_sha256=digest,
        verified=integrity is not None,
    )
    for key, (topic, decode) in _ARRAY_DECODERS.items():
        if decode_arrays and messages.get(topic):
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
        raise EpisodeBagError(f"{root} is not a dataset directory", "missing")
    return sorted(
        p for p in root.iterdir() if p.is_dir() and (p / "metadata.yaml").is_file() and p.name != PARTIAL_DIR
    )
