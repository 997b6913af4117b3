"""`make demo`: FOWM learns an xArm sim task offline-to-online through the ROS 2 node stack.

Stages, each a real product path (what runs on the xArm runs here against the MuJoCo sim node):
1. collect: `fowm-collect` records scripted "medium" demonstrations, one rosbag2 (MCAP) per episode;
2. pretrain: `fowm-pretrain` learns the world model offline from those bags;
3. online: the `sim` node graph (sim node in lockstep, planner, recorder, trainer) starts from the
   pretrained weights; the planner acts with exploration noise, the recorder writes one bag per
   episode, the trainer ingests each bag, trains and pushes signed weights, and the planner commits
   them between episodes (it pauses at each episode's end until this orchestrator calls ~/start,
   once the trainer's new version is in, or straight away once the trainer is gone);
4. evaluate: the `planner` graph (sim + planner, no exploration) on held-out seeds with the final
   weights, the pretrained weights and a uniformly random policy (the planner's policy:=random,
   through the same command path and safety layer);
5. report: a printed table, summary.json, learning_curves.png, eval.gif (an evaluation episode
   from the camera topic), the weights and TensorBoard logs, all under --out.

Nodes are started from fowm_bringup.graph's descriptions (as `python -m fowm_bringup.run` does);
this process only watches (/fowm/episode, /diagnostics, the camera) and calls the planner's
services. --kill-trainer-after N SIGKILLs the trainer after N online episodes: the planner keeps
commanding with its last weights, and the run reports it.

    python -m fowm_bringup.ros_demo --task reach
    python -m fowm_bringup.ros_demo --online-episodes 3 --set optim.batch_size=32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fowm_bringup.graph import GRAPHS
from fowm_bringup.graph_session import GraphMonitor, GraphProcesses

EVAL_SEED_BASE = 10_000  # held-out: data uses seeds 0.., online episodes 1_000 + seed..
ONLINE_SEED_BASE = 1_000
ONLINE_GRAPH, EVAL_GRAPH = "sim", "planner"
PLANNER, TRAINER, SIM, RECORDER = "fowm_planner", "fowm_trainer", "fowm_sim", "fowm_recorder"
# Evaluations, in the table's order: "<weights>_prior" is the policy network alone (the planner node's
# policy:=prior), so a planner that spoils a good prior, or rescues a poor one, shows.
POLICIES = ("random", "pretrained", "pretrained_prior", "finetuned", "finetuned_prior")
# Disk a run needs: each recorded episode's bag holds its full 640x480 frames, zstd-compressed (the
# recorder's and fowm-collect's default): ~1 MB per demonstration (26 frames) and ~3 MB per online
# episode (~105 frames: the recorder keeps every camera frame), against 24 and 97 MB uncompressed
# (measured 2026-12-04), plus checkpoints, weights and logs.
BAG_BYTES_PER_EPISODE = 4e6
RUN_OVERHEAD_BYTES = 1e9


def default_pretrain_threads() -> int:
    """fowm-pretrain runs alone (collection has ended, no node is up yet), so it may use two cores:
    on a 2-core AMD EPYC (Zen 4) on 2026-12-04 a realtime-cpu pixel update (bf16, batch 64) took
    74 ms with 2 threads against 123 ms with 1 (1.65x). More than two was not measured."""
    return max(1, min(2, len(os.sched_getaffinity(0))))


@dataclass
class RosDemoConfig:
    """What the ROS demo runs; every field is a command-line option."""

    task: str = "reach"
    """Sim task: reach, push or lift."""
    preset: str = "realtime-cpu"
    """fowm_core preset (realtime-cpu fits a 2-core CPU; paper) or a config YAML path."""
    overrides: tuple[str, ...] = ()
    """Preset overrides as dotted key=value, e.g. ('optim.batch_size=32', 'model.mlp_dim=64')."""
    device: str = "auto"
    """Torch device of every node: auto (cuda when present, else the preset's), cpu or cuda."""
    offline_episodes: int = 200
    """Scripted 'medium' episodes recorded by fowm-collect (~22 MB of bags each: full 640x480 frames).
    From the camera, 40 episodes (40 goals) were memorised: their pretrained agent reached 95 % of
    the training goals and 55 % of held-out ones; with 200 the two agree (65-85 %, docs/experiments.md)."""
    offline_updates: int = 6000
    """Gradient updates of fowm-pretrain (6000: ~8 min on a 2-core CPU; 2500 gave a worse pretrained
    agent, 50 % / -3.09 against 60 % / -2.25 on reach)."""
    pretrain_threads: int = field(default_factory=default_pretrain_threads)
    """Torch threads of fowm-pretrain (default: 2, or 1 on a 1-core machine; every node uses one)."""
    online_episodes: int = 10
    """Episodes of online finetuning through the sim graph (0: evaluate the pretrained weights only)."""
    resume_optimisers: bool = False
    """Start the trainer from fowm-pretrain's checkpoint (`init_checkpoint`: its Adam state too, unless
    the config's schedule.fresh_online_optimisers), as the official code continues its offline agent;
    False (the sim graph's default, `pretrain_checkpoint:=''`): from the weights, with new optimisers.
    Measured on reach, one run each (docs/experiments.md): 60 % (-1.70) resumed against 80 % (-1.52) new."""
    eval_episodes: int = 10
    """Evaluation episodes per policy, on held-out seeds 10000, 10001, ..."""
    seed: int = 1
    """Seed of the agent (preset seed) and of the online episodes (1000 + seed + n)."""
    kill_trainer_after: int = -1
    """SIGKILL the trainer as this many online episodes have ended (-1: never), while it ingests and
    trains on the last one: the robot side must go on with the weights the planner has."""
    weights_timeout_s: float = 300.0
    """Longest wait for the trainer's next weights between two online episodes (then the next episode
    starts on the weights the planner has; e.g. when the trainer refused that episode's bag)."""
    episode_timeout_s: float = 900.0
    """Longest wait for one episode (node start-up included) before the run fails."""
    out: str = "artifacts/ros_demo"
    """Output directory (stages' outputs inside it are replaced on a rerun)."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        from fowm_core.config import parse_overrides
        from fowm_sim.config import TASKS

        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {self.task!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("offline_episodes", "offline_updates", "eval_episodes", "pretrain_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.online_episodes < 0:
            raise ValueError("--online-episodes must be >= 0")
        if self.kill_trainer_after != -1 and not 1 <= self.kill_trainer_after < self.online_episodes:
            raise ValueError("--kill-trainer-after must be -1 (never) or in 1 .. --online-episodes - 1")
        if not (self.weights_timeout_s > 0 and self.episode_timeout_s > 0):
            raise ValueError("timeouts must be > 0 s")
        parse_overrides(list(self.overrides))  # fail before any work if malformed


@dataclass(frozen=True)
class Layout:
    """Where each stage writes, under --out."""

    root: Path

    @property
    def offline_bags(self) -> Path:
        return self.root / "bags" / "offline"

    @property
    def online_bags(self) -> Path:
        return self.root / "bags" / "online"

    @property
    def pretrain(self) -> Path:
        return self.root / "pretrain"

    @property
    def trainer(self) -> Path:
        return self.root / "trainer"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        """The model config (preset + overrides + device) every node reads."""
        return self.root / "fowm_config.yaml"

    @property
    def key(self) -> Path:
        """The HMAC key that signs the trainer's pushes (generated per run)."""
        return self.root / "weights.key"


def stage(title: str) -> None:
    print(f"\n== {title}", flush=True)


def write_model_config(cfg: RosDemoConfig, path: Path) -> dict[str, Any]:
    """The preset with its section for the task, the --set overrides and the device, as one YAML file
    every node reads, so the pretrainer, trainer and planner build the same model."""
    import yaml

    from fowm_core.config import config_to_dict, load_config, parse_overrides

    overrides = parse_overrides([*cfg.overrides, f"seed={cfg.seed}"])
    if cfg.device == "auto":
        import torch

        if torch.cuda.is_available():
            overrides["device"] = "cuda"
    elif cfg.device:
        overrides["device"] = cfg.device
    data = config_to_dict(load_config(cfg.preset, overrides, task=cfg.task))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def run_cli(args: list[str], what: str) -> None:
    """A console entry point as a child process (its progress bar on our terminal)."""
    proc = subprocess.run([sys.executable, "-m", *args])
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed with exit code {proc.returncode}")


# -- stage 3: online finetuning through the sim graph --------------------------------------------


def planner_parameters(layout: Layout, weights: Path, task: str, **extra: Any) -> dict[str, Any]:
    """The planner node's parameters for this run. `task` only names the run's task in the node's
    startup log: the run's config file already holds the preset's section for it."""
    return {
        "preset": str(layout.config), "task": task, "weights_file": str(weights), "key_file": str(layout.key),
        "require_signature": True, "clock_mode": "lockstep", "use_sim_time": True, "autostart": False,
        **extra,
    }  # fmt: skip


def trainer_parameters(
    layout: Layout, weights: Path, task: str, resume_optimisers: bool = False
) -> dict[str, Any]:
    """The trainer node's parameters (fowm_trainer.trainer_node.TrainerNodeConfig) for this run: it
    starts from `weights` with new optimisers, or (`resume_optimisers`) from fowm-pretrain's
    checkpoint next to them, its Adam state included. `task` as in `planner_parameters`."""
    from fowm_trainer.pretrain import CHECKPOINT

    return {
        "preset": str(layout.config), "task": task, "offline_dirs": [str(layout.offline_bags)],
        "online_dir": str(layout.online_bags), "init_weights": str(weights), "key_file": str(layout.key),
        "init_checkpoint": str(weights.parent / CHECKPOINT) if resume_optimisers else "",
        "checkpoint": str(layout.trainer / "checkpoint.pt"), "planner_node": f"/{PLANNER}",
        "push_every": 0, "scan_period": 0.5, "threads": 1,
    }  # fmt: skip


def finetune_online(
    cfg: RosDemoConfig, layout: Layout, monitor: GraphMonitor, weights: Path
) -> dict[str, Any]:
    from tqdm import tqdm

    from fowm_core.metrics import MetricsLogger

    graph = GRAPHS.get(ONLINE_GRAPH)
    needed = {SIM, PLANNER, TRAINER, RECORDER}
    have = {n.name for n in graph.nodes} if graph else set()
    if not needed <= have:
        raise RuntimeError(
            f"the {ONLINE_GRAPH!r} graph has nodes {sorted(have)}; online finetuning needs {sorted(needed)}"
        )
    overrides = {
        SIM: {"task": cfg.task, "seed": ONLINE_SEED_BASE + cfg.seed, "clock_mode": "lockstep"},
        PLANNER: planner_parameters(layout, weights, cfg.task, explore=True, pause_after_episode=True),
        RECORDER: {"output_dir": str(layout.online_bags)},
        TRAINER: trainer_parameters(layout, weights, cfg.task, cfg.resume_optimisers),
    }
    episodes: list[dict[str, Any]] = []
    killed_after: int | None = None
    monitor.events.clear()
    procs = GraphProcesses(graph, overrides, layout.logs / "online")
    started = time.perf_counter()
    with procs, MetricsLogger(layout.root / "tensorboard" / "online") as logger:

        def check() -> None:
            procs.check_alive(ignore=(TRAINER,) if killed_after is not None else ())

        start_planner(monitor, cfg, check)
        bar = tqdm(range(cfg.online_episodes), desc="online episodes", disable=not cfg.progress)
        version = 0
        for i in bar:
            t0 = time.perf_counter()
            if not monitor.spin_until(lambda i=i: len(monitor.ended()) > i, cfg.episode_timeout_s, check):
                raise TimeoutError(f"online episode {i} did not end within {cfg.episode_timeout_s:.0f} s")
            end = monitor.ended()[i]
            row = dict(
                episode=i, seed=end.seed, success=bool(end.success), episode_return=float(end.episode_return),
                steps=end.steps, model_version=version, trainer_alive=procs.alive(TRAINER),
                wall_s=time.perf_counter() - t0,
            )  # fmt: skip
            if i + 1 == cfg.kill_trainer_after:
                procs.kill(TRAINER)
                killed_after = i + 1
                tqdm.write(f"killed the trainer (SIGKILL) after {killed_after} online episode(s)")
            # Between episodes (the planner paused at the end): the trainer ingests the bag, trains
            # and pushes; the planner commits the new version; then the next episode starts on it.
            # With the trainer gone the robot side goes on at once with the weights it has.
            t1 = time.perf_counter()
            if procs.alive(TRAINER) and not wait_for_version(monitor, version, cfg.weights_timeout_s, check):
                tqdm.write(f"no new weights within {cfg.weights_timeout_s:.0f} s; going on with v{version}")
            version = int(monitor.get_parameter(PLANNER, "model.version"))
            row["wait_for_weights_s"] = time.perf_counter() - t1
            monitor.spin_until(lambda: False, 1.2)  # one more diagnostics period: the trainer's counters
            row["trainer"] = dict(monitor.diagnostics.get(TRAINER, {})) if procs.alive(TRAINER) else {}
            if i + 1 < cfg.online_episodes:
                monitor.trigger(f"/{PLANNER}/start")
            episodes.append(row)
            scalars = {"return": row["episode_return"], "success": float(row["success"]),
                       "model_version": float(row["model_version"]),
                       "trainer_updates": float(row["trainer"].get("updates", "nan")),
                       **{k: float(v) for k, v in row["trainer"].items() if k.endswith("_loss")}}  # fmt: skip
            logger.log(i, scalars, prefix="online/")
            bar.set_postfix(ret=f"{row['episode_return']:.2f}", success=int(row["success"]), version=version)
        final_version = version

        def decided() -> int:  # decisions the planner's diagnostics report so far
            d = monitor.diagnostics.get(PLANNER, {})
            return int(d.get("decisions_plan", 0)) + int(d.get("decisions_policy", 0))

        monitor.spin_until(lambda: decided() >= sum(r["steps"] for r in episodes), 10.0)
        planner_diag = dict(monitor.diagnostics.get(PLANNER, {}))
        trainer_diag = episodes[-1]["trainer"] if episodes else {}
        final_sha = str(monitor.get_parameter(PLANNER, "model.sha256"))
        # The planner's final weights: the blob it committed last, as it came over /fowm/weights.
        final_weights = None
        if final_version > 0:
            monitor.spin_until(lambda: final_sha in monitor.weights, 30.0)
            if final_sha in monitor.weights:
                final_weights = layout.trainer / f"weights_v{final_version}.safetensors"
                final_weights.parent.mkdir(parents=True, exist_ok=True)
                final_weights.write_bytes(monitor.weights[final_sha])
    return dict(
        episodes=episodes,
        final_model_version=final_version,
        final_model_sha256=final_sha,
        planner_diagnostics=planner_diag,
        trainer_diagnostics=trainer_diag,
        trainer_killed_after=killed_after,
        episodes_after_kill=(cfg.online_episodes - killed_after) if killed_after is not None else 0,
        online_bags=sorted(p.name for p in layout.online_bags.glob("episode_*")),
        ingestion=ingestion_ledger(layout),
        final_weights=str(final_weights) if final_weights else None,
        wall_s=time.perf_counter() - started,
    )


def ingestion_ledger(layout: Layout) -> dict[str, Any]:
    """Which online bags the trainer's last checkpoint says it ingested (content identities), next
    to the bags the recorder wrote: each should be there exactly once."""
    from fowm_trainer.ingest import stored_digest

    ckpt = layout.trainer / "checkpoint.pt"
    if not ckpt.exists():
        return dict(checkpoint=None)
    from fowm_trainer.online import checkpoint_extra

    ingested = list(checkpoint_extra(ckpt)["ingested"])
    bags = {p.name: stored_digest(p) for p in sorted(layout.online_bags.glob("episode_*"))}
    return dict(
        checkpoint=str(ckpt),
        ingested=len(ingested),
        distinct=len(set(ingested)),
        bags=len(bags),
        bags_ingested_once={name: ingested.count(d) == 1 for name, d in bags.items()},
    )


def start_planner(monitor: GraphMonitor, cfg: RosDemoConfig, check: Any) -> None:
    """The planner starts (autostart: false) once it and the sim are connected, so the first
    episode's first command reaches the sim like every other."""
    if not monitor.wait_for_sim_matched(cfg.episode_timeout_s, check):
        raise TimeoutError(f"planner and sim not connected within {cfg.episode_timeout_s:.0f} s")
    monitor.trigger(f"/{PLANNER}/start", timeout_s=cfg.episode_timeout_s)


def wait_for_version(monitor: GraphMonitor, above: int, timeout_s: float, check: Any) -> bool:
    """Poll the planner's committed model.version (twice a second) until it exceeds `above`."""
    deadline = time.monotonic() + timeout_s
    while int(monitor.get_parameter(PLANNER, "model.version")) <= above:
        if time.monotonic() > deadline:
            return False
        monitor.spin_until(lambda: False, 0.5, check)
    return True


# -- stage 4: evaluation through the planner graph -------------------------------------------------


def evaluate_through_planner(
    cfg: RosDemoConfig,
    layout: Layout,
    monitor: GraphMonitor,
    label: str,
    weights: Path,
    policy: str = "plan",
    gif: Path | None = None,
) -> dict[str, Any]:
    """`eval_episodes` episodes of the planner graph on the held-out seeds, no exploration noise;
    with `gif`, the first episode as the camera topic showed it."""
    from tqdm import tqdm

    graph = GRAPHS[EVAL_GRAPH]
    overrides = {
        SIM: {"task": cfg.task, "seed": EVAL_SEED_BASE, "clock_mode": "lockstep"},
        PLANNER: planner_parameters(layout, weights, cfg.task, policy=policy, explore=False),
    }
    monitor.events.clear()
    monitor.capture(gif is not None)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with GraphProcesses(graph, overrides, layout.logs / f"eval_{label}") as procs:
        start_planner(monitor, cfg, procs.check_alive)
        for i in tqdm(range(cfg.eval_episodes), desc=f"evaluate {label}", disable=not cfg.progress):
            if not monitor.spin_until(
                lambda i=i: len(monitor.ended()) > i, cfg.episode_timeout_s, procs.check_alive
            ):
                raise TimeoutError(
                    f"evaluation episode {i} ({label}) did not end in {cfg.episode_timeout_s:.0f} s"
                )
            end = monitor.ended()[i]
            results.append(
                dict(seed=end.seed, success=bool(end.success), episode_return=float(end.episode_return))
            )
            if i == 0 and gif is not None:
                monitor.capture(False)
                # The episode's observations (reset + one per decision), in stamp order; a frame of
                # the next episode that arrived before its "end" event is cut off.
                frames = [monitor.frames[k] for k in sorted(monitor.frames)][: end.steps + 1]
                write_gif(gif, frames)
        diag = dict(monitor.diagnostics.get(PLANNER, {}))
    return dict(
        policy=label,
        weights=str(weights) if policy != "random" else None,
        success_rate=float(np.mean([r["success"] for r in results])),
        episode_return=float(np.mean([r["episode_return"] for r in results])),
        episodes=results,
        plan_latency_p50_ms=diag.get("plan_latency_p50_ms"),
        decisions_hold=diag.get("decisions_hold"),
        wall_s=time.perf_counter() - started,
    )


def write_gif(path: Path, frames: list[np.ndarray], period_s: float = 0.16) -> None:
    import imageio.v2 as imageio

    if frames:
        imageio.mimsave(path, frames, duration=period_s * 1000, loop=0)


# -- stage 5: report ----------------------------------------------------------------------------------


def plot_learning_curves(path: Path, summary: dict[str, Any], layout: Layout) -> Path:
    """Per online episode: return, success, the model version in use and the trainer's losses behind
    the weights pushed after it; and the losses of offline pretraining over its updates."""
    import matplotlib

    from fowm_core.metrics import read_jsonl

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
    online = (summary.get("online") or {}).get("episodes", [])
    xs = [r["episode"] for r in online]
    ax = axes[0]
    ax.plot(xs, [r["episode_return"] for r in online], ".-", label="return")
    ok = [r for r in online if r["success"]]
    ax.plot(
        [r["episode"] for r in ok], [r["episode_return"] for r in ok], "o", color="tab:green", label="success"
    )
    ax2 = ax.twinx()
    ax2.step(xs, [r["model_version"] for r in online], where="mid", color="tab:purple", label="model version")
    ax2.set_ylabel("model version in use")
    ax.set_title(f"{summary['config']['task']}: online episodes")
    ax.set_xlabel("online episode")
    # one legend for both y axes, below the plot, where it cannot hide an episode's marker
    (h1, l1), (h2, l2) = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=7)
    rows = read_jsonl(layout.pretrain / "tensorboard" / "metrics.jsonl")
    tags = sorted({k for r in rows for k in r if k.endswith("_loss") and "total" not in k})
    for tag in tags:
        pts = [(r["step"], r[tag]) for r in rows if isinstance(r.get(tag), int | float) and r[tag] > 0]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), ".-", markersize=3, label=tag.split("/")[-1])
    axes[1].set_title("offline pretraining (fowm-pretrain)")
    axes[1].set_xlabel("gradient updates")
    # The trainer node reports the mean losses of the updates behind each push in /diagnostics.
    losses = sorted(
        {k for r in online for k in r.get("trainer", {}) if k.endswith("_loss") and "total" not in k}
    )
    for tag in losses:
        pts = [(r["episode"], float(r["trainer"][tag])) for r in online if tag in r.get("trainer", {})]
        pts = [(x, y) for x, y in pts if y > 0]
        if pts:
            axes[2].plot(*zip(*pts, strict=True), ".-", label=tag)
    axes[2].set_title("online: trainer losses behind each push")
    axes[2].set_xlabel("online episode")
    for ax in axes[1:]:
        ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def print_table(summary: dict[str, Any]) -> None:
    seeds = f"{EVAL_SEED_BASE}..{EVAL_SEED_BASE + summary['config']['eval_episodes'] - 1}"
    print(f"\n{summary['config']['task']}: evaluation through the planner node on held-out seeds {seeds}")
    print(f"  {'policy':<17} {'success':>8} {'return':>8}   (_prior: the policy network alone, no planning)")
    for name in POLICIES:
        r = summary["evaluation"].get(name)
        if r:
            print(f"  {name:<17} {r['success_rate']:>8.0%} {r['episode_return']:>8.2f}")
    data = summary["data"]
    print(f"  (offline data: {data['episodes']} medium episodes, success {data['success_rate']:.0%})")
    online = summary.get("online")
    if online:
        versions = sorted({r["model_version"] for r in online["episodes"]})
        print(
            f"  online: {len(online['episodes'])} episodes on model versions {versions}, "
            f"final version {online['final_model_version']}"
        )
        if online["trainer_killed_after"] is not None:
            print(
                f"  trainer killed after episode {online['trainer_killed_after']}: the planner ran "
                f"{online['episodes_after_kill']} more episode(s) on its last weights"
            )


# -- main ---------------------------------------------------------------------------------------------


def check_disk_space(cfg: RosDemoConfig, root: Path) -> None:
    """Refuse to start a run whose bags would not fit on the output's disk, before any work (else the
    recorder fails halfway through, after minutes of collection or pretraining)."""
    episodes = cfg.offline_episodes + cfg.online_episodes  # each recorded as a bag
    need = episodes * BAG_BYTES_PER_EPISODE + RUN_OVERHEAD_BYTES
    free = shutil.disk_usage(root).free
    if free < need:
        raise RuntimeError(
            f"{root} has {free / 1e9:.1f} GB free; this run needs ~{need / 1e9:.1f} GB ({episodes} episode "
            f"bags of up to ~{BAG_BYTES_PER_EPISODE / 1e6:.0f} MB with full 640x480 frames, plus checkpoints "
            "and logs): free space, or use --out on a larger disk or fewer --offline-episodes"
        )


def run(cfg: RosDemoConfig) -> dict[str, Any]:
    import rclpy

    from fowm_core.weights import generate_key_file

    layout = Layout(Path(cfg.out))
    layout.root.mkdir(parents=True, exist_ok=True)
    for name in ("offline_bags", "online_bags", "pretrain", "trainer", "logs"):
        shutil.rmtree(getattr(layout, name), ignore_errors=True)  # a rerun starts afresh
    shutil.rmtree(layout.root / "tensorboard", ignore_errors=True)
    for name in ("key", "config"):
        getattr(layout, name).unlink(missing_ok=True)
    layout.online_bags.mkdir(parents=True)
    check_disk_space(cfg, layout.root)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    model_cfg = write_model_config(cfg, layout.config)
    generate_key_file(layout.key)
    quiet = [] if cfg.progress else ["--no-progress"]

    stage(f"1/5 collect {cfg.offline_episodes} medium demonstrations of {cfg.task} -> {layout.offline_bags}")
    t0 = time.perf_counter()
    run_cli(
        ["fowm_sim.collect", "--output", str(layout.offline_bags), "--task", cfg.task, "--preset", "medium",
         "--episodes", str(cfg.offline_episodes), "--seed", "0", *quiet],
        "fowm-collect",
    )  # fmt: skip
    timings["collect_s"] = time.perf_counter() - t0
    data = json.loads((layout.offline_bags / "collect_summary.json").read_text())

    stage(f"2/5 pretrain {cfg.offline_updates} updates from the bags -> {layout.pretrain}")
    t0 = time.perf_counter()
    run_cli(
        ["fowm_trainer.pretrain", "--bags", str(layout.offline_bags), "--output", str(layout.pretrain),
         "--preset", str(layout.config), "--updates", str(cfg.offline_updates),
         "--threads", str(cfg.pretrain_threads), "--log-every", str(min(50, cfg.offline_updates)),
         *quiet],
        "fowm-pretrain",
    )  # fmt: skip
    timings["pretrain_s"] = time.perf_counter() - t0
    pretrain = json.loads((layout.pretrain / "summary.json").read_text())
    pretrained_weights = layout.pretrain / "weights.safetensors"

    summary: dict[str, Any] = dict(
        config=asdict(cfg),
        device=model_cfg["device"],
        data=dict(episodes=data["episodes"], success_rate=data["success_rate"], steps=data["steps"]),
        pretrain=dict(updates=pretrain["updates"], last_losses=pretrain["last_losses"],
                      updates_per_s=pretrain["updates_per_s"], weights=str(pretrained_weights)),
        online=None,
        evaluation={},
    )  # fmt: skip
    rclpy.init()
    monitor = GraphMonitor()
    try:
        final_weights = pretrained_weights
        if cfg.online_episodes:
            stage(f"3/5 online finetuning: {cfg.online_episodes} episodes through the {ONLINE_GRAPH!r} graph")
            t0 = time.perf_counter()
            summary["online"] = online = finetune_online(cfg, layout, monitor, pretrained_weights)
            timings["online_s"] = time.perf_counter() - t0
            if online["final_weights"]:
                final_weights = Path(online["final_weights"])
        else:
            stage("3/5 online finetuning skipped (--online-episodes 0)")

        stage(f"4/5 evaluate on {cfg.eval_episodes} held-out seeds through the planner node")
        t0 = time.perf_counter()
        evaluation = summary["evaluation"]
        evaluation["random"] = evaluate_through_planner(
            cfg, layout, monitor, "random", pretrained_weights, "random"
        )
        gif = layout.root / "eval.gif"
        last = "finetuned" if cfg.online_episodes else "pretrained"
        evaluation["pretrained"] = evaluate_through_planner(
            cfg, layout, monitor, "pretrained", pretrained_weights, gif=gif if last == "pretrained" else None
        )
        evaluation["pretrained_prior"] = evaluate_through_planner(
            cfg, layout, monitor, "pretrained_prior", pretrained_weights, "prior"
        )
        if cfg.online_episodes:
            evaluation["finetuned"] = evaluate_through_planner(
                cfg, layout, monitor, "finetuned", final_weights, gif=gif
            )
            evaluation["finetuned_prior"] = evaluate_through_planner(
                cfg, layout, monitor, "finetuned_prior", final_weights, "prior"
            )
        timings["evaluate_s"] = time.perf_counter() - t0
    finally:
        monitor.close()
        rclpy.try_shutdown()

    stage("5/5 report")
    weights_out = layout.root / "weights.safetensors"
    shutil.copyfile(final_weights, weights_out)
    summary.update(
        weights=str(weights_out),
        video=str(layout.root / "eval.gif"),
        tensorboard=[str(layout.pretrain / "tensorboard"), str(layout.trainer)],
        timings_s=timings,
        wall_time_s=time.perf_counter() - started,
        machine=f"{os.cpu_count()} CPUs, device {model_cfg['device']}",
    )
    summary["learning_curves"] = str(
        plot_learning_curves(layout.root / "learning_curves.png", summary, layout)
    )
    (layout.root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print_table(summary)
    print(f"\nwrote {layout.root}/: summary.json, learning_curves.png, eval.gif, weights.safetensors, logs/")
    print(f"took {summary['wall_time_s'] / 60:.1f} min; TensorBoard: tensorboard --logdir {layout.root}")
    return summary


@contextlib.contextmanager
def own_ros_domain() -> Iterator[None]:
    """A ROS_DOMAIN_ID no other process on this machine holds (domain_coordinator's port lock), unless
    the caller chose one: two demos, or a demo and a test, must never see each other's nodes (same
    node and service names: one orchestrator would drive the other's planner)."""
    if os.environ.get("ROS_DOMAIN_ID"):
        yield
        return
    from domain_coordinator import domain_id

    with domain_id() as reserved:
        os.environ["ROS_DOMAIN_ID"] = str(reserved)
        print(f"ROS_DOMAIN_ID={reserved} (reserved for this run)", flush=True)
        yield


def parse_args(argv: list[str] | None = None) -> RosDemoConfig:
    d = RosDemoConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="make demo DEMO_ARGS=...")
    p.add_argument("--task", default=d.task, help="reach | push | lift")
    p.add_argument("--preset", default=d.preset, help="fowm_core preset: realtime-cpu | paper | path.yaml")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="preset overrides")
    p.add_argument("--device", default=d.device, help="auto (cuda when present) | cpu | cuda")
    for name in ("offline_episodes", "offline_updates", "pretrain_threads", "online_episodes",
                 "eval_episodes", "seed", "kill_trainer_after"):  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    p.add_argument(
        "--resume-optimisers",
        action="store_true",
        help="the trainer resumes fowm-pretrain's Adam state (its checkpoint.pt), as the official code",
    )
    p.add_argument("--weights-timeout-s", type=float, default=d.weights_timeout_s)
    p.add_argument("--episode-timeout-s", type=float, default=d.episode_timeout_s)
    p.add_argument("--out", default=d.out)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return RosDemoConfig(
        task=a.task, preset=a.preset, overrides=tuple(a.set), device=a.device,
        offline_episodes=a.offline_episodes, offline_updates=a.offline_updates,
        pretrain_threads=a.pretrain_threads, online_episodes=a.online_episodes,
        eval_episodes=a.eval_episodes, seed=a.seed, resume_optimisers=a.resume_optimisers,
        kill_trainer_after=a.kill_trainer_after, weights_timeout_s=a.weights_timeout_s,
        episode_timeout_s=a.episode_timeout_s, out=a.out, progress=not a.no_progress,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
    except ValueError as e:
        print(f"ros_demo: {e}", file=sys.stderr)
        return 2
    # Every node of the run: localhost discovery (a demo must not talk to robots on the network),
    # the shared-memory profile for 640x480 images, headless rendering, one thread per process
    # (fowm-pretrain, which runs alone, sets its own: --pretrain-threads).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    profile = Path(__file__).resolve().parent.parent / "config" / "fastdds.xml"
    if profile.is_file():
        os.environ.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so the graph's nodes are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        with own_ros_domain():
            run(cfg)
    except (RuntimeError, TimeoutError) as e:
        print(f"ros_demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the graph's nodes were stopped on the way out
        print("ros_demo: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
