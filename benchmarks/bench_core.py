"""Benchmark of fowm_core on this machine: matmul peak, plan latency, training throughput.

    python benchmarks/bench_core.py [--quick] [--threads 1] [--out bench-results]

Writes <out>/core.json and <out>/core.md. Not a test: numbers depend on the machine and its load.
Plan latency is reported next to plan_flops and the achieved GFLOP/s as a fraction of the
matmul peak of the same dtype and device measured in the same run, so ratios stay meaningful
on a noisy shared machine. One torch thread unless --threads says otherwise: a planner shares its
CPU with other processes, and two OpenMP threads on a 2-core machine with one busy neighbour are
several times slower than one. The realtime plan is also timed next to a CPU-bound neighbour process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fowm_core.agent import FOWMAgent
from fowm_core.buffer import Episode, EpisodeBuffer
from fowm_core.config import load_config
from fowm_core.planner import plan_flops
from fowm_core.runtime import keep_freed_memory
from fowm_core.specs import ObservationSpec

# The row next to a CPU-bound neighbour times this many times more plans than the others: with 40
# plans a "p99" is the second-largest sample; with 200 it is the 99th percentile it claims to be.
NEIGHBOUR_PLANS_FACTOR = 5
ACTION_DIM = 4  # xArm: end-effector xyz delta + gripper
RGB_STATE = ObservationSpec.make(rgb=(3, 84, 84), state_dim=8)
STATE_ONLY = ObservationSpec.make(state_dim=8)


def add_allocator_option(parser: argparse.ArgumentParser) -> None:
    """--default-allocator, shared by the benchmarks that time plans or updates."""
    parser.add_argument(
        "--default-allocator", action="store_true",
        help="keep glibc's malloc thresholds (default: keep_freed_memory, as the nodes run)",
    )  # fmt: skip


def set_up_allocator(args: argparse.Namespace) -> bool:
    """This process's allocator as --default-allocator asks; returns whether freed memory is kept."""
    return False if args.default_allocator else keep_freed_memory()


def allocator_note(tuned: bool | None) -> str:
    """One sentence for a result file's header (None: a result file written before it was recorded)."""
    return {
        True: "Allocator: glibc malloc keeps freed memory (`fowm_core.runtime.keep_freed_memory`, as the "
        "nodes run).",
        False: "Allocator: glibc's default malloc thresholds.",
        None: "Allocator: not recorded (glibc's defaults).",
    }[tuned]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeats: int, warmup: int, device: str) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def matmul_gflops(dtype: torch.dtype, device: str, n: int, repeats: int) -> float:
    """Best-of-`repeats` throughput of an n x n x n matmul (2 n^3 FLOP)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = timed(lambda: torch.mm(a, b), repeats, warmup=2, device=device)
    return 2.0 * n**3 / min(times) / 1e9


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


@contextmanager
def cpu_bound_neighbour() -> Iterator[None]:
    """Another process spinning on a core for the duration (as a trainer or a driver would)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


# Operators that do a plan's arithmetic (matmuls and the encoder's convolutions); the rest of a plan's
# time is LayerNorm, activations, sampling and dispatch.
MATMUL_OPS = frozenset({
    "aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm",
    "mkldnn::_convolution_pointwise", "aten::mkldnn_convolution", "aten::convolution_overrideable",
})  # fmt: skip


def matmul_seconds(fn: Callable[[], Any], calls: int) -> float:
    """CPU seconds per call spent inside MATMUL_OPS (their self time, from torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS)
    return us / 1e6 / calls


def bench_plan(
    preset: str, dtype: str, device: str, plans: int, matmul_n: int, compiled: bool, neighbour: bool = False
) -> dict[str, Any]:
    """Plan latency of `preset` in `dtype`; the matmul peak it is compared with is measured right
    before and right after (best of both), since other load on a shared machine drifts."""
    cfg = load_config(preset, {"planner": {"dtype": dtype, "compile": compiled}, "device": device})
    agent = FOWMAgent(cfg, RGB_STATE, ACTION_DIM)
    rng = np.random.default_rng(0)
    obs = {
        "rgb": rng.integers(0, 256, (3, 84, 84), dtype=np.uint8),
        "state": rng.standard_normal(8).astype(np.float32),
    }
    agent.act(obs, first_step=True, explore=False)  # builds the planner's model copy
    warmup_s = agent.planner.warmup({k: torch.as_tensor(v).to(device) for k, v in obs.items()})
    torch_dtype = getattr(torch, dtype)
    peak = matmul_gflops(torch_dtype, device, matmul_n, repeats=3)
    cpu: list[float] = []  # this thread's CPU seconds per plan: what the plan costs with a core to itself

    def agent_plan() -> None:
        agent.act(obs, first_step=False, explore=False)

    def plan() -> None:
        t0 = time.thread_time()
        agent_plan()
        cpu.append(time.thread_time() - t0)

    with cpu_bound_neighbour() if neighbour else nullcontext():
        times = timed(plan, plans, warmup=2, device=device)
    cpu = cpu[2:]
    peak = max(peak, matmul_gflops(torch_dtype, device, matmul_n, repeats=3))
    flops = plan_flops(cfg, RGB_STATE, ACTION_DIM)
    p50 = statistics.median(times)
    achieved = flops / p50 / 1e9
    # Where the time goes (CPU only): the matmuls' share of a plan's CPU time and their own rate as a
    # fraction of the peak. The plan's fraction of peak is share x rate; with every other operation
    # free it would be the rate, which is what bounds it.
    cpu_p50 = statistics.median(cpu)
    mm_s = matmul_seconds(agent_plan, 3) if device == "cpu" else float("nan")
    return {
        "preset": preset, "dtype": dtype, "device": device, "compiled": compiled, "neighbour": neighbour,
        "plans": plans, "warmup_s": warmup_s,
        "p50_ms": 1e3 * p50, "p99_ms": 1e3 * percentile(times, 99), "plan_gflop": flops / 1e9,
        "cpu_p50_ms": 1e3 * cpu_p50, "cpu_p99_ms": 1e3 * percentile(cpu, 99),
        "load_avg": os.getloadavg()[0],
        "achieved_gflops": achieved, "matmul_peak_gflops": peak, "fraction_of_peak": achieved / peak,
        "matmul_share": mm_s / cpu_p50, "matmul_rate_fraction": flops / mm_s / 1e9 / peak,
    }  # fmt: skip


def synthetic_buffer(
    spec: ObservationSpec, horizon: int, episodes: int = 40, steps: int = 25
) -> EpisodeBuffer:
    rng = np.random.default_rng(0)
    buf = EpisodeBuffer(spec, ACTION_DIM, episodes * (steps + 1), horizon)
    for _ in range(episodes):
        obs = {}
        if "rgb" in spec.modalities:
            obs["rgb"] = rng.integers(0, 256, (steps + 1, 3, 84, 84), dtype=np.uint8)
        obs["state"] = rng.standard_normal((steps + 1, 8)).astype(np.float32)
        action = rng.uniform(-1, 1, (steps, ACTION_DIM)).astype(np.float32)
        buf.add(Episode(obs, action, rng.standard_normal(steps).astype(np.float32), truncated=True))
    return buf


def bench_updates(preset: str, spec_name: str, device: str, updates: int) -> dict[str, Any]:
    spec = RGB_STATE if spec_name == "rgb+state" else STATE_ONLY
    cfg = load_config(preset, {"device": device})
    agent = FOWMAgent(cfg, spec, ACTION_DIM)
    buf = synthetic_buffer(spec, cfg.optim.horizon)
    rng = np.random.default_rng(0)

    # Sampling is timed together with the update: it is part of the training loop's cost.
    def step() -> None:
        agent.update(buf.sample(cfg.optim.batch_size, rng))

    times = timed(step, updates, warmup=2, device=device)
    sample_times = timed(lambda: buf.sample(cfg.optim.batch_size, rng), 20, warmup=2, device="cpu")
    return {
        "preset": preset, "obs": spec_name, "device": device, "batch_size": cfg.optim.batch_size,
        "updates_per_s": 1.0 / statistics.median(times), "sample_ms": 1e3 * statistics.median(sample_times),
    }  # fmt: skip


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        f"# fowm_core benchmark ({res['date']}, {res['machine']})",
        "",
        f"torch {res['torch']}, {res['threads']} threads. {allocator_note(res.get('malloc_tuned'))} "
        f"Matmul {res['matmul_n']}^3, best of runs:",
        "",
        "| device | dtype | matmul GFLOP/s |",
        "|---|---|---|",
    ]
    for key, v in res["matmul_gflops"].items():
        dev, dt = key.split("/")
        lines.append(f"| {dev} | {dt} | {v:.0f} |")
    lines += [
        "",
        "Plan latency (one `agent.act`, rgb 84x84 + state, 4-D action; compiled rows after `warmup`);",
        "the matmul peak of each row is re-measured right before and after it (best of both).",
        "'+ neighbour': another process spins on a core meanwhile. CPU ms: the planning thread's own CPU",
        "time per plan (what a plan costs with a core to itself; wall time exceeds it when the machine is",
        "oversubscribed). Load: the 1-minute load average after the row. Matmul share: the part of a",
        "plan's CPU time spent in matmuls and convolutions (torch.profiler, 3 plans); matmul rate: the",
        "plan's FLOPs over that time, as a fraction of the peak. The rest is LayerNorm, activations,",
        "sampling and dispatch, which do ~no FLOPs.",
        "",
        "| preset | device | dtype | compiled | plans | p50 ms | p99 ms | CPU p50 / p99 ms | plan GFLOP "
        "| GFLOP/s | matmul peak | fraction | matmul share | matmul rate | warmup s | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")  # rows of results written before the matmul columns existed
    for r in res["plan"]:
        comp = ("yes" if r["compiled"] else "no") + (" + neighbour" if r["neighbour"] else "")
        lines.append(
            f"| {r['preset']} | {r['device']} | {r['dtype']} | {comp} | {r['plans']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['cpu_p50_ms']:.1f} / {r['cpu_p99_ms']:.1f} | {r['plan_gflop']:.1f} | "
            f"{r['achieved_gflops']:.0f} | {r['matmul_peak_gflops']:.0f} | {r['fraction_of_peak']:.2f} | "
            f"{r.get('matmul_share', nan):.2f} | {r.get('matmul_rate_fraction', nan):.2f} | "
            f"{r['warmup_s']:.1f} | {r['load_avg']:.1f} |"
        )
    lines += [
        "",
        "Training throughput (sampling + one update):",
        "",
        "| preset | obs | device | batch | updates/s | sample ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["updates"]:
        lines.append(
            f"| {r['preset']} | {r['obs']} | {r['device']} | {r['batch_size']} | "
            f"{r['updates_per_s']:.2f} | {r['sample_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about a minute on 2 cores)")
    parser.add_argument("--out", default="bench-results", help="output folder for core.json and core.md")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--no-updates", action="store_true", help="plans only (bench_update.py times updates)"
    )
    add_allocator_option(parser)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    malloc_tuned = set_up_allocator(args)
    plans, updates, mm_reps, n = (5, 2, 3, 1024) if args.quick else (40, 8, 10, 2048)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick, "matmul_n": n,
        "malloc_tuned": malloc_tuned,
        "matmul_gflops": {}, "plan": [], "updates": [],
    }  # fmt: skip
    for dev in devices:
        for dt in ("float32", "bfloat16"):
            res["matmul_gflops"][f"{dev}/{dt}"] = g = matmul_gflops(getattr(torch, dt), dev, n, mm_reps)
            print(f"matmul {dev} {dt}: {g:.0f} GFLOP/s", flush=True)
    for dev in devices:
        rows = [(p, dt, c, False) for p in ("realtime-cpu", "paper") for dt in ("float32", "bfloat16")
                for c in (False, True)]  # fmt: skip
        rows.append(("realtime-cpu", "bfloat16", True, True))  # the planner node's setting, disturbed
        for preset, dt, compiled, neighbour in rows:
            reps = plans if preset != "paper" else max(3, plans // 4)  # paper plans are 10-50x longer
            if neighbour:
                reps = NEIGHBOUR_PLANS_FACTOR * plans  # its p99 is the figure the realtime target is about
            r = bench_plan(preset, dt, dev, reps, n, compiled, neighbour)
            res["plan"].append(r)
            print(
                f"plan {preset} {dev} {dt} compiled={compiled} neighbour={neighbour}: "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['fraction_of_peak']:.2f} of peak",
                flush=True,
            )
        for preset in () if args.no_updates else ("realtime-cpu", "paper"):
            for spec_name in ("state", "rgb+state"):
                r = bench_updates(preset, spec_name, dev, updates)
                res["updates"].append(r)
                print(f"update {preset} {spec_name} {dev}: {r['updates_per_s']:.2f}/s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "core.json").write_text(json.dumps(res, indent=2))
    (out / "core.md").write_text(to_markdown(res))
    print(f"wrote {out / 'core.json'} and {out / 'core.md'}")


if __name__ == "__main__":
    main()
