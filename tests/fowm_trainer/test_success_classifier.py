"""The success classifier trained by fowm-train-success-classifier on labelled sim bags (push):
successful episodes from the scripted expert, failed ones from a decoy expert that pushes the cube
away from the goal (so failures show the same arm motion, not an idle arm). The accuracy that
matters is on held-out episodes, balanced over the two classes (most frames are negatives, so
plain accuracy rewards a classifier that always says "no")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fowm_sim import experts
from fowm_sim.collect import CollectConfig, collect
from fowm_trainer.success_classifier import (
    SuccessClassifierConfig,
    labelled_frames,
    load_classifier,
    main,
    split_episodes,
)

# Measured 2026-11-22 with this data (12 + 12 episodes), 2-core CPU, 1 torch thread: held-out
# balanced accuracy 0.86, 0.66, 0.95, 0.89 over split seeds 0..3 (plain accuracy 0.75..0.92). The
# misses are frames where the arm hides the cube from the single camera (a real limit, not noise).
# The test trains once with seed 0 and asserts the floor below.
MIN_HELD_OUT_BALANCED_ACCURACY = 0.75


def _decoy_expert(task: str):
    """The push expert aimed at the goal mirrored through the cube's start: the cube moves away."""
    policy = experts._POLICIES[task]

    def act(env, rng, noise=0.0):
        s = dict(env.task_state())
        for axis in "xy":
            s[f"goal_{axis}"] = 2 * s[f"cube_start_{axis}"] - s[f"goal_{axis}"]
        return np.clip(policy(env, s) + rng.normal(0.0, noise, 4), -1.0, 1.0).astype(np.float32)

    return act


@pytest.fixture(scope="module")
def labelled_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("success_bags")
    good = collect(
        CollectConfig(root / "expert", task="push", episodes=12, noise_levels=(0.0,)), progress=False
    )
    bad = collect(
        CollectConfig(root / "decoy", task="push", episodes=12, seed=100, noise_levels=(0.1,)),
        progress=False,
        expert_factory=_decoy_expert,
    )
    assert good["success_rate"] == 1.0 and bad["success_rate"] == 0.0
    return root


@pytest.fixture(scope="module")
def episodes(labelled_bags):
    from fowm_trainer.ingest import BagIngestor

    return BagIngestor().scan([labelled_bags / "expert", labelled_bags / "decoy"]).episodes


def test_labels_come_from_the_end_of_successful_episodes(episodes):
    cfg = SuccessClassifierConfig(positive_frames=5, ambiguous_frames=12)
    data = labelled_frames(episodes, cfg)
    n = len(episodes[0].obs["rgb"])  # 26 frames: 25 decisions + the final observation
    ok = [i for i, e in enumerate(episodes) if e.info["success"]]
    assert len(ok) == 12
    first = data.episode == ok[0]
    np.testing.assert_array_equal(data.labels[first], [1.0] * 5 + [0.0] * (n - 17))
    np.testing.assert_array_equal(data.frames[first][:5], episodes[ok[0]].obs["rgb"][-5:])
    assert data.labels[data.episode == next(i for i in range(24) if i not in ok)].sum() == 0
    train, held = split_episodes([e.info["success"] for e in episodes], SuccessClassifierConfig())
    assert set(train).isdisjoint(held) and len(held) == 6  # 3 successful + 3 failed held out


def test_trained_classifier_reaches_the_stated_held_out_accuracy(labelled_bags, episodes, tmp_path, capsys):
    out = tmp_path / "success.safetensors"
    args = ["--bags", str(labelled_bags / "expert"), str(labelled_bags / "decoy"), "--output", str(out)]
    assert main([*args, "--ambiguous-frames", "12", "--epochs", "60", "--seed", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    held = report["held_out"]
    assert report["episodes"] == {"train": 18, "held_out": 6}
    assert held["positives"] == 15 and held["frames"] == 15 + 3 * 9 + 3 * 26
    assert held["balanced_accuracy"] >= MIN_HELD_OUT_BALANCED_ACCURACY, report
    assert report["train"]["balanced_accuracy"] >= 0.85, report  # it learnt the training frames

    # The saved file reproduces the reported classifier.
    model, config, obs = load_classifier(out)
    assert config.ambiguous_frames == 12 and obs.image_size == 84
    data = labelled_frames(episodes, config)
    _, held_eps = split_episodes([e.info["success"] for e in episodes], config)
    mask = np.isin(data.episode, held_eps)
    pred = model.probability(data.frames[mask]) >= config.threshold
    assert np.mean(pred == (data.labels[mask] > 0.5)) == pytest.approx(held["accuracy"])


def test_cli_refuses_data_without_both_labels(labelled_bags, tmp_path):
    with pytest.raises(SystemExit):
        main(["--bags", str(labelled_bags / "expert"), "--output", str(tmp_path / "x.safetensors")])
