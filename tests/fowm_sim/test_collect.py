"""fowm-collect end to end: the dataset opens with independent tools and is a faithful record."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fowm_xarm import topics

DECISIONS = 25


def _run_collect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fowm_sim.collect", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "reach_mixed"
    result = _run_collect(
        "--output",
        str(out),
        "--task",
        "reach",
        "--preset",
        "mixed",
        "--episodes",
        "2",
        "--image-size",
        "160x120",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_dataset_opens_with_the_independent_mcap_reader(mixed_dataset):
    from mcap.reader import make_reader

    out, stdout = mixed_dataset
    assert "recording speed" in stdout and "success rate" in stdout
    bags = sorted(p for p in out.iterdir() if p.is_dir())
    assert [b.name for b in bags] == ["episode_000000", "episode_000001"]
    for bag in bags:
        counts: dict[str, int] = {}
        with open(bag / f"{bag.name}.mcap", "rb") as f:
            for schema, channel, _ in make_reader(f).iter_messages():
                assert schema.name == topics.TOPICS_BY_NAME[channel.topic].msgtype
                counts[channel.topic] = counts.get(channel.topic, 0) + 1
        obs, act = DECISIONS + 1, DECISIONS
        assert counts == {
            topics.IMAGE.name: obs,
            topics.CAMERA_INFO.name: obs,
            topics.JOINT_STATES.name: obs,
            topics.ACTION.name: act,
            topics.JOINT_TRAJECTORY.name: act,
            topics.GRIPPER_COMMAND.name: act,
            topics.REWARD.name: act,
            topics.EPISODE.name: 2,
        }


def test_summary_reports_success_and_speed(mixed_dataset):
    out, _ = mixed_dataset
    summary = json.loads((out / "collect_summary.json").read_text())
    assert summary["episodes"] == 2 and summary["steps"] == 2 * DECISIONS
    assert 0.0 <= summary["success_rate"] <= 1.0
    assert summary["episodes_per_s"] > 0 and summary["steps_per_s"] > 0
    # "mixed" spreads episodes over noise levels: the first two levels are used, in order.
    assert [e["noise"] for e in summary["episode_list"]] == [0.0, 0.3]
    assert [e["seed"] for e in summary["episode_list"]] == [0, 1]


def test_bag_is_a_faithful_record_of_the_sim(mixed_dataset):
    """Replaying the recorded commands in a fresh env reproduces the recorded states and rewards."""
    from fowm_sim.env import XArmTaskEnv
    from fowm_xarm.episode_bag import read_episode_bag

    out, _ = mixed_dataset
    bag = read_episode_bag(out / "episode_000001")
    assert bag.metadata["seed"] == 1 and bag.metadata["noise"] == 0.3 and bag.metadata["task"] == "reach"
    assert bag.arrays["image"].shape == (DECISIONS + 1, 120, 160, 3)
    assert bag.camera_info["width"] == 160 and bag.camera_info["height"] == 120
    assert [e.event for e in bag.events] == ["start", "end"]
    assert bag.events[1].success == bag.metadata["success"]
    assert bag.events[1].episode_return == pytest.approx(float(bag.arrays["reward"].sum()), abs=1e-4)
    # The actions the expert took stay in the action box, and the commands came from them.
    assert np.all(np.abs(bag.arrays["action"]) <= 1.0)

    env = XArmTaskEnv("reach")
    try:
        env.reset(seed=bag.metadata["seed"])
        np.testing.assert_allclose(env.joint_positions(), bag.arrays["joint_position"][0, :7], atol=1e-9)
        for k in range(DECISIONS):
            target = bag.arrays["joint_target"][k]
            _, reward, _, _, _ = env.step_joint_targets(target, float(bag.arrays["gripper_command"][k]))
            np.testing.assert_allclose(
                env.joint_positions(), bag.arrays["joint_position"][k + 1, :7], atol=1e-6
            )
            assert reward == pytest.approx(float(bag.arrays["reward"][k]), abs=1e-5)
    finally:
        env.close()


def test_collect_refuses_bad_arguments(tmp_path, mixed_dataset):
    out, _ = mixed_dataset
    result = _run_collect("--output", str(out), "--episodes", "1")
    assert result.returncode == 2 and "not empty" in result.stderr
    result = _run_collect("--output", str(tmp_path / "x"), "--image-size", "big")
    assert result.returncode == 2 and "640x480" in result.stderr
    result = _run_collect("--output", str(tmp_path / "y"), "--episodes", "0")
    assert result.returncode == 2 and "episodes must be >= 1" in result.stderr
