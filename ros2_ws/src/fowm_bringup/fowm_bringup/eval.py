"""`make eval`: FOWM vs the TD-MPC baseline on the sim tasks from the camera, as the paper compares them.

For every (task, mode, seed) it runs the in-process demo's `run_task` (same offline data per task
and seed for both modes: the scripted "medium" expert, camera + TCP/gripper observations), i.e.
offline pretraining, evaluation, online finetuning, evaluation, and records success and return on
the held-out seeds after each phase. Long: hours on a 2-core CPU at the default budget. Each finished
run is kept (`<out>/runs/<task>-<mode>-s<seed>/result.json`) and skipped on a rerun, so an
interrupted evaluation resumes where it stopped. Writes `<out>/eval_table.md` (the README's table),
`<out>/eval.png` and `<out>/summary.json`.

    python -m fowm_bringup.eval --task reach push lift --seeds 1 2 3
    python -m fowm_bringup.eval --task reach --seeds 1 --offline-updates 500 --online-episodes 2
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fowm_bringup.demo import DemoConfig, resolved_config, run_task, sim_config

MODES = ("fowm", "tdmpc")
PHASES = ("pretrained", "finetuned")
RUN_KEYS = ("task", "mode", "seed", "data_success_rate", "pretrained", "finetuned", "updates", "wall_time_s")
# A module of each package a run executes (a package's own __file__ can be a test folder's namespace
# package under pytest), and the files in those packages that decide its result (code, presets, MJCF).
CODE_MODULES = ("fowm_core.config", "fowm_sim.config", "fowm_xarm.topics", "fowm_bringup.demo")
CODE_SUFFIXES = (".py", ".yaml", ".xml")


def code_version() -> str:
    """A digest of the source files a run executes: every .py, .yaml and .xml file of the packages of
    CODE_MODULES, by relative path and content. A finished run is reused only by the same code
    version, so a table never mixes results of different code (docs and READMEs do not count)."""
    digest = hashlib.sha256()
    for name in CODE_MODULES:
        root = Path(importlib.import_module(name).__file__).parent
        for path in sorted(p for p in root.rglob("*") if p.suffix in CODE_SUFFIXES and p.is_file()):
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class EvalConfig:
    """What `make eval` runs; every field is a command-line option."""

    tasks: tuple[str, ...] = ("reach", "push", "lift")
    """Sim tasks."""
    modes: tuple[str, ...] = MODES
    """Algorithms compared: fowm and the tdmpc baseline."""
    seeds: tuple[int, ...] = (1, 2, 3)
    """Seeds: each seeds the data collection, the agent and the online episodes of one run."""
    preset: str = "realtime-cpu"
    """fowm_core preset for both modes."""
    overrides: tuple[str, ...] = ()
    """Preset overrides (key=value) for both modes, as make demo's --set."""
    # make demo's data and pretraining budget: with 40 demonstrations the camera model memorises its
    # 40 reach goals (docs/experiments.md, "Why 200 demonstrations"); ~16 min per run on a 2-core CPU.
    offline_episodes: int = 200
    offline_updates: int = 6000
    online_episodes: int = 10
    eval_episodes: int = 10
    threads: int = 1
    """torch threads (one per process on a small CPU)."""
    device: str = "auto"
    """auto (cuda when torch sees one, else the preset's device), cpu or cuda."""
    out: str = "artifacts/eval"
    progress: bool = True

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"--mode must be among {MODES}, got {list(self.modes)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct and non-empty, got {list(self.seeds)}")
        if self.threads < 1:
            raise ValueError("--threads must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        for task in self.tasks:  # fail before hours of work, with the demo's own validation
            self.demo_config(task, self.modes[0], self.seeds[0])

    def demo_config(self, task: str, mode: str, seed: int) -> DemoConfig:
        device = self.device
        if device == "auto":  # as make demo's --device auto: cuda when present, else the preset's
            import torch

            device = "cuda" if torch.cuda.is_available() else ""
        return DemoConfig(
            tasks=(task,),
            preset=self.preset,
            mode=mode,
            offline_episodes=self.offline_episodes,
            offline_updates=self.offline_updates,
            online_episodes=self.online_episodes,
            eval_episodes=self.eval_episodes,
            overrides=((f"device={device}",) if device else ()) + self.overrides,
            seed=seed,
            threads=self.threads,
            out=str(Path(self.out) / "runs" / f"{task}-{mode}-s{seed}"),
            progress=False,
        )


def run_one(cfg: EvalConfig, task: str, mode: str, seed: int, version: str | None = None) -> dict:
    """One run's result, from its result.json when an earlier invocation finished it with the same
    options, the same resolved fowm_core config, the same sim config and the same code version (an
    edited preset file, a sim default or any code change, e.g. push's reward, runs it again).
    `version`: the invocation's code version, read when it started (default: read now); files edited
    while an invocation runs must not relabel the runs it makes with code it already imported."""
    from fowm_core.config import config_to_dict

    demo = cfg.demo_config(task, mode, seed)
    out = Path(demo.out)
    done = out / "result.json"
    identity = {
        "demo_config": asdict(demo),
        "fowm_config": config_to_dict(resolved_config(demo, task)),
        "sim_config": asdict(sim_config(task, demo)),
        "code_version": code_version() if version is None else version,
    }
    if done.exists():
        kept = json.loads(done.read_text())
        changed = [k for k, v in identity.items() if kept.get(k) != json.loads(json.dumps(v))]  # as stored
        if not changed:
            return kept
        print(f"eval: {task} {mode} seed {seed}: rerun, its {', '.join(changed)} changed", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run_task(task, demo, out)
    result.update(mode=mode, seed=seed, wall_time_s=time.perf_counter() - t0, **identity)
    done.write_text(json.dumps(result, indent=2))
    return result


def aggregate(results: list[dict]) -> dict:
    """{task: {mode: {phase: {success_mean, success_std, return_mean, return_std, n}}}} over seeds."""
    table: dict = {}
    for r in results:
        cell = table.setdefault(r["task"], {}).setdefault(r["mode"], {p: [] for p in (*PHASES, "data")})
        for phase in PHASES:
            cell[phase].append((r[phase]["success_rate"], r[phase]["return"]))
        cell["data"].append((r["data_success_rate"], float("nan")))
    out: dict = {}
    for task, modes in table.items():
        for mode, phases in modes.items():
            for phase, pts in phases.items():
                s, g = np.array(pts, dtype=float).T
                out.setdefault(task, {}).setdefault(mode, {})[phase] = {
                    "success_mean": float(s.mean()),
                    "success_std": float(s.std()),
                    "return_mean": float(g.mean()),
                    "return_std": float(g.std()),
                    "n": len(pts),
                }
    return out


def markdown_table(agg: dict) -> str:
    lines = [
        "| task | mode | data success | after offline pretraining | after online finetuning | seeds |",
        "|---|---|---|---|---|---|",
    ]

    def cell(c: dict) -> str:
        return (
            f"{c['success_mean']:.0%} ± {c['success_std']:.0%} "
            f"({c['return_mean']:.2f} ± {c['return_std']:.2f})"
        )

    for task, modes in agg.items():
        for mode, ph in modes.items():
            lines.append(
                f"| {task} | {mode} | {ph['data']['success_mean']:.0%} | {cell(ph['pretrained'])} | "
                f"{cell(ph['finetuned'])} | {ph['pretrained']['n']} |"
            )
    return "\n".join(lines) + "\n"


def plot(agg: dict, path: Path) -> Path:
    """Success and return per task: fowm vs tdmpc, after pretraining and after finetuning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(agg)
    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 6.4), squeeze=False)
    width = 0.38
    for col, task in enumerate(tasks):
        for row, metric in enumerate(("success", "return")):
            ax = axes[row][col]
            for k, mode in enumerate(agg[task]):
                ph = agg[task][mode]
                means = [ph[p][f"{metric}_mean"] for p in PHASES]
                stds = [ph[p][f"{metric}_std"] for p in PHASES]
                xs = np.arange(len(PHASES)) + (k - 0.5) * width
                ax.bar(xs, means, width, yerr=stds, capsize=3, label=mode)
            ax.set_xticks(np.arange(len(PHASES)), ["offline", "offline + online"])
            ax.set_title(f"{task}: {'success rate' if metric == 'success' else 'return'}")
            if metric == "success":
                ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3, axis="y")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    d = EvalConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="make eval EVAL_ARGS=...")
    p.add_argument("--task", nargs="+", default=list(d.tasks), help="tasks: reach push lift")
    p.add_argument("--mode", nargs="+", default=list(d.modes), help="fowm tdmpc")
    p.add_argument("--seeds", nargs="+", type=int, default=list(d.seeds))
    p.add_argument("--preset", default=d.preset)
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="preset overrides for both modes, e.g. optim.compile=false",
    )  # fmt: skip
    for name in ("offline_episodes", "offline_updates", "online_episodes", "eval_episodes", "threads"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    p.add_argument("--device", default=d.device, help="auto (cuda when present) | cpu | cuda")
    p.add_argument("--out", default=d.out)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return EvalConfig(
        tasks=tuple(a.task),
        modes=tuple(a.mode),
        seeds=tuple(a.seeds),
        preset=a.preset,
        overrides=tuple(a.set),
        offline_episodes=a.offline_episodes,
        offline_updates=a.offline_updates,
        online_episodes=a.online_episodes,
        eval_episodes=a.eval_episodes,
        threads=a.threads,
        device=a.device,
        out=a.out,
        progress=not a.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    try:
        cfg = parse_args(argv)
    except ValueError as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(t, m, s) for t in cfg.tasks for s in cfg.seeds for m in cfg.modes]
    started = time.perf_counter()
    version = code_version()  # once: the code this process runs, whatever is edited meanwhile
    results = []
    bar = tqdm(runs, desc="make eval", unit="run", disable=not cfg.progress)
    for task, mode, seed in bar:
        bar.set_postfix_str(f"{task} {mode} seed {seed}")
        r = run_one(cfg, task, mode, seed, version)
        results.append(r)
        bar.write(
            f"{task:<5} {mode:<5} seed {seed}: data {r['data_success_rate']:.0%}, "
            f"pretrained {r['pretrained']['success_rate']:.0%} ({r['pretrained']['return']:.2f}), "
            f"finetuned {r['finetuned']['success_rate']:.0%} ({r['finetuned']['return']:.2f})"
        )
    agg = aggregate(results)
    table = markdown_table(agg)
    (out / "eval_table.md").write_text(table)
    png = plot(agg, out / "eval.png")
    summary = {
        "config": asdict(cfg),
        "aggregate": agg,
        "runs": [{k: r[k] for k in RUN_KEYS} for r in results],
        "wall_time_s_this_invocation": time.perf_counter() - started,
        "code_version": version,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nsuccess rate ± std over seeds (mean return ± std) on held-out seeds, planner acting:\n")
    print(table)
    print(f"wrote {out / 'eval_table.md'}, {png}, {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
