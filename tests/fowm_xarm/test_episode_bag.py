"""Episode bags and the topic contract, without DDS: what we write is what ROS tools and our reader see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fowm_xarm import topics
from fowm_xarm.episode_bag import EpisodeBagError, EpisodeBagWriter, list_episode_bags, read_episode_bag
from fowm_xarm.limits import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER
from fowm_xarm.topics import EpisodeEvent

PERIOD_NS = 160_000_000
INTRINSICS = dict(width=64, height=48, fx=60.0, fy=61.0, cx=32.0, cy=24.0)


def _write_episode(
    path: Path, decisions: int = 5, close: bool = True, compression: str = "zstd"
) -> EpisodeBagWriter:
    writer = EpisodeBagWriter(path, dict(task="reach", seed=7, noise=0.3), compression=compression)
    writer.write(topics.EPISODE.name, 0, topics.episode_event_msg(EpisodeEvent("start", 0, "reach", 7)))
    for k in range(decisions + 1):
        t = k * PERIOD_NS
        frame = np.full((48, 64, 3), k, np.uint8)
        frame[0, 0] = (255, 0, 7)  # channel order must survive
        writer.write(topics.IMAGE.name, t, topics.image_msg(t, frame))
        writer.write(topics.CAMERA_INFO.name, t, topics.camera_info_msg(t, INTRINSICS))
        writer.write(
            topics.JOINT_STATES.name, t, topics.joint_state_msg(t, np.full(7, 0.1 * k), np.zeros(7), 1.0)
        )
        if k < decisions:
            writer.write(
                topics.ACTION.name, t, topics.action_msg(np.array([k, 0, 0, 1], np.float32) / decisions)
            )
            writer.write(
                topics.JOINT_TRAJECTORY.name,
                t,
                topics.joint_trajectory_msg(t, np.full(7, 0.1 * (k + 1)), 0.16),
            )
            writer.write(topics.GRIPPER_COMMAND.name, t, topics.float32_msg(0.5))
            writer.write(topics.REWARD.name, t + PERIOD_NS, topics.float32_msg(-k))
    end = EpisodeEvent("end", 0, "reach", 7, success=True, episode_return=-10.0, steps=decisions)
    writer.write(topics.EPISODE.name, decisions * PERIOD_NS, topics.episode_event_msg(end))
    writer.update_metadata(success=True, episode_return=-10.0)
    if close:
        writer.close()
    return writer


def test_round_trip_decodes_every_topic(tmp_path):
    path = tmp_path / "episode_000000"
    _write_episode(path)
    bag = read_episode_bag(path)
    assert bag.metadata == dict(task="reach", seed=7, noise=0.3, success=True, episode_return=-10.0)
    a = bag.arrays
    assert a["image"].shape == (6, 48, 64, 3) and a["image"].dtype == np.uint8
    assert tuple(a["image"][2, 0, 0]) == (255, 0, 7) and a["image"][2, 5, 5, 0] == 2
    assert a["joint_position"].shape == (6, 8)
    np.testing.assert_allclose(a["joint_position"][3, :7], 0.3)
    assert a["joint_position"][0, 7] == 1.0
    np.testing.assert_allclose(a["joint_target"][:, 0], 0.1 * np.arange(1, 6))
    np.testing.assert_allclose(a["reward"], -np.arange(5))
    assert a["action"].shape == (5, 4) and a["gripper_command"].shape == (5,)
    assert bag.num_decisions == 5
    assert [e.event for e in bag.events] == ["start", "end"] and bag.events[1].success is True
    assert bag.camera_info == INTRINSICS
    np.testing.assert_array_equal(bag.stamps_ns[topics.REWARD.name], PERIOD_NS * np.arange(1, 6))


def test_rosbags_reads_our_bags(tmp_path):
    from rosbags.rosbag2 import Reader

    path = tmp_path / "ep"
    _write_episode(path, decisions=3)
    with Reader(path) as reader:
        count = reader.message_count
        assert count == 4 * 3 + 3 * 4 + 2 and reader.duration > 0  # 4 observations, 3 decisions, 2 events
        decoded = [topics.deserialize(data, conn.msgtype) for conn, _, data in reader.messages()]
    assert len(decoded) == count


def test_independent_mcap_reader_sees_the_rosbag2_layout(tmp_path):
    from mcap.reader import make_reader

    path = tmp_path / "ep"
    _write_episode(path, decisions=4)
    files = sorted(p.name for p in path.iterdir())
    assert files == ["ep.mcap", "metadata.yaml"]
    counts: dict[str, int] = {}
    schemas: dict[str, str] = {}
    with open(path / "ep.mcap", "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        for schema, channel, _ in reader.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            schemas[channel.topic] = schema.name
            assert channel.message_encoding == "cdr" and schema.encoding == "ros2msg"
    assert counts == {
        topics.IMAGE.name: 5,
        topics.CAMERA_INFO.name: 5,
        topics.JOINT_STATES.name: 5,
        topics.ACTION.name: 4,
        topics.JOINT_TRAJECTORY.name: 4,
        topics.GRIPPER_COMMAND.name: 4,
        topics.REWARD.name: 4,
        topics.EPISODE.name: 2,
    }
    assert schemas == {name: topics.TOPICS_BY_NAME[name].msgtype for name in counts}
    meta = (path / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in meta and "fowm_episode" in meta
    # Sensor topics are offered best effort, commands reliable (ros2 bag play reuses these profiles).
    assert "reliability: best_effort" in meta and "reliability: reliable" in meta
    assert "durability: transient_local" in meta  # episode events are latched


def test_cdr_bytes_deserialize_as_rclpy_messages():
    """The sim node publishes these bytes raw; rclpy subscribers must decode them."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    img = deserialize_message(topics.image_msg(5, np.zeros((2, 3, 3), np.uint8)), Image)
    assert (img.height, img.width, img.step, img.encoding) == (2, 3, 9, "rgb8")
    js = deserialize_message(topics.joint_state_msg(10**9 + 3, np.arange(7.0), np.zeros(7), 0.25), JointState)
    assert list(js.name) == [*JOINT_NAMES, "gripper"] and js.position[7] == 0.25
    assert (js.header.stamp.sec, js.header.stamp.nanosec) == (1, 3)
    traj = deserialize_message(topics.joint_trajectory_msg(0, np.ones(7), 0.16), JointTrajectory)
    assert (
        list(traj.joint_names) == list(JOINT_NAMES) and traj.points[0].time_from_start.nanosec == 160_000_000
    )
    info = deserialize_message(topics.camera_info_msg(0, INTRINSICS), CameraInfo)
    assert info.k[0] == 60.0 and info.k[4] == 61.0 and info.p[2] == 32.0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_metadata", "bad_metadata"])
def test_corrupt_bags_are_rejected_with_a_clear_error(tmp_path, damage):
    path = tmp_path / "ep"
    _write_episode(path)
    mcap = path / "ep.mcap"
    data = mcap.read_bytes()
    if damage == "truncate":
        mcap.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        mcap.write_bytes(b"\x00garbage" * 100)
    elif damage == "no_metadata":
        (path / "metadata.yaml").unlink()
    else:
        (path / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed")
    with pytest.raises(EpisodeBagError, match=str(path)):
        read_episode_bag(path)


def test_unfinished_episodes_never_look_complete(tmp_path):
    _write_episode(tmp_path / "done")
    _write_episode(tmp_path / "crashed", close=False)  # like a recorder killed mid-episode
    assert [p.name for p in list_episode_bags(tmp_path)] == ["done"]
    assert not (tmp_path / "crashed").exists()
    with pytest.raises(EpisodeBagError, match="unfinished"):
        read_episode_bag(tmp_path / ".partial" / "crashed")
    with pytest.raises(RuntimeError), EpisodeBagWriter(tmp_path / "failed") as w:
        w.write(topics.REWARD.name, 0, topics.float32_msg(1.0))
        raise RuntimeError("episode failed")
    assert not (tmp_path / "failed").exists() and not (tmp_path / ".partial" / "failed").exists()


def test_writer_refuses_bad_use(tmp_path):
    _write_episode(tmp_path / "ep")
    with pytest.raises(EpisodeBagError, match="exists already"):
        EpisodeBagWriter(tmp_path / "ep")
    with EpisodeBagWriter(tmp_path / "other") as w:
        with pytest.raises(EpisodeBagError, match="unknown topic /my/topic"):
            w.write("/my/topic", 0, topics.float32_msg(1.0))
        w.add_topic("/my/reward", topics.REWARD)  # a remapped topic is fine once registered
        w.write("/my/reward", 0, topics.float32_msg(1.0))
        with pytest.raises(ValueError, match="JSON"):
            w.update_metadata(bad=object())
    assert read_episode_bag(tmp_path / "other").messages["/my/reward"][0].data == 1.0


def test_episode_events_round_trip_and_reject_bad_payloads():
    end = EpisodeEvent("end", 3, "push", 12, success=False, episode_return=-4.5, steps=25)
    assert EpisodeEvent.from_json(end.to_json()) == end
    assert json.loads(EpisodeEvent("start", 0, "lift", 1).to_json()) == {
        "event": "start",
        "episode": 0,
        "task": "lift",
        "seed": 1,
    }
    start = EpisodeEvent("start", 2, "reach", 5, first_obs_stamp_ns=1_000_160_000_000)
    assert EpisodeEvent.from_json(start.to_json()) == start
    with pytest.raises(ValueError, match="first_obs_stamp_ns"):
        EpisodeEvent.from_json('{"event": "start", "episode": 0, "task": "reach", "first_obs_stamp_ns": -1}')
    with pytest.raises(ValueError, match="must be one of"):
        EpisodeEvent("stop", 0, "reach")
    with pytest.raises(ValueError, match="not JSON"):
        EpisodeEvent.from_json("{oops")
    with pytest.raises(ValueError, match="lacks keys"):
        EpisodeEvent.from_json('{"event": "start"}')


def test_trajectory_validation_names_the_problem():
    class Point:
        def __init__(self, positions):
            self.positions = positions

    q = (JOINT_LOWER + JOINT_UPPER) / 2
    names = list(JOINT_NAMES)
    reordered = topics.trajectory_targets(names[::-1], [Point(q[::-1])], JOINT_LOWER, JOINT_UPPER)
    np.testing.assert_array_equal(reordered, q)
    cases = {
        "joint names": ([*names[:6], "gripper"], [Point(q)]),
        "no points": (names, []),
        "positions for": (names, [Point(q[:5])]),
        "NaN": (names, [Point(np.where(np.arange(7) == 2, np.nan, q))]),
        "joint4": (names, [Point(np.where(np.arange(7) == 3, JOINT_UPPER[3] + 0.1, q))]),
    }
    for message, (n, points) in cases.items():
        with pytest.raises(ValueError, match=message):
            topics.trajectory_targets(n, points, JOINT_LOWER, JOINT_UPPER)


def _flip_byte_inside_an_image(mcap: Path) -> None:
    """Flip one byte in the middle of the first image's pixel data (a frame of value 0 then 1 ...)."""
    data = bytearray(mcap.read_bytes())
    frame1 = np.full((48, 64, 3), 1, np.uint8)
    frame1[0, 0] = (255, 0, 7)
    offset = data.find(frame1.tobytes())
    assert offset > 0, "image payload not found in the file"
    data[offset + 1000] ^= 0x01
    mcap.write_bytes(bytes(data))


def _flip_byte_inside_the_first_chunk(mcap: Path) -> None:
    """Flip one byte in the middle of the first chunk record (its compressed messages)."""
    from mcap.opcode import Opcode

    data = bytearray(mcap.read_bytes())
    offset = len(b"\x89MCAP0\r\n")
    while data[offset] != Opcode.CHUNK:  # records: opcode (1 byte), length (8 bytes), body
        offset += 9 + int.from_bytes(data[offset + 1 : offset + 9], "little")
    length = int.from_bytes(data[offset + 1 : offset + 9], "little")
    data[offset + 9 + length // 2] ^= 0x01
    mcap.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_a_flipped_byte_in_an_image_is_caught_by_every_crc_checking_reader(tmp_path, compression):
    from rosbags.rosbag2 import Reader

    path = tmp_path / "ep"
    _write_episode(path, compression=compression)
    good = read_episode_bag(path, require_checksum=True)
    assert good.verified and len(good.content_sha256) == 64
    if compression == "none":
        _flip_byte_inside_an_image(path / "ep.mcap")
    else:
        _flip_byte_inside_the_first_chunk(path / "ep.mcap")
    with pytest.raises(EpisodeBagError, match=str(path)) as err:
        read_episode_bag(path)
    # Raw pixels: the chunk CRC names it. Compressed: the decompressor may refuse the chunk first.
    assert err.value.reason in (("checksum",) if compression == "none" else ("checksum", "corrupt"))
    with Reader(path) as reader, pytest.raises(Exception):  # noqa: B017 (rosbags raises several types)
        list(reader.messages())
    if compression == "none":
        from mcap.reader import make_reader
        from mcap.stream_reader import CRCValidationError

        with open(path / "ep.mcap", "rb") as f, pytest.raises(CRCValidationError):
            list(make_reader(f, validate_crcs=True).iter_messages())


def test_compressed_bags_hold_the_same_messages_in_less_space(tmp_path):
    """Every compression gives the same content digest and arrays; rosbags reads each; zstd (the
    default) shrinks flat rendered-like frames many times over."""
    from rosbags.rosbag2 import Reader

    bags = {}
    for compression in ("none", "zstd", "lz4"):
        _write_episode(tmp_path / compression, decisions=20, compression=compression)
        bags[compression] = read_episode_bag(tmp_path / compression)
        with Reader(tmp_path / compression) as reader:
            assert sum(1 for _ in reader.messages()) == reader.message_count
    assert len({b.content_sha256 for b in bags.values()}) == 1
    for key, array in bags["none"].arrays.items():
        np.testing.assert_array_equal(bags["zstd"].arrays[key], array)
        np.testing.assert_array_equal(bags["lz4"].arrays[key], array)
    size = {c: (tmp_path / c / f"{c}.mcap").stat().st_size for c in bags}
    assert size["zstd"] * 5 < size["none"] and size["lz4"] < size["none"]
    with pytest.raises(ValueError, match="bag compression must be one of"):
        EpisodeBagWriter(tmp_path / "bad", compression="gzip")
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".partial" / "bad").exists()


def test_the_content_digest_is_the_bags_identity(tmp_path):
    """Same messages -> same digest whatever the bag's name; a changed message -> another digest; a
    tampered digest in the metadata is caught."""
    a, b = tmp_path / "a", tmp_path / "b"
    _write_episode(a)
    _write_episode(b)
    assert read_episode_bag(a).content_sha256 == read_episode_bag(b).content_sha256
    with EpisodeBagWriter(tmp_path / "c") as w:
        w.write(topics.REWARD.name, 5, topics.float32_msg(1.0))
    with EpisodeBagWriter(tmp_path / "d") as w:
        w.write(topics.REWARD.name, 5, topics.float32_msg(2.0))
    assert read_episode_bag(tmp_path / "c").content_sha256 != read_episode_bag(tmp_path / "d").content_sha256
    meta = a / "metadata.yaml"
    digest = read_episode_bag(a).content_sha256
    meta.write_text(meta.read_text().replace(digest, "0" * 64))
    with pytest.raises(EpisodeBagError, match="content checksum mismatch"):
        read_episode_bag(a)


def test_records_stream_is_in_log_time_order(tmp_path):
    path = tmp_path / "ep"
    _write_episode(path, decisions=3)
    bag = read_episode_bag(path)
    times = [t for _, t, _ in bag.records]
    assert times == sorted(times) and len(bag.records) == sum(len(v) for v in bag.messages.values())
    assert bag.records[0][0] == topics.EPISODE.name and bag.records[-1][0] == topics.EPISODE.name


def test_bags_without_a_digest_are_refused_only_when_checksums_are_required(tmp_path):
    path = tmp_path / "ep"
    _write_episode(path)
    from ruamel.yaml import YAML

    meta = path / "metadata.yaml"
    yaml = YAML(typ="safe")
    info = yaml.load(meta.read_text())
    del info["rosbag2_bagfile_information"]["custom_data"]["fowm_integrity"]
    with open(meta, "w") as f:
        yaml.dump(info, f)
    assert not read_episode_bag(path).verified
    with pytest.raises(EpisodeBagError, match="no content checksum") as err:
        read_episode_bag(path, require_checksum=True)
    assert err.value.reason == "unchecked"
