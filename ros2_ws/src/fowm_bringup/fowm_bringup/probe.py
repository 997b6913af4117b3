"""`python -m fowm_bringup.probe`: what a camera-trained world model's latent knows about the scene.

Rolls the scripted expert (the task's "medium" noise, as the demonstrations) out on layouts no run
trains or evaluates on (seeds 50_000..), encodes every observation (camera + TCP/gripper) with the
given weights and with a freshly initialised model of the same config, and fits a ridge-regression
probe from the latent to the TCP, cube and goal positions on 3/4 of the layouts, scored on the
other 1/4 (R^2 and RMSE in cm; split by layout, so a latent that memorised its layouts scores
nothing). It also scores the reward head against the sim's reward on the same steps, and reports
how the Q-ensemble values the expert's action against the policy's and standing still, over all
steps and over the "progress" steps whose action brought the task >= 1 cm closer to done. A latent
that decodes the cube and the goal on unseen layouts holds what the task needs from the camera;
a policy that still fails then fails for another reason, which the action values may show.

    python -m fowm_bringup.probe --run artifacts/ros_demo --task push
    python -m fowm_bringup.probe --config fowm_config.yaml --weights mine=W.safetensors --task push
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED_BASE = 50_000  # disjoint from data (0..), online (1_000..) and evaluation (10_000..) seeds
POSITIONS = tuple(f"{body}_{axis}" for body in ("tcp", "cube", "goal") for axis in "xyz")
PROGRESS_MIN_M = 0.01  # a step that brings the task this much closer to done is a progress step
MIN_TARGET_STD_M = 5e-3  # a position that varies less than this over the test layouts is not scored


@dataclass
class Rollouts:
    """The expert's steps on the probe layouts: observations, positions, rewards and actions."""

    rgb: np.ndarray  # (N, 3, H, W) uint8
    state: np.ndarray  # (N, state_dim) float32
    positions: np.ndarray  # (N, len(POSITIONS)) m
    layout: np.ndarray  # (N,) layout index
    reward: np.ndarray  # (N,) the sim's reward for the step's action
    action: np.ndarray  # (N, 4) float32


def collect(task: str, layouts: int, noise: float | None = None, progress: bool = True) -> Rollouts:
    """The scripted expert's episodes on `layouts` layouts (seeds SEED_BASE..), every step kept."""
    from tqdm import tqdm

    from fowm_sim.collect import medium_noise
    from fowm_sim.env import XArmTaskEnv
    from fowm_sim.experts import scripted_expert

    noise = medium_noise(task) if noise is None else noise
    env, expert = XArmTaskEnv(task), scripted_expert(task)
    rng = np.random.default_rng(SEED_BASE)
    rows: dict[str, list] = {k: [] for k in ("rgb", "state", "positions", "layout", "reward", "action")}
    try:
        for i in tqdm(range(layouts), desc=f"{task}: probe layouts", disable=not progress):
            obs, _ = env.reset(seed=SEED_BASE + i)
            done = False
            while not done:
                s = env.task_state()
                action = expert(env, rng, noise)
                rows["rgb"].append(obs["rgb"])
                rows["state"].append(obs["state"])
                rows["positions"].append([s[n] for n in POSITIONS])
                rows["layout"].append(i)
                rows["action"].append(action)
                obs, reward, terminated, truncated, _ = env.step(action)
                rows["reward"].append(reward)
                done = terminated or truncated
    finally:
        env.close()
    return Rollouts(**{k: np.asarray(v) for k, v in rows.items()})


def layout_split(groups: np.ndarray, train_fraction: float = 0.75) -> np.ndarray:
    """Mask of the rows of the first `train_fraction` of the groups (layouts): the probe's fit."""
    ids = np.unique(groups)
    n_train = round(train_fraction * len(ids))
    if not 0 < n_train < len(ids):
        raise ValueError(f"need groups on both sides of the split, got {len(ids)} groups")
    return np.isin(groups, ids[:n_train])


def fit_ridge(features: np.ndarray, targets: np.ndarray, train: np.ndarray, l2: float = 1e-2):
    """A ridge regression (with a bias) of targets on features over the `train` rows: a function
    features -> predicted targets."""
    x = np.c_[features[train].astype(np.float64), np.ones(int(train.sum()))]
    w = np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ targets[train])
    return lambda f: np.c_[f.astype(np.float64), np.ones(len(f))] @ w


def ridge_probe(
    features: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    train_fraction: float = 0.75,
    l2: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit targets ~ features (ridge, with a bias) on the first `train_fraction` of the groups, score
    on the rest. Returns (R^2, RMSE) per target column; R^2 is NaN for a column that is constant on
    the test groups."""
    train = layout_split(groups, train_fraction)
    pred, true = fit_ridge(features, targets, train, l2)(features[~train]), targets[~train]
    sse = ((pred - true) ** 2).sum(0)
    var = ((true - true.mean(0)) ** 2).sum(0)
    std = true.std(0)
    r2 = np.where(std >= MIN_TARGET_STD_M, 1 - sse / np.maximum(var, 1e-30), np.nan)
    return r2, np.sqrt(sse / len(true))


def reward_fit(pred: np.ndarray, true: np.ndarray) -> dict[str, float | None]:
    """How well the reward head predicts the sim's reward: correlation (None for a constant
    prediction, e.g. a fresh model's zero-initialised head) and R^2."""
    var = float(((true - true.mean()) ** 2).sum())
    return {
        "corr": float(np.corrcoef(pred, true)[0, 1]) if pred.std() > 0 and true.std() > 0 else None,
        "r2": 1 - float(((pred - true) ** 2).sum()) / var if var > 0 else None,
    }


def model_outputs(config: str, weights: str, task: str, data: Rollouts) -> dict[str, np.ndarray]:
    """Per step, with `weights` (a fresh model of `config` for ""): the latent "z", the reward head's
    prediction for the expert's action "reward", V(z) "v", and the Q-ensemble's minimum over all
    members for the expert's action "q_expert", the policy network's "q_policy" and standing still
    "q_still" (no TCP motion, the expert's gripper command)."""
    import torch

    from fowm_planner.model import build_agent
    from fowm_xarm.observation import RGB_KEY, STATE_KEY

    agent, _, _ = build_agent(
        config, (RGB_KEY, STATE_KEY), data.rgb.shape[-1], weights_file=weights, task=task
    )
    m = agent.model.eval()
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("z", "reward", "v", "q_expert", "q_policy", "q_still")
    }
    with torch.inference_mode():
        for sl in np.array_split(np.arange(len(data.rgb)), max(1, len(data.rgb) // 256)):
            obs = {RGB_KEY: torch.as_tensor(data.rgb[sl]), STATE_KEY: torch.as_tensor(data.state[sl])}
            z = m.encode({k: v.to(agent.device) for k, v in obs.items()})
            expert = torch.as_tensor(data.action[sl]).to(agent.device, z.dtype)
            still = expert.clone()
            still[:, :3] = 0
            outputs = {
                "z": z, "reward": m.reward(z, expert), "v": m.v(z),
                "q_expert": m.q_all(z, expert).amin(0), "q_policy": m.q_all(z, m.pi(z)).amin(0),
                "q_still": m.q_all(z, still).amin(0),
            }  # fmt: skip
            for k, v in outputs.items():
                arr = v.float().cpu().numpy()
                out[k].append(arr if k == "z" else arr.reshape(len(sl)))
    return {k: np.concatenate(v) for k, v in out.items()}


def task_distance(task: str, positions: np.ndarray) -> np.ndarray:
    """Per step, how far the task is from done (m), from the positions: reach the TCP to the goal,
    push the cube to the goal in the table plane, lift the cube's height below the lift's."""
    p = {name: positions[:, i] for i, name in enumerate(POSITIONS)}
    if task == "reach":
        return np.sqrt(sum((p[f"tcp_{a}"] - p[f"goal_{a}"]) ** 2 for a in "xyz"))
    if task == "push":
        return np.hypot(p["cube_x"] - p["goal_x"], p["cube_y"] - p["goal_y"])
    return -p["cube_z"]  # lift: higher is closer


def progress_steps(task: str, data: Rollouts, min_gain_m: float = PROGRESS_MIN_M) -> np.ndarray:
    """Steps whose action brought the task at least `min_gain_m` closer to done (in push, the steps
    that moved the cube towards the goal): where an action's worth shows. The last step of an
    episode (no next state recorded) is not one."""
    dist = task_distance(task, data.positions)
    gain = np.full(len(dist), -np.inf)
    same = data.layout[1:] == data.layout[:-1]
    gain[:-1][same] = dist[:-1][same] - dist[1:][same]
    return gain >= min_gain_m


def action_values(out: dict[str, np.ndarray], steps: np.ndarray) -> dict[str, float | None]:
    """Mean V and Q (expert's action, policy's, standing still) over `steps`, and the share of them
    on which the expert's action is valued above standing still."""
    if not steps.any():
        return {"steps": 0}
    res: dict[str, float | None] = {"steps": int(steps.sum())}
    res |= {k: float(out[k][steps].mean()) for k in ("v", "q_expert", "q_policy", "q_still")}
    res["expert_above_still"] = float((out["q_expert"][steps] > out["q_still"][steps]).mean())
    return res


def probe(config: str, weights: dict[str, str], task: str, data: Rollouts) -> dict[str, dict]:
    """Scores per weights label ("random init" first): position R^2 / RMSE (cm), reward fit and the
    action values over all steps and over the progress steps."""
    results = {}
    progress = progress_steps(task, data)
    for label, path in {"random init": "", **weights}.items():
        out = model_outputs(config, path, task, data)
        r2, rmse = ridge_probe(out["z"], data.positions, data.layout)
        results[label] = {
            "r2": {n: None if np.isnan(v) else float(v) for n, v in zip(POSITIONS, r2)},
            "rmse_cm": {n: float(100 * v) for n, v in zip(POSITIONS, rmse)},
            "reward": reward_fit(out["reward"], data.reward),
            "values_all_steps": action_values(out, np.ones(len(progress), bool)),
            "values_progress_steps": action_values(out, progress),
        }
    return results


def to_markdown(results: dict[str, dict], task: str, data: Rollouts) -> str:
    names = [n for n in POSITIONS if next(iter(results.values()))["r2"][n] is not None]
    lines = [
        f"Linear probe of the latent, {task}: {len(np.unique(data.layout))} expert layouts (seeds "
        f"{SEED_BASE}..), fitted on 3/4, scored on the other 1/4. R^2 (RMSE cm); reward head vs "
        "the sim's reward.",
        "",
        "| weights | " + " | ".join(names) + " | reward corr | reward R^2 |",
        "|---|" + "---:|" * (len(names) + 2),
    ]
    for label, r in results.items():
        cells = [f"{r['r2'][n]:.2f} ({r['rmse_cm'][n]:.1f})" for n in names]
        fit = [f"{v:.2f}" if v is not None else "-" for v in (r["reward"]["corr"], r["reward"]["r2"])]
        lines.append(f"| {label} | " + " | ".join(cells + fit) + " |")
    lines += [
        "",
        "Action values (Q: the ensemble's minimum): all steps, and the progress steps, whose expert "
        f"action brought the task >= {100 * PROGRESS_MIN_M:.0f} cm closer to done (push: the cube to the "
        "goal).",
        "",
        "| weights | steps | V | Q(expert) | Q(policy) | Q(still) | Q(expert) > Q(still) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        for which in ("all_steps", "progress_steps"):
            v = r[f"values_{which}"]
            if v["steps"]:
                cells = [f"{v[k]:.3f}" for k in ("v", "q_expert", "q_policy", "q_still")]
                share = f"{100 * v['expert_above_still']:.0f} %"
                lines.append(
                    f"| {label} | {which.replace('_steps', '')} ({v['steps']}) | "
                    + " | ".join([*cells, share])
                    + " |"
                )
    std = data.positions[:, [POSITIONS.index(n) for n in names]].std(0)
    lines += ["", "Spread of each position over all probe steps (cm): "
              + ", ".join(f"{n} {100 * s:.1f}" for n, s in zip(names, std))]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from fowm_sim.config import TASKS

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--run",
        help="a make demo output directory: its fowm_config.yaml, pretrain/weights.safetensors "
        "(pretrained) and weights.safetensors (finetuned)",
    )
    p.add_argument("--config", help="fowm_core preset or config YAML (with --weights)")
    p.add_argument("--weights", nargs="*", default=[], metavar="LABEL=PATH", help="weights files to probe")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument(
        "--layouts", type=int, default=80, help="expert episodes (layouts) to probe on (default 80)"
    )
    p.add_argument("--expert-noise", type=float, default=None, help="default: the task's 'medium' noise")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", help="also write the scores to this JSON file")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.layouts < 8:
        p.error("--layouts must be >= 8 (the probe scores on a quarter of them, and needs two)")
    if a.run:
        run = Path(a.run)
        a.config = str(run / "fowm_config.yaml")
        found = {
            "pretrained": run / "pretrain" / "weights.safetensors",
            "finetuned": run / "weights.safetensors",
        }
        a.weights = [f"{k}={v}" for k, v in found.items() if v.is_file()]
        if not Path(a.config).is_file() or not a.weights:
            p.error(f"{run} holds no fowm_config.yaml or no weights (is it a make demo output directory?)")
    elif not a.config:
        p.error("give --run DIR, or --config with --weights LABEL=PATH ...")
    parsed = {}
    for item in a.weights:
        label, sep, path = item.partition("=")
        if not sep or not label or not Path(path).is_file():
            p.error(f"--weights takes LABEL=PATH with an existing file, got {item!r}")
        parsed[label] = path
    a.weights = parsed
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from fowm_core.runtime import configure_process

    configure_process(a.threads)
    data = collect(a.task, a.layouts, a.expert_noise, progress=not a.no_progress)
    results = probe(a.config, a.weights, a.task, data)
    print(to_markdown(results, a.task, data))
    if a.out:
        record = {
            "task": a.task,
            "layouts": a.layouts,
            "config": a.config,
            "weights": a.weights,
            "results": results,
        }
        Path(a.out).write_text(json.dumps(record, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
