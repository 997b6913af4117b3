"""`make eval` at a test-sized budget: both modes run on the same data, the table, plot and summary
come from those runs, and a second invocation resumes from the finished runs instead of redoing
them. (The comparison itself is hours of CPU: its figures are in the README, not asserted here.)"""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v2 as imageio
import pytest

from fowm_bringup.eval import EvalConfig

ARGS = (
    "--task reach --seeds 5 --offline-episodes 2 --offline-updates 3 --online-episodes 1 --eval-episodes 1"
    " --set optim.compile=false"  # 28 updates do not repay a compile
)


def _eval(out) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "fowm_bringup.eval", *ARGS.split(), "--no-progress", "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_eval_compares_both_modes_on_the_same_data_and_resumes(tmp_path):
    run = _eval(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    runs = {r["mode"]: r for r in summary["runs"]}
    assert set(runs) == {"fowm", "tdmpc"}
    # Same seed: the same scripted demonstrations for both algorithms.
    assert runs["fowm"]["data_success_rate"] == runs["tdmpc"]["data_success_rate"]
    for r in runs.values():
        assert r["updates"] == 3 + 25  # offline updates + one per online step
    table = (tmp_path / "eval_table.md").read_text()
    assert "| reach | fowm |" in table and "| reach | tdmpc |" in table
    assert table in run.stdout
    assert imageio.imread(tmp_path / "eval.png").shape[0] > 100

    kept = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")}
    assert len(kept) == 2
    again = _eval(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished runs were reused, not redone
    assert (tmp_path / "eval_table.md").read_text() == table


def test_eval_rejects_bad_options_before_any_work():
    with pytest.raises(ValueError, match="--mode"):
        EvalConfig(modes=("dreamer",))
    with pytest.raises(ValueError, match="--task"):
        EvalConfig(tasks=("stack",))
    with pytest.raises(ValueError, match="--seeds"):
        EvalConfig(seeds=(1, 1))
