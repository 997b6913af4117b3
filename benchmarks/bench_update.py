"""Benchmark of one FOWM update (the trainer's inner loop): updates/s next to the matmul peak.

    python benchmarks/bench_update.py [--quick] [--threads 1 2] [--out bench-results] [--against REV]

--against REV also times the `realtime-cpu` pixel update of fowm_core as it was at git revision REV
(exported with `git archive`) next to today's, in alternating one-thread subprocesses that run the
same timing code, so the speedup is measured in one run (default REV: 3a2e68a, the code before the
2026-11-22 update work; `--against ''` skips it).

Writes <out>/update.{json,md}. `bench_update(...)` measures one configuration and is meant to be
called by bench_core / run_all too. Each row's FLOPs per update are counted by torch's
FlopCounterMode on a real update (matmuls and convolutions, forward and backward), and its achieved
GFLOP/s is reported as a fraction of the matmul peak of the same dtype measured in the same process
right before it, so ratios stay meaningful on a loaded machine. Not a test: it measures, it does not
assert.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fowm_core import world_model
from fowm_core.agent import FOWMAgent
from fowm_core.config import load_config
from fowm_core.specs import Batch, ObservationSpec

ACTION_DIM = 4  # xArm: end-effector xyz delta + gripper
ROOT = Path(__file__).resolve().parents[1]
OLD_REV = "3a2e68a"

# Runs in a fresh interpreter with the fowm_core to time first on sys.path: this module's
# bench_update (one torch thread, the realtime-cpu preset's batch and dtype), which then binds that
# fowm_core's agent, config and specs.
_WORKER = f"""
import json, sys
sys.path.insert(0, sys.argv[1])  # the fowm_core to time, ahead of the installed one
sys.path.insert(1, {str(Path(__file__).resolve().parent)!r})
import fowm_core
if sys.argv[3] == "tuned":  # the allocator as today's trainer sets it up (that fowm_core must have it)
    from fowm_core.runtime import keep_freed_memory
    assert keep_freed_memory(), "glibc refused the malloc thresholds"
from bench_update import bench_update
res = bench_update("realtime-cpu", "rgb+state", threads=1, updates=int(sys.argv[2]))
print(json.dumps({{**res, "fowm_core": fowm_core.__file__}}))
"""
OBS_SPECS = {
    "rgb+state": ObservationSpec.make(rgb=(3, 84, 84), state_dim=8),
    "state": ObservationSpec.make(state_dim=8),
}


def random_batch(spec: ObservationSpec, horizon: int, batch_size: int, seed: int = 0) -> Batch:
    """A batch of the shapes the buffer produces (uint8 images, float32 states), random contents."""
    g = torch.Generator().manual_seed(seed)
    obs: dict[str, torch.Tensor] = {}
    for k, s in spec.modalities.items():
        if s.dtype == "uint8":
            shape = (horizon + 1, batch_size, *s.shape)
            obs[k] = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        else:
            obs[k] = torch.randn(horizon + 1, batch_size, *s.shape, generator=g)
    return Batch(
        obs=obs,
        action=torch.rand(horizon, batch_size, ACTION_DIM, generator=g) * 2 - 1,
        reward=torch.randn(horizon, batch_size, 1, generator=g) * 0.1,
        terminated=torch.zeros(horizon, batch_size, 1),
    )


def matmul_gflops(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """Best-of-`repeats` rate of an n x n x n CPU matmul (2 n^3 FLOP) in `dtype`."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2.0 * n**3 / best / 1e9


def _seconds(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def count_flops(agent: FOWMAgent, batch: Batch) -> float:
    """FLOPs of one update (matmuls and convolutions, forward and backward) by FlopCounterMode, which
    does not see oneDNN's fused conv+ReLU: that path is switched off while counting (same FLOPs)."""
    fused = getattr(world_model, "_FUSED_CONV_RELU", False)
    world_model._FUSED_CONV_RELU = False
    try:
        with FlopCounterMode(display=False) as counter:
            agent.update(batch)
    finally:
        world_model._FUSED_CONV_RELU = fused
    return float(counter.get_total_flops())


def bench_update(
    preset: str = "realtime-cpu",
    obs: str = "rgb+state",
    batch_size: int | None = None,
    amp_dtype: str | None = None,
    threads: int = 1,
    updates: int = 10,
    warmup: int = 3,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time `updates` agent updates (after `warmup`) of `preset` on `obs` observations at
    `batch_size` (default: the preset's) with `amp_dtype` (default: the preset's), on the CPU with
    `threads` torch threads. Returns timings, FLOPs per update and the fraction of the matmul peak."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        over: dict[str, Any] = {**(overrides or {})}
        optim = dict(over.get("optim", {}))
        if batch_size is not None:
            optim["batch_size"] = batch_size
        if amp_dtype is not None:
            optim["amp_dtype"] = amp_dtype
        over["optim"] = optim
        cfg = load_config(preset, over)
        spec = OBS_SPECS[obs]
        agent = FOWMAgent(cfg, spec, ACTION_DIM)
        batch = random_batch(spec, cfg.optim.horizon, cfg.optim.batch_size)
        dtype = getattr(cfg.optim, "amp_dtype", "float32")
        for _ in range(warmup):
            agent.update(batch)
        flop = count_flops(agent, batch)
        peak = matmul_gflops(getattr(torch, dtype))
        times = [_seconds(lambda: agent.update(batch)) for _ in range(updates)]
        p50 = statistics.median(times)
        return {
            "preset": preset, "obs": obs, "batch_size": cfg.optim.batch_size, "amp_dtype": dtype,
            "threads": threads, "updates": updates, "p50_ms": 1e3 * p50, "min_ms": 1e3 * min(times),
            "updates_per_s": 1.0 / p50, "gflop_per_update": flop / 1e9,
            "achieved_gflops": flop / p50 / 1e9, "matmul_peak_gflops": peak,
            "fraction_of_peak": flop / p50 / 1e9 / peak,
        }  # fmt: skip
    finally:
        torch.set_num_threads(before)


def against(rev: str, rounds: int = 3, updates: int = 10) -> dict[str, Any]:
    """The realtime-cpu pixel update of fowm_core at git revision `rev` and of today's, timed in
    alternating one-thread subprocesses (`rounds` rounds) by the same code; the bf16 matmul peak is
    measured in this process between the rounds. Each round times three processes: the old code as
    it ran (glibc's default malloc), today's code in the same kind of process ("new_default"), and
    today's code in the process the trainer runs it in ("new": `keep_freed_memory`), so the speedup
    splits into what the code and what the allocator set-up bought."""
    with tempfile.TemporaryDirectory(prefix="fowm-old-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "ros2_ws/src/fowm_core"], capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        old, new = Path(tmp) / "ros2_ws/src/fowm_core", ROOT / "ros2_ws/src/fowm_core"
        sides = {"old": (old, "default"), "new_default": (new, "default"), "new": (new, "tuned")}
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        rows: list[dict[str, Any]] = []
        for r in range(rounds):
            row: dict[str, Any] = {"round": r}
            for name, (path, malloc) in sides.items():
                out = subprocess.run(
                    [sys.executable, "-c", _WORKER, str(path), str(updates), malloc],
                    capture_output=True, text=True, check=True, env=env,
                ).stdout  # fmt: skip
                res = json.loads(out.strip().splitlines()[-1])
                if not res["fowm_core"].startswith(str(path)):
                    raise RuntimeError(f"the {name} worker imported {res['fowm_core']}, not {path}")
                row[name] = res
            row["speedup"] = row["old"]["p50_ms"] / row["new"]["p50_ms"]
            row["speedup_default_malloc"] = row["old"]["p50_ms"] / row["new_default"]["p50_ms"]
            row["bf16_peak_gflops"] = matmul_gflops(torch.bfloat16)
            rows.append(row)
            print(
                f"round {r}: {rev} {row['old']['p50_ms']:.0f} ms ({row['old']['amp_dtype']}), today "
                f"{row['new_default']['p50_ms']:.0f} ms with glibc's defaults, {row['new']['p50_ms']:.0f} ms "
                f"as the trainer runs ({row['new']['amp_dtype']}): {row['speedup']:.2f}x",
                flush=True,
            )
    return {
        "rev": rev, "rows": rows, "speedup_median": statistics.median(r["speedup"] for r in rows),
        "speedup_default_malloc_median": statistics.median(r["speedup_default_malloc"] for r in rows),
    }  # fmt: skip


def to_markdown(res: dict[str, Any]) -> str:
    from bench_core import allocator_note  # not at the top: see main

    lines = [
        f"# FOWM update benchmark ({res['date']}, {res['machine']})",
        "",
        f"torch {res['torch']}. One update = one world-model step and one policy step on a batch of",
        "length-5 windows (84x84 rgb + 8-d state, 4-d actions, augmentation included). FLOPs from",
        "FlopCounterMode; the matmul peak (1024^3, same dtype) is measured in the same process.",
        allocator_note(res.get("malloc_tuned")),
        "",
        "| preset | batch | dtype | threads | p50 ms | updates/s | GFLOP/update | GFLOP/s | matmul peak "
        "| fraction |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['preset']} | {r['batch_size']} | {r['amp_dtype']} | {r['threads']} | {r['p50_ms']:.0f} | "
            f"{r['updates_per_s']:.2f} | {r['gflop_per_update']:.1f} | {r['achieved_gflops']:.0f} | "
            f"{r['matmul_peak_gflops']:.0f} | {r['fraction_of_peak']:.2f} |"
        )
    if "against" in res:
        ag = res["against"]
        lines += [
            "",
            f"realtime-cpu pixel update, fowm_core at {ag['rev']} vs today, alternating one-thread "
            "subprocesses, same batch (each side's preset dtype). Today's code is timed twice: in a "
            "process with glibc's default malloc (as the old code ran) and as the trainer runs it "
            "(`fowm_core.runtime.keep_freed_memory`):",
            "",
            "| round | old p50 ms | today, default malloc | today, as the trainer runs | speedup "
            "(default malloc) | bf16 matmul peak GFLOP/s |",
            "|---|---|---|---|---|---|",
        ]
        for r in ag["rows"]:
            old, new = r["old"], r["new"]
            nd = r.get("new_default")  # absent in result files from before 2026-12-03 21:00 UTC
            nd_ms = f"{nd['p50_ms']:.0f}" if nd else "-"
            sd = f" ({r['speedup_default_malloc']:.2f}x)" if nd else ""
            lines.append(
                f"| {r['round']} | {old['p50_ms']:.0f} ({old['amp_dtype']}) | {nd_ms} | {new['p50_ms']:.0f} "
                f"({new['amp_dtype']}) | {r['speedup']:.2f}x{sd} | {r['bf16_peak_gflops']:.0f} |"
            )
        sd = ag.get("speedup_default_malloc_median")
        tail = f" ({sd:.2f}x with glibc's default malloc)" if sd else ""
        lines += ["", f"Median speedup: **{ag['speedup_median']:.2f}x**{tail}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="realtime-cpu only, fewer updates")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default="bench-results")
    p.add_argument("--against", default=OLD_REV, help="git revision to time the old update of ('' skips)")
    p.add_argument("--only-against", action="store_true", help="time only the old-vs-today comparison")
    # imported here, not at the top: the old-vs-today workers import this module under an old
    # fowm_core that has no runtime module (which bench_core imports)
    from bench_core import add_allocator_option, set_up_allocator

    add_allocator_option(p)
    a = p.parse_args()
    malloc_tuned = set_up_allocator(a)
    presets = [("realtime-cpu", None)] if a.quick else [("realtime-cpu", None), ("paper", None)]
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "rows": [], "malloc_tuned": malloc_tuned,
    }  # fmt: skip
    for threads in [] if a.only_against else a.threads:
        for preset, batch in presets:
            for dtype in ("float32", "bfloat16"):
                n = 4 if (a.quick or preset == "paper") else 10
                row = bench_update(preset, "rgb+state", batch, dtype, threads, updates=n, warmup=2)
                res["rows"].append(row)
                print(
                    f"{preset} batch {row['batch_size']} {dtype} {threads} thr: {row['p50_ms']:.0f} ms "
                    f"({row['updates_per_s']:.2f}/s, {row['fraction_of_peak']:.2f} of peak)",
                    flush=True,
                )
    if a.against:
        try:
            res["against"] = against(a.against, rounds=2 if a.quick else 6)
        except subprocess.CalledProcessError as e:  # e.g. a shallow clone without that revision
            err = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
            cmd = " ".join(map(str, e.cmd[:4]))
            print(f"old-vs-today comparison skipped: {cmd} failed: {err}", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "update.json").write_text(json.dumps(res, indent=2))
    (out / "update.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
