"""`make demo`'s entry point, short: every stage runs for real on the MuJoCo sim (rendered camera
observations, offline pretraining, evaluation, online finetuning, evaluation), leaves its artefacts,
and the world model fits the data (its losses fall).

Not asserted here: that the finetuned reach success beats the pretrained one. At a test-sized budget
(600 pixel updates) both are at or near zero on this CPU; the full demo's numbers are in the README."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v2 as imageio
import pytest

from fowm_core.metrics import read_jsonl
from fowm_core.weights import load_weights

UPDATES, ONLINE_EPISODES, EVAL_EPISODES = 600, 2, 4


@pytest.mark.slow
def test_short_demo_runs_every_stage_and_writes_its_artefacts(tmp_path):
    args = [
        "--task", "reach", "--offline-episodes", "20", "--offline-updates", str(UPDATES),
        "--online-episodes", str(ONLINE_EPISODES), "--eval-episodes", str(EVAL_EPISODES),
        "--no-progress", "--out", str(tmp_path),
    ]
    run = subprocess.run([sys.executable, "-m", "fowm_bringup.demo", *args],
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "after offline pretraining" in run.stdout and "after online finetuning" in run.stdout

    (result,) = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert result["task"] == "reach"
    assert result["updates"] == UPDATES + ONLINE_EPISODES * 25  # one update per online step (utd 1)
    for stage in ("random_policy", "pretrained", "finetuned"):
        assert result[stage]["episodes"] == EVAL_EPISODES
        assert 0.0 <= result[stage]["success_rate"] <= 1.0

    frames = imageio.mimread(tmp_path / "reach_eval.gif")
    assert len(frames) == 26 and frames[0].shape[:2] == (240, 320)  # reset + 25 decisions
    assert imageio.imread(tmp_path / "learning_curves.png").shape[0] > 100

    rows = read_jsonl(tmp_path / "tensorboard" / "reach" / "metrics.jsonl")
    tags = {tag for row in rows for tag in row}
    assert {"offline/consistency_loss", "online/return", "eval/success_rate"} <= tags
    # The world model fits the offline data: latent consistency and Q regression fall several-fold
    # from the first logged 100 updates to the last (a broken update leaves them flat or diverging).
    for tag in ("offline/consistency_loss", "offline/q_loss"):
        values = [row[tag] for row in rows if row.get(tag) is not None]
        assert values[-1] < 0.5 * values[0], (tag, values)
    assert list((tmp_path / "tensorboard" / "reach").glob("events.out.tfevents.*"))

    loaded = load_weights(tmp_path / "reach_weights.safetensors")
    assert loaded.metadata.num_updates == result["updates"]


def test_demo_rejects_a_bad_option(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "fowm_bringup.demo", "--task", "wipe", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    assert "--task must be among" in run.stderr
    assert not (tmp_path / "summary.json").exists()
