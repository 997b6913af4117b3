"""fowm-pretrain as a process: bags in, losses, checkpoints, weights and a summary out; an
interrupted run (SIGKILL or SIGTERM) resumes to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fowm_core.metrics import read_jsonl
from fowm_core.weights import load_weights

TINY = [
    "model.latent_dim=8",
    "model.mlp_dim=32",
    "model.state_enc_dim=16",
    "model.num_channels=4",
    "optim.batch_size=8",
]
UPDATES = 80


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from fowm_sim.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("bags") / "reach"
    collect(
        CollectConfig(output=out, task="reach", episodes=3, seed=0, image_width=160, image_height=120),
        progress=False,
    )
    return out


def _args(dataset: Path, out: Path, compiled: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fowm_trainer.pretrain",
        "--bags",
        str(dataset),
        "--output",
        str(out),
        "--image-size",
        "48",
        "--image-crop",  # empty: the centre square of the small test frames
        "--updates",
        str(UPDATES),
        "--checkpoint-every",
        "10",
        "--log-every",
        "5",
        "--no-progress",
        "--set",
        *TINY,
        f"optim.compile={str(compiled).lower()}",  # off unless asked: 80 updates do not repay a compile
    ]


def _run(dataset: Path, out: Path, compiled: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(_args(dataset, out, compiled), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _start_and_interrupt(dataset: Path, out: Path, sig: signal.Signals, compiled: bool = False) -> int:
    """Start a run and send `sig` once its first checkpoint exists; returns its exit code."""
    proc = subprocess.Popen(_args(dataset, out, compiled), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, (
            f"finished before the interruption:\n{proc.stdout.read().decode()[-2000:]}"
        )
        proc.send_signal(sig)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_weights(path).tensors


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, _run(dataset, out)


def test_pretrain_writes_weights_summary_and_every_loss(reference):
    out, result = reference
    assert f"{UPDATES} updates on 3 episodes (75 transitions)" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["updates"] == UPDATES and summary["bags"] == 3 and summary["skipped_bags"] == {}
    assert Path(summary["weights"]).is_file() and len(summary["weights_sha256"]) == 64
    rows = read_jsonl(out / "tensorboard" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(5, UPDATES + 1, 5))
    for loss in ("consistency_loss", "reward_loss", "q_loss", "v_loss", "pi_loss", "total_loss"):
        assert all(r[f"offline/{loss}"] is not None for r in rows), loss
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_interrupted_pretraining_resumes_exactly(dataset, reference, tmp_path, sig):
    reference, _ = reference
    out = tmp_path / "interrupted"
    code = _start_and_interrupt(dataset, out, sig)
    if sig == signal.SIGTERM:
        assert code == 130  # checkpointed at the update in flight, then exited
        partial = json.loads((out / "summary.json").read_text())
        assert partial["interrupted"] == "SIGTERM" and 0 < partial["updates"] < UPDATES
    else:
        assert code == -signal.SIGKILL
    _run(dataset, out)
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["resumed_from"] < UPDATES and summary["updates"] == UPDATES
    want, got = _tensors(reference / "weights.safetensors"), _tensors(out / "weights.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)
    # Same batches: every logged loss of the resumed run equals the uninterrupted run's.
    assert read_jsonl(out / "tensorboard" / "metrics.jsonl") == read_jsonl(
        reference / "tensorboard" / "metrics.jsonl"
    )


def test_compiled_pretraining_resumes_exactly(dataset, tmp_path):
    """`optim.compile` (the realtime-cpu default) keeps the exact resume: the resumed process compiles
    the same graphs, so a SIGKILLed run ends with the uninterrupted run's weights, bit for bit."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    _run(dataset, reference, compiled=True)
    assert _start_and_interrupt(dataset, resumed, signal.SIGKILL, compiled=True) == -signal.SIGKILL
    _run(dataset, resumed, compiled=True)
    assert json.loads((resumed / "summary.json").read_text())["fowm_config"]["optim"]["compile"] is True
    assert 0 < json.loads((resumed / "summary.json").read_text())["resumed_from"] < UPDATES
    want, got = _tensors(reference / "weights.safetensors"), _tensors(resumed / "weights.safetensors")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)


def test_online_trainer_starts_from_the_pretraining_checkpoint(reference):
    """The trainer node's init_checkpoint: fowm-pretrain's weights with its Adam moments and update
    count (the official online phase continues its offline agent), or the weights with new
    optimisers under schedule.fresh_online_optimisers; init_weights must hold the same model."""
    from fowm_core.config import load_config, parse_overrides
    from fowm_trainer.ingest import observation_spec
    from fowm_trainer.online import OnlineTrainer
    from fowm_xarm.observation import ObservationConfig

    out, _ = reference
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["training_state"]
    spec = observation_spec(ObservationConfig(image_size=48, crop=None))
    for fresh in (False, True):
        overrides = [*TINY, "optim.compile=false", f"schedule.fresh_online_optimisers={str(fresh).lower()}"]
        cfg = load_config("realtime-cpu", parse_overrides(overrides))
        trainer = OnlineTrainer(cfg, spec, [], online_capacity=100)
        assert trainer.load_pretrained(out / "checkpoint.pt") is not fresh
        assert trainer.agent.num_updates == UPDATES
        trainer.check_weights_equal(out / "weights.safetensors")  # what the planner starts from
        moments = trainer.agent.model_optim.state_dict()["state"]
        if fresh:
            assert moments == {}
        else:
            assert torch.equal(moments[0]["exp_avg"], saved["model_optim"]["state"][0]["exp_avg"])
            assert moments[0]["exp_avg"].abs().sum() > 0
    untrained = OnlineTrainer(cfg, spec, [], online_capacity=100)
    with pytest.raises(ValueError, match="hold different weights"):
        untrained.check_weights_equal(out / "weights.safetensors")
    untrained.load_weights(out / "weights.safetensors")  # init_weights alone: the weights, new optimisers
    untrained.check_weights_equal(out / "weights.safetensors")
    assert untrained.agent.num_updates == 0 and untrained.agent.model_optim.state_dict()["state"] == {}
