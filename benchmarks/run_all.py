"""`make bench`: every benchmark, results in bench-results/ (JSON + Markdown per benchmark).

Benchmarks are not tests: they measure, they do not assert. Each reports its figures next to a
reference measured in the same run (e.g. planner GFLOP/s as a fraction of this machine's matmul
peak), because absolute numbers on small shared machines move by 2x with the load.

    python benchmarks/run_all.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--threads", type=int, default=0, help="torch threads for bench_core (0: torch's default)")
    p.add_argument("--out", default="bench-results")
    a = p.parse_args()
    runs = [
        [sys.executable, str(HERE / "bench_core.py"), "--out", a.out, "--threads", str(a.threads)]
        + (["--quick"] if a.quick else []),
        [sys.executable, str(HERE / "bench_sim.py")],  # writes bench-results/sim.{json,md}
    ]
    failed = 0
    for cmd in runs:
        print("$", " ".join(Path(c).name if c.endswith(".py") else c for c in cmd), flush=True)
        failed += subprocess.run(cmd).returncode != 0
    for md in sorted(Path(a.out).glob("*.md")):
        print(f"\n===== {md} =====\n{md.read_text()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
