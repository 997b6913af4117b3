"""Bag ingestion: bags become the same episodes as the stream they hold, bad bags are named and
skipped, nothing is ingested twice, and a fowm-collect bag equals the in-process episode."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from trainer_streams import OBS_CONFIG, Stream, frame, jittered_episode, records

from fowm_trainer.assembler import EpisodeAssembler
from fowm_trainer.ingest import BagIngestor
from fowm_xarm import topics
from fowm_xarm.episode_bag import EpisodeBagError, EpisodeBagWriter


def write_bag(
    path: Path, stream: Stream, drop_topic: str | None = None, compression: str = "zstd"
) -> Path:
    with EpisodeBagWriter(path, dict(task="reach", source="test"), compression=compression) as w:
        for topic, log, data in stream.sorted():
            if topic != drop_topic:
                w.write(topic, log, data)
    return path


def _assemble_in_memory(stream: Stream):
    asm = EpisodeAssembler(OBS_CONFIG)
    out = []
    for topic, log, msg in records(stream):
        out += asm.feed(topic, log, msg)
    return out + asm.flush()


def test_a_bag_gives_the_episode_of_its_stream(tmp_path):
    stream = jittered_episode(steps=6)
    write_bag(tmp_path / "data" / "ep0", stream)
    report = BagIngestor(OBS_CONFIG).scan(tmp_path / "data")
    assert report.errors == {} and len(report.episodes) == 1
    (from_bag,), (in_memory,) = report.episodes, _assemble_in_memory(stream)
    for k in in_memory.obs:
        np.testing.assert_array_equal(from_bag.obs[k], in_memory.obs[k])
    np.testing.assert_array_equal(from_bag.action, in_memory.action)
    np.testing.assert_array_equal(from_bag.reward, in_memory.reward)
    assert from_bag.info["bag_sha256"] == report.bags[0].identity


def _flip_in_image(mcap: Path, k: int) -> None:
    data = bytearray(mcap.read_bytes())
    at = data.find(frame(k).tobytes())
    assert at > 0
    data[at + 500] ^= 0x10
    mcap.write_bytes(bytes(data))


def test_each_kind_of_bad_bag_gets_its_own_error_and_the_rest_load(tmp_path):
    data = tmp_path / "data"
    for i in range(6):
        write_bag(
            data / f"ep{i}",
            jittered_episode(episode=i, steps=4),
            drop_topic=topics.REWARD.name if i == 4 else None,
            compression="none" if i == 1 else "zstd",  # ep1's pixels are flipped in place below
        )
    _flip_in_image(data / "ep1" / "ep1.mcap", 2)
    mcap = data / "ep2" / "ep2.mcap"
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size * 2 // 3])
    (data / "ep3" / "ep3.mcap").write_bytes(np.random.default_rng(0).bytes(4096))
    report = BagIngestor(OBS_CONFIG).scan(data)
    assert [b.path.name for b in report.bags] == ["ep0", "ep5"]
    errors = {Path(k).name: v for k, v in report.errors.items()}
    assert sorted(errors) == ["ep1", "ep2", "ep3", "ep4"]
    assert "checksum mismatch" in errors["ep1"] and str(data / "ep1") in errors["ep1"]
    assert "truncated" in errors["ep2"]
    assert "not an MCAP file" in errors["ep3"] and "garbage" in errors["ep3"]
    assert topics.REWARD.name in errors["ep4"] and "missing" in errors["ep4"]
    with pytest.raises(EpisodeBagError) as err:
        BagIngestor(OBS_CONFIG).ingest_bag(data / "ep1")
    assert err.value.reason == "checksum"


def test_nothing_is_ingested_twice(tmp_path):
    data = tmp_path / "data"
    write_bag(data / "ep0", jittered_episode(episode=0, steps=4))
    ingestor = BagIngestor(OBS_CONFIG)
    assert len(ingestor.scan(data).episodes) == 1
    shutil.copytree(data / "ep0", data / "ep0_copy")  # same content under another name
    write_bag(data / "ep1", jittered_episode(episode=1, steps=3))
    report = ingestor.scan(data)
    assert [b.path.name for b in report.bags] == ["ep1"]
    assert sorted(Path(p).name for p in report.duplicates) == ["ep0", "ep0_copy"]
    # A restarted ingestor that was given the recorded identities skips them too.
    again = BagIngestor(OBS_CONFIG)
    again.ingested = dict(ingestor.ingested)
    assert again.scan(data).bags == []


def test_collect_bag_equals_the_in_process_episode(tmp_path):
    """A fowm-collect bag at 640x480, ingested, gives byte-equal preprocessed images, the same states,
    actions and rewards as running the same seed in-process through the gym env."""
    from fowm_sim.collect import CollectConfig, collect
    from fowm_sim.config import SimConfig
    from fowm_sim.env import XArmTaskEnv
    from fowm_sim.experts import scripted_expert

    out = tmp_path / "reach"
    collect(CollectConfig(output=out, task="reach", preset="medium", episodes=1, seed=3), progress=False)
    env = XArmTaskEnv("reach", SimConfig(task="reach"))
    try:
        report = BagIngestor(env.observation_config).scan(out)
        assert report.errors == {}
        (ingested,) = report.episodes
        rng, expert = np.random.default_rng(3), scripted_expert("reach")
        obs, _ = env.reset(seed=3)
        observations, actions, rewards = [obs], [], []
        done = False
        while not done:
            action = expert(env, rng, 0.6)
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            done = terminated or truncated
    finally:
        env.close()
    assert len(ingested) == len(actions) == 25
    np.testing.assert_array_equal(ingested.obs["rgb"], np.stack([o["rgb"] for o in observations]))
    np.testing.assert_array_equal(ingested.obs["state"], np.stack([o["state"] for o in observations]))
    np.testing.assert_array_equal(ingested.action, np.stack(actions).astype(np.float32))
    np.testing.assert_array_equal(ingested.reward, np.asarray(rewards, np.float32))
    assert ingested.truncated and not ingested.terminated
    assert ingested.info["fallback_steps"] == 0  # every action named its observation


@pytest.mark.ros
def test_the_same_stream_live_over_dds_gives_the_same_episode(ros_node, ros_processes, tmp_path):
    """The jittered stream as a bag, ingested, equals the same bag replayed on the topics (fowm bag
    player, another process) and assembled by the live feed from receive times."""
    from fowm_testing import spin_until
    from fowm_trainer.live_feed import LiveEpisodeFeed

    stream = jittered_episode(steps=6, stamped=True)
    bag = write_bag(tmp_path / "data" / "ep0", stream)
    (from_bag,) = BagIngestor(OBS_CONFIG).scan(tmp_path / "data").episodes
    live, errors = [], []
    LiveEpisodeFeed(ros_node, EpisodeAssembler(OBS_CONFIG), live.append, errors.append)
    ros_processes.start(
        [sys.executable, "-m", "fowm_trainer.bag_play", str(bag), "--wait-subscribers", "1"], "player"
    )
    assert spin_until(ros_node, lambda: live or errors, 60), ros_processes.log("player")
    assert errors == [] and len(live) == 1
    (from_topics,) = live
    assert from_topics.info["obs_stamps_ns"] == from_bag.info["obs_stamps_ns"]
    for k in from_bag.obs:
        np.testing.assert_array_equal(from_topics.obs[k], from_bag.obs[k])
    np.testing.assert_array_equal(from_topics.action, from_bag.action)
    np.testing.assert_array_equal(from_topics.reward, from_bag.reward)
    assert from_topics.info["fallback_steps"] == from_bag.info["fallback_steps"] == 1
