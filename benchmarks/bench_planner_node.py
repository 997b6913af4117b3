"""The planner node in realtime against the sim node: plan latency and control-period jitter (p50/p99),
with the sim alone, with a CPU-bound neighbour process (a one-thread torch matmul loop) and with the
trainer's work running next to it (a one-thread process doing the trainer node's realtime-cpu pixel
updates back to back, as between online episodes), and the first two again with the plan compiled
(`overrides: [planner.compile=true]`, as the real robot's config runs it). Writes
bench-results/planner_node.{json,md}.

    MUJOCO_GL=egl python benchmarks/bench_planner_node.py [--seconds 30] [--out bench-results]

Each scenario starts fresh processes (sim node realtime, planner node realtime, optionally the
neighbour), lets the planner command for --seconds and reads its figures from /diagnostics: plan
latency (the plan alone), period jitter (|interval between timer ticks - period|, in the planner)
and deadline misses. The interval jitter of the trajectories as a subscriber receives them (DDS
included) is measured here too.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
import contextlib
import datetime
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "ros2_ws/src/fowm_bringup/config/fastdds.xml"
PERIOD = 0.16
NEIGHBOUR = (
    "import torch\n"
    "torch.set_num_threads(1)\n"
    "a = torch.randn(768, 768)\n"
    "while True:\n"
    "    a = torch.tanh(a @ a) \n"
)
# What the trainer node computes between episodes: fowm_core updates of the realtime-cpu preset on
# pixel batches, one thread (bench_update's batch builder; the trainer's ingestion is not included).
TRAINER = (
    "import sys, torch\n"
    f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
    "from bench_update import ACTION_DIM, OBS_SPECS, random_batch\n"
    "from fowm_core.agent import FOWMAgent\n"
    "from fowm_core.config import load_config\n"
    "torch.set_num_threads(1)\n"
    "cfg = load_config('realtime-cpu')\n"
    "agent = FOWMAgent(cfg, OBS_SPECS['rgb+state'], ACTION_DIM)\n"
    "batch = random_batch(OBS_SPECS['rgb+state'], cfg.optim.horizon, cfg.optim.batch_size)\n"
    "while True:\n"
    "    agent.update(batch)\n"
)
# name -> (neighbour process, the planner's preset overrides). The compiled rows plan as
# `planner.compile=true` (the real robot's config); the node compiles before its first tick.
COMPILED = ("planner.compile=true",)
SCENARIOS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "sim_alone": (None, ()),
    "with_cpu_neighbour": (NEIGHBOUR, ()),
    "with_trainer_updates": (TRAINER, ()),
    "compiled, sim_alone": (None, COMPILED),
    "compiled, with_cpu_neighbour": (NEIGHBOUR, COMPILED),
}


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_scenario(
    name: str,
    neighbour: str | None,
    overrides: tuple[str, ...],
    seconds: float,
    env: dict[str, str],
    logs: Path,
) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from trajectory_msgs.msg import JointTrajectory

    from fowm_xarm import topics

    py = sys.executable
    log = name.replace(", ", "_")
    planner_args = ["-p", f"overrides:=[{','.join(overrides)}]"] if overrides else []
    procs = [
        _start([py, "-m", "fowm_sim.sim_node", "--ros-args", "-p", "clock_mode:=realtime",
                "-p", "episode_length:=1000000"], logs / f"{log}_sim.log", env),
        _start([py, "-m", "fowm_planner.planner_node", "--ros-args", "-p", "require_signature:=false",
                "-p", f"control_period:={PERIOD}", *planner_args], logs / f"{log}_planner.log", env),
    ]  # fmt: skip
    if neighbour:
        procs.append(_start([py, "-c", neighbour], logs / f"{log}_neighbour.log", env))
    rclpy.init()
    node = rclpy.create_node("bench_planner_node")
    diag: dict[str, str] = {}
    arrivals: list[float] = []

    def on_diag(msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name == "fowm_planner":
                diag.clear()
                diag.update({kv.key: kv.value for kv in s.values})

    node.create_subscription(
        DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    node.create_subscription(
        JointTrajectory, topics.JOINT_TRAJECTORY.name, lambda m: arrivals.append(time.monotonic()),
        topics.rclpy_qos(topics.JOINT_TRAJECTORY.qos),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while int(diag.get("decisions_plan", "0")) + int(diag.get("decisions_policy", "0")) == 0:
            rclpy.spin_once(node, timeout_sec=0.1)
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{name}: the planner never planned (see {logs})")
        start = time.monotonic()
        arrivals.clear()
        while time.monotonic() - start < seconds + 1.5:  # + one diagnostics period after the window
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        for p in reversed(procs):
            _stop(p)
    intervals = np.diff(np.array(arrivals))
    recv_jitter = np.abs(intervals - PERIOD) * 1e3
    return {
        "plan_latency_p50_ms": float(diag["plan_latency_p50_ms"]),
        "plan_latency_p99_ms": float(diag["plan_latency_p99_ms"]),
        "period_jitter_p50_ms": float(diag["period_jitter_p50_ms"]),
        "period_jitter_p99_ms": float(diag["period_jitter_p99_ms"]),
        "deadline_misses": int(diag["deadline_misses"]),
        "decisions_plan": int(diag["decisions_plan"]),
        "decisions_policy": int(diag["decisions_policy"]),
        "decisions_hold": int(diag["decisions_hold"]),
        "received_interval_jitter_p50_ms": float(np.percentile(recv_jitter, 50)),
        "received_interval_jitter_p99_ms": float(np.percentile(recv_jitter, 99)),
        "commands_received": len(arrivals),
    }


def in_process_plan_ms(plans: int = 40) -> dict[str, float]:
    """The same agent's plan in this process with nothing else of ours running: the reference the
    node's plan latency is read against (absolute times on a shared small CPU move with its load)."""
    from fowm_planner.model import build_agent

    agent = build_agent("realtime-cpu", ("rgb", "state"), 84)[0]
    rng = np.random.default_rng(0)
    obs = {
        "rgb": rng.integers(0, 256, (3, 84, 84), dtype=np.uint8),
        "state": np.array([0.4, 0, 0.25, 1], np.float32),
    }
    agent.act(obs, first_step=True, explore=False)
    times = []
    for _ in range(plans):
        t0 = time.perf_counter()
        agent.act(obs, first_step=False, explore=False)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return {"plan_p50_ms": float(np.percentile(ms, 50)), "plan_p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="measuring time per scenario")
    p.add_argument("--out", default=str(REPO / "bench-results"))
    p.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="run these scenarios only")
    a = p.parse_args()
    from domain_coordinator import domain_id

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    reference = in_process_plan_ms()
    logs = out / "planner_node_logs"  # the nodes' output, kept for a look when a figure is odd
    logs.mkdir(exist_ok=True)
    with domain_id() as did, tempfile.TemporaryDirectory(prefix="bench-planner-") as tmp:
        isolation = {
            "ROS_DOMAIN_ID": str(did), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOG_DIR": tmp,
            "FASTRTPS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE), "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        os.environ.update(isolation)  # this process's own rclpy node too
        env = dict(os.environ)
        for name, (neighbour, overrides) in SCENARIOS.items():
            if a.only and name not in a.only:
                continue
            print(f"planner node benchmark: {name} ({a.seconds:.0f} s)", flush=True)
            results[name] = run_scenario(name, neighbour, overrides, a.seconds, env, logs)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "period_s": PERIOD,
        "seconds": a.seconds,
        "planner": "realtime-cpu preset, rgb+state, 1 torch thread, plan budget 0.12 s (node defaults); "
        f"'compiled' rows with overrides {list(COMPILED)}",
        "neighbour": "one-thread torch 768x768 matmul + tanh loop",
        "trainer": "one-thread loop of realtime-cpu pixel updates (batch 64, bf16 autocast)",
        "loadavg_end": os.getloadavg(),
    }
    payload = {"meta": meta, "in_process_reference": reference, "results": results}
    (out / "planner_node.json").write_text(json.dumps(payload, indent=2))
    rows = [
        "| scenario | plan p50 | plan p99 | tick jitter p50 | tick jitter p99 | received jitter p99 | "
        "deadline misses | plans / fallbacks / holds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rows.append(
            f"| {name} | {r['plan_latency_p50_ms']:.1f} ms | {r['plan_latency_p99_ms']:.1f} ms | "
            f"{r['period_jitter_p50_ms']:.2f} ms | {r['period_jitter_p99_ms']:.2f} ms | "
            f"{r['received_interval_jitter_p99_ms']:.2f} ms | {r['deadline_misses']} | "
            f"{r['decisions_plan']} / {r['decisions_policy']} / {r['decisions_hold']} |"
        )
    text = [
        f"# Planner node (realtime, period {PERIOD} s, {a.seconds:.0f} s per scenario)",
        "",
        f"{meta['planner']}; neighbour: {meta['neighbour']}; trainer: {meta['trainer']}; "
        f"{meta['cpu_count']} CPUs, {meta['date']}.",
        f"Reference: the same agent's plan in process before the scenarios: "
        f"p50 {reference['plan_p50_ms']:.1f} ms, p99 {reference['plan_p99_ms']:.1f} ms. "
        "Received jitter is measured in this (also loaded) process.",
        "",
        *rows,
    ]
    (out / "planner_node.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
