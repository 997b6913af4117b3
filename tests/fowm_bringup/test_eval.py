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


def test_a_finished_run_is_redone_when_its_preset_file_or_sim_changes(tmp_path, monkeypatch):
    """Reuse is keyed on the options, the resolved fowm_core config and the sim config: editing the
    preset YAML a run was made with, or a sim default, must not return the old result. (run_task,
    hours at the real budget, is replaced by a recorder: what is tested is which runs `run_one`
    starts.)"""
    from dataclasses import replace

    import yaml

    from fowm_bringup import eval as ev
    from fowm_core.config import config_to_dict, load_config

    started: list[float] = []

    def fake_run_task(task, demo, out):
        started.append(ev.resolved_config(demo, task).planner.temperature)
        return {"task": task, "data_success_rate": 1.0, "updates": 0}

    monkeypatch.setattr(ev, "run_task", fake_run_task)
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump(config_to_dict(load_config("realtime-cpu"))))
    cfg = EvalConfig(tasks=("reach",), modes=("fowm",), seeds=(1,), preset=str(preset), out=str(tmp_path))
    first = ev.run_one(cfg, "reach", "fowm", 1)
    kept = ev.run_one(cfg, "reach", "fowm", 1)
    assert started == [0.5] and kept["wall_time_s"] == first["wall_time_s"]  # same config: reused
    edited = yaml.safe_load(preset.read_text())
    edited["planner"]["temperature"] = 2.0
    preset.write_text(yaml.safe_dump(edited))
    again = ev.run_one(cfg, "reach", "fowm", 1)
    assert started == [0.5, 2.0] and again["fowm_config"]["planner"]["temperature"] == 2.0
    # the sim's config counts too (e.g. push's reward coefficient changed between code versions)
    real_sim_config = ev.sim_config
    monkeypatch.setattr(
        ev, "sim_config", lambda task, demo: replace(real_sim_config(task, demo), push_action_penalty=0.15)
    )
    assert ev.run_one(cfg, "reach", "fowm", 1)["sim_config"]["push_action_penalty"] == 0.15
    assert started == [0.5, 2.0, 2.0]
    # and so does the code: a run made by other code is made again
    monkeypatch.setattr(ev, "code_version", lambda: "another-version")
    assert ev.run_one(cfg, "reach", "fowm", 1)["code_version"] == "another-version"
    assert ev.run_one(cfg, "reach", "fowm", 1)["code_version"] == "another-version"  # then reused
    assert started == [0.5, 2.0, 2.0, 2.0]


def test_the_code_version_follows_code_presets_and_models_not_docs(tmp_path, monkeypatch):
    from fowm_bringup import eval as ev

    pkg = tmp_path / "fake_fowm_pkg"
    (pkg / "presets").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("")
    (pkg / "presets" / "p.yaml").write_text("a: 1\n")
    (pkg / "README.md").write_text("docs\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(ev, "CODE_MODULES", ("fake_fowm_pkg.mod",))
    versions = [ev.code_version()]
    (pkg / "README.md").write_text("other docs\n")
    versions.append(ev.code_version())
    assert versions[1] == versions[0]
    for name, text in (("presets/p.yaml", "a: 2\n"), ("__init__.py", "X = 1\n"), ("scene.xml", "<mujoco/>")):
        (pkg / name).write_text(text)
        versions.append(ev.code_version())
        assert versions[-1] != versions[-2], name


def test_an_invocation_labels_its_runs_with_the_code_it_started_with(tmp_path, monkeypatch):
    """Files edited while `make eval` runs (hours) must not relabel its later runs with code the
    process never imported: the code version is read once, when the invocation starts, and stored
    with every run it makes and in its summary."""
    from fowm_bringup import eval as ev

    versions = iter(f"v{i}" for i in range(1, 100))  # a new version at every read: an edit each time
    monkeypatch.setattr(ev, "code_version", lambda: next(versions))
    phase = {"success_rate": 0.5, "return": -1.0}

    def fake_run_task(task, demo, out):
        return {"task": task, "data_success_rate": 1.0, "updates": 0, **{p: phase for p in ev.PHASES}}

    monkeypatch.setattr(ev, "run_task", fake_run_task)
    args = ["--task", "reach", "--mode", "fowm", "--seeds", "1", "2", "--out", str(tmp_path), "--no-progress"]
    assert ev.main(args) == 0
    runs = [json.loads((tmp_path / "runs" / f"reach-fowm-s{s}" / "result.json").read_text()) for s in (1, 2)]
    assert [r["code_version"] for r in runs] == ["v1", "v1"]
    assert json.loads((tmp_path / "summary.json").read_text())["code_version"] == "v1"
