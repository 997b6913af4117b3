"""`make bench`: every benchmark, results in bench-results/ (JSON + Markdown per benchmark).

Benchmarks are not tests: they measure, they do not assert. Each reports its figures next to a
reference measured in the same run (e.g. planner GFLOP/s as a fraction of this machine's matmul
peak), because absolute numbers on small shared machines move by 2x with the load.

    python benchmarks/run_all.py [--quick] [--threads N] [--no-peer]

Every torch process gets one thread unless --threads says otherwise (the planner's situation: one
core of a small machine, next to other processes). bench_update.py times updates/s,
bench_ingest.py bag ingestion and the weight push -> swap, bench_planner_node.py the planner node over
DDS (plan latency, period jitter, alone and with a CPU-bound neighbour); bench_peer.py times LeRobot's
TD-MPC next to ours in its own virtual environment, and skips itself when that cannot be built.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (0: torch's default)")
    p.add_argument("--no-peer", action="store_true", help="skip the LeRobot peer benchmark")
    p.add_argument("--out", default="bench-results")
    a = p.parse_args()
    quick = ["--quick"] if a.quick else []
    threads = ["--threads", str(a.threads)]
    runs = [
        # plans only: bench_update.py times the updates
        [sys.executable, str(HERE / "bench_core.py"), "--out", a.out, *threads, *quick, "--no-updates"],
        [sys.executable, str(HERE / "bench_sim.py")],  # writes bench-results/sim.{json,md}
        [sys.executable, str(HERE / "bench_update.py"), "--out", a.out, *threads, *quick],
        [sys.executable, str(HERE / "bench_ingest.py"), "--out", a.out, *threads, *quick],
        [sys.executable, str(HERE / "bench_planner_node.py"), "--out", a.out]
        + (["--seconds", "10"] if a.quick else []),
    ]
    if not a.no_peer:
        runs.append([sys.executable, str(HERE / "bench_peer.py"), "--out", a.out, *threads, *quick])
    rows, started = [], time.perf_counter()
    for cmd in runs:
        line = " ".join(Path(c).name if c.endswith(".py") else c for c in cmd)
        print("$", line, flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd).returncode
        rows.append((line, time.perf_counter() - t0, rc))
    total = time.perf_counter() - started
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    report = [
        f"# make bench ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {a.threads}, 1-min load after {load:.1f})",
        "",
        "| benchmark | wall s | exit |",
        "|---|---:|---:|",
        *(f"| `{line}` | {secs:.0f} | {rc} |" for line, secs, rc in rows),
        f"| **total** | **{total:.0f}** | |",
    ]
    (out / "run_all.md").write_text("\n".join(report) + "\n")
    for md in sorted(out.glob("*.md")):
        print(f"\n===== {md} =====\n{md.read_text()}")
    return 1 if any(rc for _, _, rc in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
