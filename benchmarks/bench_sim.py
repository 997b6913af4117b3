"""Simulation speed: rendering fps (84x84 and the 640x480 colour frame), preprocessing, IK, physics,
and whole env steps. Writes bench-results/sim.json and bench-results/sim.md.

    MUJOCO_GL=egl python benchmarks/bench_sim.py [--seconds-per-item 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import

import argparse
import datetime
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import mujoco
import numpy as np

from fowm_sim.config import SimConfig
from fowm_sim.env import XArmTaskEnv
from fowm_sim.experts import scripted_expert
from fowm_xarm.camera import preprocess_rgb
from fowm_xarm.kinematics import HOME_Q, XArm7Kinematics

OUT_DIR = Path(__file__).resolve().parents[1] / "bench-results"


def time_per_call(fn: Callable[[], object], seconds: float, warmup: int = 3) -> dict[str, float]:
    """Median, p90 and p99 wall time per call (ms), calling fn repeatedly for about `seconds`."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 5:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    ms = np.array(samples) * 1e3
    return {
        "median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)), "n": len(samples),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-item", type=float, default=2.0, help="measuring time per item")
    args = parser.parse_args()
    sec = args.seconds_per_item
    results: dict[str, dict[str, float]] = {}

    env = XArmTaskEnv("push")  # default: obs made from the full frame, as on the real robot
    env.reset(seed=0)
    small = mujoco.Renderer(env.model, 84, 84)
    big = mujoco.Renderer(env.model, 480, 640)
    cam = env.model.camera("d435_color").id

    # Own renderers, each call a real render: env.render_camera() caches the frame of the current
    # state, so timing it in a loop would time the cache.
    def render(renderer: mujoco.Renderer) -> np.ndarray:
        renderer.update_scene(env.data, camera=cam)
        return renderer.render()

    frame = env.render_camera()
    results["render_84x84"] = time_per_call(lambda: render(small), sec)
    results["render_640x480"] = time_per_call(lambda: render(big), sec)
    results["preprocess_rgb_640x480_to_84"] = time_per_call(lambda: preprocess_rgb(frame, 84), sec)

    kin = XArm7Kinematics()
    rng = np.random.default_rng(0)
    results["ik_ee_delta_to_joint_targets"] = time_per_call(
        lambda: kin.ee_delta_to_joint_targets(HOME_Q, rng.uniform(-0.05, 0.05, 3)), sec
    )

    substeps = env.config.substeps

    def physics_decision() -> None:
        for _ in range(substeps):
            mujoco.mj_step(env.model, env.data)

    results[f"physics_one_decision_{substeps}_substeps"] = time_per_call(physics_decision, sec)

    for name, full in (("env_step_full_frame_obs", True), ("env_step_direct_84_obs", False)):
        e = XArmTaskEnv("push", SimConfig(task="push", obs_from_full_frame=full))
        expert = scripted_expert("push")
        e.reset(seed=0)
        state = {"steps": 0}

        def one_step(e: XArmTaskEnv = e, expert=expert, state=state) -> None:
            if state["steps"] >= e.config.episode_length:
                e.reset(seed=state["steps"])
                state["steps"] = 0
            e.step(expert(e, rng, 0.1))
            state["steps"] += 1

        results[name] = time_per_call(one_step, sec)
        e.close()
    small.close()
    big.close()
    env.close()

    for r in results.values():
        r["per_second"] = 1e3 / r["median_ms"]
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)",
        "mujoco_gl": os.environ["MUJOCO_GL"],
        "mujoco": mujoco.__version__,
        "note": "timings on a shared CPU are noisy; compare ratios from the same run",
    }
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "sim.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# Simulation benchmark",
        "",
        f"{meta['date']}, {meta['machine']}, mujoco {meta['mujoco']}, MUJOCO_GL={meta['mujoco_gl']}. "
        f"{meta['note']}.",
        "",
        "| item | median ms | p90 ms | p99 ms | per second |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, v in results.items():
        lines.append(
            f"| {k} | {v['median_ms']:.2f} | {v['p90_ms']:.2f} | {v['p99_ms']:.2f} | {v['per_second']:.0f} |"
        )
    (OUT_DIR / "sim.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
