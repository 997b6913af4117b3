"""`make demo`: FOWM learns the xArm sim tasks offline-to-online, in one process.

For each task: collect scripted "medium" demonstrations in the MuJoCo sim (camera images
rendered, since the product plans from the camera), pretrain the world model offline,
evaluate, finetune online by planning with balanced offline/online batches, evaluate again.
Writes to --out: summary.json, learning_curves.png, <task>_eval.gif (an evaluation episode seen by
the camera), <task>_weights.safetensors, and TensorBoard logs (tensorboard/<task>/).

    python -m fowm_bringup.demo --task reach --preset realtime-cpu
    tensorboard --logdir artifacts/demo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fowm_sim.collect import medium_noise

if TYPE_CHECKING:
    from fowm_core.specs import ObservationSpec


@dataclass
class DemoConfig:
    """What `make demo` runs; every field is a command-line option."""

    tasks: tuple[str, ...] = ("reach", "push")
    """Sim tasks to learn, in order."""
    preset: str = "realtime-cpu"
    """fowm_core preset: 'realtime-cpu' (fits a 2-core CPU) or 'paper' (the published sizes)."""
    mode: str = "fowm"
    """'fowm' (expectile V, AWR policy, uncertainty-penalised planning) or 'tdmpc' (the baseline)."""
    observations: str = "rgb+state"
    """Model inputs: 'rgb+state' (camera + proprioception: the product), 'rgb', or 'sim-state'
    (TCP, gripper, cube and goal positions and their differences, read from the simulator: no
    real-robot sensor provides them)."""
    offline_episodes: int = 40
    """Scripted 'medium' episodes collected per task for offline pretraining."""
    offline_updates: int = 2500
    """Gradient updates of offline pretraining per task."""
    online_episodes: int = 10
    """Episodes collected by planning during online finetuning, per task."""
    eval_episodes: int = 10
    """Evaluation episodes (held-out seeds) before and after finetuning."""
    expert_noise: float | None = None
    """Std of the Gaussian noise on the scripted expert's actions (None: fowm-collect's per-task 'medium')."""
    overrides: tuple[str, ...] = ()
    """Preset overrides as dotted key=value pairs, e.g. ('optim.batch_size=128',)."""
    seed: int = 1
    """Seed of the agent, data collection and online episodes (eval seeds are fixed and disjoint)."""
    threads: int = 1
    """torch threads (torch's default, one per core, made small models 10-100x slower next to a
    busy neighbour on a 2-core CPU)."""
    out: str = "artifacts/demo"
    """Output directory."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        from fowm_sim.config import TASKS

        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"--task must be among {TASKS}, got {list(self.tasks)}")
        if self.mode not in ("fowm", "tdmpc"):
            raise ValueError(f"--mode must be 'fowm' or 'tdmpc', got {self.mode!r}")
        if self.observations not in OBSERVATIONS:
            raise ValueError(f"--obs must be one of {OBSERVATIONS}, got {self.observations!r}")
        for name in ("offline_episodes", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.offline_updates < 0 or self.online_episodes < 0:
            raise ValueError("--offline-updates and --online-episodes must be >= 0")
        if self.threads < 1:
            raise ValueError("--threads must be >= 1")
        from fowm_core.config import parse_overrides

        parse_overrides(self.overrides)  # fail before any work if malformed


OBSERVATIONS = ("rgb+state", "rgb", "sim-state")
SIM_STATE_DIM = 19  # see sim_state()
EVAL_SEED_BASE = 10_000  # evaluation seeds 10_000.. never overlap data (0..) or online (1_000..)
ONLINE_SEED_BASE = 1_000


def sim_state(task_state: dict[str, float]) -> np.ndarray:
    """The sim-state observation (19,): TCP, gripper, cube and goal positions and the three
    differences the tasks' rewards depend on (goal - TCP, goal - cube, cube - TCP). Given positions
    alone, the model needed ~6x more updates to learn reach (see docs/experiments.md)."""
    tcp, cube, goal = (np.array([task_state[f"{n}_{a}"] for a in "xyz"]) for n in ("tcp", "cube", "goal"))
    return np.concatenate(
        [tcp, [task_state["gripper"]], cube, goal, goal - tcp, goal - cube, cube - tcp]
    ).astype(np.float32)


class ObservationFilter:
    """Presents the observations selected by --obs to the agent: a subset of the sim's modalities,
    or (sim-state) a "state" vector built by sim_state() from the simulator's privileged state."""

    def __init__(self, env, observations: str) -> None:
        self.env = env
        self.from_sim = observations == "sim-state"
        self.keys = ("state",) if self.from_sim else tuple(observations.split("+"))

    def spec(self) -> ObservationSpec:
        from fowm_core.specs import ObservationSpec

        if self.from_sim:
            return ObservationSpec.make(state_dim=SIM_STATE_DIM)
        space = self.env.observation_space
        return ObservationSpec.make(
            rgb=tuple(space["rgb"].shape) if "rgb" in self.keys else None,
            state_dim=space["state"].shape[0] if "state" in self.keys else None,
        )

    def _filter(self, obs: dict) -> dict:
        if self.from_sim:
            return {"state": sim_state(self.env.task_state())}
        return {k: obs[k] for k in self.keys}

    def reset(self, seed: int | None = None):
        obs, info = self.env.reset(seed=seed)
        return self._filter(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._filter(obs), reward, terminated, truncated, info


def resolved_config(cfg: DemoConfig, task: str):
    """The fowm_core config a run on `task` trains with: the preset, its section for the task, then
    the overrides, mode and seed."""
    from fowm_core.config import load_config, parse_overrides

    overrides = {**parse_overrides(cfg.overrides), "mode": cfg.mode, "seed": cfg.seed}
    return load_config(cfg.preset, overrides, task=task)


def sim_config(task: str, cfg: DemoConfig):
    """The sim a run acts in. sim-state runs discard the rgb observation: it is rendered small and
    directly instead of from a 640x480 frame (the demo GIF renders its own full frames either way)."""
    from fowm_sim.config import SimConfig

    return SimConfig(task=task, obs_from_full_frame=cfg.observations != "sim-state")


def run_task(task: str, cfg: DemoConfig, out: Path) -> dict:
    from tqdm import tqdm

    from fowm_core.agent import FOWMAgent
    from fowm_core.buffer import EpisodeBuffer
    from fowm_core.metrics import MetricsLogger
    from fowm_core.runtime import configure_process
    from fowm_core.training import collect_episode, evaluate, finetune_online, pretrain_offline
    from fowm_core.weights import save_weights
    from fowm_sim.env import XArmTaskEnv
    from fowm_sim.experts import scripted_expert

    configure_process(cfg.threads)
    sim = XArmTaskEnv(task, sim_config(task, cfg))
    env = ObservationFilter(sim, cfg.observations)
    obs_spec = env.spec()
    action_dim = sim.action_space.shape[0]
    fowm_cfg = resolved_config(cfg, task)
    agent = FOWMAgent(fowm_cfg, obs_spec, action_dim)
    agent.warm_up_update()  # optim.compile: compile first, and train eagerly if that fails
    capacity = (cfg.offline_episodes + cfg.online_episodes + 1) * (sim.config.episode_length + 1)
    offline = EpisodeBuffer(obs_spec, action_dim, capacity, fowm_cfg.optim.horizon)
    online = EpisodeBuffer(obs_spec, action_dim, capacity, fowm_cfg.optim.horizon)
    timings: dict[str, float] = {}

    # 1. Scripted "medium" data: a noisy expert, so the data holds successes and failures.
    t0 = time.perf_counter()
    expert = scripted_expert(task)
    noise = medium_noise(task) if cfg.expert_noise is None else cfg.expert_noise
    rng = np.random.default_rng(cfg.seed)
    data_success = []
    for i in tqdm(range(cfg.offline_episodes), desc=f"{task}: collect", disable=not cfg.progress):
        episode = collect_episode(
            None, env, explore=False, seed=i, policy=lambda _obs, _first: expert(sim, rng, noise)
        )
        offline.add(episode)
        data_success.append(episode.info["success"])
    timings["collect_s"] = time.perf_counter() - t0

    log_dir = out / "tensorboard" / task
    shutil.rmtree(log_dir, ignore_errors=True)  # a rerun into the same --out starts a fresh curve
    with MetricsLogger(log_dir) as logger:
        # 2. Offline pretraining on the offline buffer only.
        t0 = time.perf_counter()
        pretrain_offline(agent, offline, cfg.offline_updates, logger=logger, progress=cfg.progress)
        timings["pretrain_s"] = time.perf_counter() - t0

        # 3. Evaluate the pretrained model (planning, no exploration noise), next to a uniformly
        # random policy on the same held-out seeds as the floor any learning must beat.
        eval_seeds = [EVAL_SEED_BASE + i for i in range(cfg.eval_episodes)]
        random_actions = np.random.default_rng(cfg.seed + 7)
        random_policy = evaluate(
            None,
            env,
            cfg.eval_episodes,
            eval_seeds,
            policy=lambda _o, _f: random_actions.uniform(-1, 1, action_dim).astype(np.float32),
        )
        t0 = time.perf_counter()
        pretrained = evaluate(agent, env, cfg.eval_episodes, eval_seeds)
        timings["eval_pretrained_s"] = time.perf_counter() - t0
        # The policy prior alone (no planning) on the same seeds: a planner that spoils a good prior,
        # or a prior that the planner rescues, shows as a gap between the two.
        pretrained_prior = evaluate(None, env, cfg.eval_episodes, eval_seeds, policy=prior_policy(agent))
        logger.log(agent.num_updates, pretrained, prefix="eval/")
        logger.log(agent.num_updates, pretrained_prior, prefix="eval_prior/")
        print(
            f"[{task}] after offline pretraining: success {pretrained['success_rate']:.0%}, "
            f"return {pretrained['return']:.2f} (policy prior alone: {pretrained_prior['success_rate']:.0%}, "
            f"{pretrained_prior['return']:.2f}; data: {np.mean(data_success):.0%})",
            flush=True,
        )

        # 4. Online finetuning: plan, store in the online buffer, update on balanced batches.
        t0 = time.perf_counter()
        if fowm_cfg.schedule.fresh_online_optimisers:  # start online as the trainer node does
            agent.reset_optimisers()
        history = finetune_online(
            agent,
            env,
            offline,
            online,
            cfg.online_episodes,
            logger=logger,
            progress=cfg.progress,
            seed=ONLINE_SEED_BASE + cfg.seed,
        )
        timings["finetune_s"] = time.perf_counter() - t0

        # 5. Evaluate again on the same held-out seeds.
        finetuned = evaluate(agent, env, cfg.eval_episodes, eval_seeds)
        finetuned_prior = evaluate(None, env, cfg.eval_episodes, eval_seeds, policy=prior_policy(agent))
        logger.log(agent.num_updates, finetuned, prefix="eval/")
        logger.log(agent.num_updates, finetuned_prior, prefix="eval_prior/")
        # With no online episodes this re-evaluates the same weights (new planner draws): say so.
        label = "after online finetuning: " if cfg.online_episodes else "again (0 online episodes):"
        print(
            f"[{task}] {label} success {finetuned['success_rate']:.0%}, "
            f"return {finetuned['return']:.2f} (policy prior alone: {finetuned_prior['success_rate']:.0%}, "
            f"{finetuned_prior['return']:.2f})",
            flush=True,
        )

    gif = out / f"{task}_eval.gif"
    record_episode_gif(agent, sim, env, EVAL_SEED_BASE, gif)
    sim.close()
    weights = out / f"{task}_weights.safetensors"
    save_weights(weights, agent)
    return {
        "task": task,
        "expert_noise": noise,
        "data_success_rate": float(np.mean(data_success)),
        "random_policy": random_policy,
        "pretrained": pretrained,
        "finetuned": finetuned,
        "pretrained_prior": pretrained_prior,
        "finetuned_prior": finetuned_prior,
        "online_success_rate": float(np.mean([r["success"] for r in history])) if history else None,
        "updates": agent.num_updates,
        "timings_s": timings,
        "video": gif.name,
        "weights": weights.name,
    }


def prior_policy(agent):
    """The agent's policy prior as a collect_episode policy: pi(h(obs)), no planning."""
    return lambda obs, _first: agent.act_prior(obs)


class CameraRecorder:
    """Passes an env through, keeping a downscaled full-resolution camera frame after every reset
    and step, so an ordinary evaluation episode doubles as the demo's video."""

    def __init__(self, env, sim, size: tuple[int, int] = (320, 240)) -> None:
        self.env, self.sim, self.size = env, sim, size
        self.frames: list[np.ndarray] = []

    def _record(self) -> None:
        import cv2

        self.frames.append(cv2.resize(self.sim.render_camera(), self.size, interpolation=cv2.INTER_AREA))

    def reset(self, seed: int | None = None):
        out = self.env.reset(seed=seed)
        self._record()
        return out

    def step(self, action):
        out = self.env.step(action)
        self._record()
        return out


def record_episode_gif(agent, sim, env, seed: int, path: Path) -> None:
    """An evaluation episode (no exploration noise) as seen by the camera, as a GIF."""
    import imageio.v2 as imageio

    from fowm_core.training import collect_episode

    recorder = CameraRecorder(env, sim)
    collect_episode(agent, recorder, explore=False, seed=seed)
    imageio.mimsave(path, recorder.frames, duration=sim.config.control_period * 1000, loop=0)


def plot_summary(out: Path, tasks: list[str]) -> Path:
    """One figure: per task, the offline/online losses and the evaluation success rates."""
    import matplotlib

    from fowm_core.metrics import read_jsonl

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tasks), 3, figsize=(14, 3.4 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        rows = read_jsonl(out / "tensorboard" / task / "metrics.jsonl")

        def series(tag: str, rows=rows) -> tuple[list[int], list[float]]:
            pts = [(r["step"], r[tag]) for r in rows if r.get(tag) is not None]
            return [p[0] for p in pts], [p[1] for p in pts]

        for tag in ("offline/consistency_loss", "online/consistency_loss"):
            row[0].plot(*series(tag), label=tag.split("/")[0])
        row[0].set_title(f"{task}: latent consistency loss")
        for tag in ("offline/reward_loss", "online/reward_loss", "offline/q_loss", "online/q_loss"):
            row[1].plot(*series(tag), label=tag)
        row[1].set_title(f"{task}: reward and Q losses")
        row[1].set_yscale("log")  # both fall by orders of magnitude
        row[2].plot(*series("online/return"), ".-", label="online episode return")
        xs, ys = series("eval/success_rate")
        ax2 = row[2].twinx()
        ax2.plot(xs, ys, "s--", color="tab:green", label="eval success rate")
        ax2.set_ylim(-0.05, 1.05)
        row[2].set_title(f"{task}: online return / eval success")
        for ax in (*row, ax2):
            ax.set_xlabel("gradient updates")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    d = DemoConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="make demo DEMO_ARGS=...")
    p.add_argument("--task", nargs="+", default=list(d.tasks), help="tasks: reach push lift")
    p.add_argument("--preset", default=d.preset, help="fowm_core preset: realtime-cpu | paper | path.yaml")
    p.add_argument("--mode", default=d.mode, help="fowm | tdmpc (baseline)")
    p.add_argument(
        "--obs",
        default=d.observations,
        help="rgb+state (camera + proprioception) | rgb | sim-state (simulator positions)",
    )
    p.add_argument("--offline-episodes", type=int, default=d.offline_episodes)
    p.add_argument("--offline-updates", type=int, default=d.offline_updates)
    p.add_argument("--online-episodes", type=int, default=d.online_episodes)
    p.add_argument("--eval-episodes", type=int, default=d.eval_episodes)
    p.add_argument(
        "--expert-noise",
        type=float,
        default=d.expert_noise,
        help="expert action noise std (default: per-task 'medium' of fowm-collect)",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="preset overrides, e.g. optim.batch_size=128 planner.dtype=float32",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--out", default=d.out)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    return DemoConfig(
        tasks=tuple(a.task),
        preset=a.preset,
        mode=a.mode,
        observations=a.obs,
        offline_episodes=a.offline_episodes,
        offline_updates=a.offline_updates,
        online_episodes=a.online_episodes,
        eval_episodes=a.eval_episodes,
        expert_noise=a.expert_noise,
        overrides=tuple(a.set),
        seed=a.seed,
        threads=a.threads,
        out=a.out,
        progress=not a.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
    except ValueError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = [run_task(task, cfg, out) for task in cfg.tasks]
    png = plot_summary(out, list(cfg.tasks))
    summary = {
        "config": asdict(cfg),
        "results": results,
        "wall_time_s": time.perf_counter() - started,
        "machine": f"{os.cpu_count()} CPUs",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\nsuccess rate (return) on held-out seeds; planner = the agent as it acts, prior = pi alone")
    print("  task   data   random          pretrained planner / prior          finetuned planner / prior")
    for r in results:
        cells = [
            r["random_policy"],
            r["pretrained"],
            r["pretrained_prior"],
            r["finetuned"],
            r["finetuned_prior"],
        ]
        print(
            f"  {r['task']:<6} {r['data_success_rate']:>4.0%}  "
            + "  ".join(f"{c['success_rate']:>5.0%} ({c['return']:6.2f})" for c in cells)
        )
    print(f"\nwrote {out / 'summary.json'}, {png}, " + ", ".join(str(out / r["video"]) for r in results))
    minutes = summary["wall_time_s"] / 60
    print(f"took {minutes:.1f} min; TensorBoard: tensorboard --logdir {out / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
