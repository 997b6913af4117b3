"""Peer benchmark: LeRobot's TD-MPC (its FOWM port) next to fowm_core, plans and updates interleaved
in one process, so the speed ratio is measured in the same run rather than remembered.

    python benchmarks/bench_peer.py [--quick] [--threads 1] [--out bench-results]

LeRobot is not a dependency of this stack. The benchmark builds its own virtual environment
(.bench-venv/lerobot, gitignored): lerobot==0.4.4 without its dependency tree, the few packages that
importing its TD-MPC policy needs, PyPI's default torch 2.13 build with the matching torchvision
(torchvision's PyPI wheel does not load against the `+cpu` torch the stack uses), and fowm_core
itself. It then runs itself inside that environment. When the environment cannot be built (no
registry, no disk), it prints why and writes a `skipped` result; it never fails `make bench`.

Both sides use the paper's sizes: rgb 84x84 + an 8-d state, 4-d actions, 512 + 51 samples, 6
iterations, 50 elites, horizon 5, 5 Qs, MLP width 512; updates at batch 256. Writes
<out>/peer.{json,md}.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench-venv" / "lerobot"
LEROBOT = "lerobot==0.4.4"
# torch as the stack pins it, from PyPI's default build; torchvision built against that torch
TORCH = ["torch==2.13.0", "torchvision==0.28.0"]
# what `import lerobot.policies.tdmpc.modeling_tdmpc` needs (bounds from lerobot 0.4.4's metadata)
LEROBOT_RUNTIME = [
    "numpy", "pyyaml", "packaging", "termcolor", "safetensors", "einops>=0.8,<0.9", "draccus==0.10.0",
    "huggingface-hub>=0.34.2,<0.36", "datasets>=4,<5", "accelerate>=1.10,<2", "diffusers>=0.27.2,<0.36",
    "imageio>=2.34,<3", "av>=15,<16", "pyserial>=3.5,<4", "deepdiff>=7.0.1,<9",
]  # fmt: skip
STAMP = VENV / ".complete"


def _pip_env() -> dict[str, str]:
    """PyPI's default index only: the stack's pip configuration points at the `+cpu` torch wheel."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def build_venv() -> str | None:
    """Create the peer environment if it is not complete. Returns None, or why it could not be built."""
    if STAMP.exists():
        return None
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        pip + TORCH + LEROBOT_RUNTIME,
        [*pip, "--no-deps", LEROBOT],
        [*pip, "--no-deps", "-e", str(ROOT / "ros2_ws" / "src" / "fowm_core")],
        [str(VENV / "bin" / "python"), "-c", "import lerobot.policies.tdmpc.modeling_tdmpc, fowm_core.agent"],
    ]
    print(f"building the peer environment in {VENV} (once; downloads torch and lerobot)", flush=True)
    for cmd in steps:
        try:
            r = subprocess.run(cmd, env=_pip_env(), capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{' '.join(cmd[:4])}...: {e}"
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            return f"`{' '.join(cmd[2:6])} ...` failed: {' | '.join(tail)}"
    STAMP.write_text(f"{LEROBOT} {' '.join(TORCH)}\n")
    return None


# -- inside the peer environment ---------------------------------------------------------------------


def _median_ms(xs: list[float]) -> float:
    return 1e3 * statistics.median(xs)


def _p99_ms(xs: list[float]) -> float:
    import numpy as np

    return 1e3 * float(np.percentile(np.asarray(xs), 99))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from bench_core import set_up_allocator
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.tdmpc.configuration_tdmpc import TDMPCConfig
    from lerobot.policies.tdmpc.modeling_tdmpc import TDMPCPolicy

    from fowm_core.agent import FOWMAgent
    from fowm_core.config import load_config
    from fowm_core.planner import plan_flops
    from fowm_core.specs import ObservationSpec

    torch.set_num_threads(args.threads)
    # the process as the planner node runs it; LeRobot's plans share the process and its allocator
    malloc_tuned = set_up_allocator(args)
    torch.manual_seed(0)
    spec = ObservationSpec.make(rgb=(3, 84, 84), state_dim=8)
    rng = np.random.default_rng(0)
    rgb = torch.as_tensor(rng.integers(0, 256, (3, 84, 84), dtype=np.uint8))
    state = torch.randn(8)

    # LeRobot's TD-MPC with its defaults, which are FOWM's xArm numbers
    feats = {
        "observation.image": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 84, 84)),
        "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(8,)),
    }
    lcfg = TDMPCConfig(
        input_features=feats, output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(4,))}
    )
    lcfg.device = "cpu"
    peer = TDMPCPolicy(lcfg)
    peer.eval()
    lobs = {"observation.image": rgb[None].float() / 255.0, "observation.state": state[None]}

    def peer_plan() -> None:
        with torch.no_grad():
            peer.plan(peer.model.encode(lobs))

    lerobot_flops = plan_flops(load_config("paper"), spec, reuse_proposals=False)
    ours = {}
    variants = [("paper", "float32", False), ("paper", "bfloat16", False)]
    if not args.quick:
        variants += [("paper", "float32", True), ("paper", "bfloat16", True)]
    obs = {"rgb": rgb, "state": state}
    for preset, dtype, compiled in variants:
        cfg = load_config(preset, {"planner": {"dtype": dtype, "compile": compiled}})
        agent = FOWMAgent(cfg, spec, 4)
        agent.planner.set_model(agent.model)
        seconds = agent.planner.warmup(obs)
        name = f"ours {preset} {dtype}" + (" compiled" if compiled else "")
        print(f"{name}: warmup {seconds:.1f} s", flush=True)
        ours[name] = (agent.planner, plan_flops(cfg, spec))

    def mm_peak(dtype: torch.dtype) -> float:
        a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
        best = float("inf")
        for _ in range(4):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        return 2 * 2048**3 / best / 1e9

    peaks = {"float32": mm_peak(torch.float32), "bfloat16": mm_peak(torch.bfloat16)}
    peer_plan()
    times: dict[str, list[float]] = {"lerobot fp32": [], **{k: [] for k in ours}}
    cpu: dict[str, list[float]] = {k: [] for k in times}  # the thread's CPU time: robust to oversubscription

    def timed(name: str, fn: Any) -> None:
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
        cpu[name].append(time.thread_time() - c0)

    for _ in range(args.plans):  # interleaved: one of each per round
        timed("lerobot fp32", peer_plan)
        for name, (planner, _) in ours.items():
            timed(name, lambda planner=planner: planner.plan(obs))
    peaks = {k: max(v, mm_peak(getattr(torch, k))) for k, v in peaks.items()}
    # FLOPs each side executes: ours scores the policy proposals' rollout once per plan, LeRobot (as
    # the official code) at every iteration; the returns are the same
    flops = {name: f for name, (_, f) in ours.items()}
    flops["lerobot fp32"] = lerobot_flops
    base, cpu_base = _median_ms(times["lerobot fp32"]), _median_ms(cpu["lerobot fp32"])
    plans = []
    for name, xs in times.items():
        dtype = "bfloat16" if "bfloat16" in name else "float32"
        p50, cpu50 = _median_ms(xs), _median_ms(cpu[name])
        plans.append({
            "planner": name, "p50_ms": p50, "p99_ms": _p99_ms(xs), "speedup_vs_lerobot": base / p50,
            "cpu_p50_ms": cpu50, "cpu_speedup_vs_lerobot": cpu_base / cpu50,
            "fraction_of_peak": flops[name] / (p50 / 1e3) / 1e9 / peaks[dtype], "peak_dtype": dtype,
        })  # fmt: skip

    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "lerobot": LEROBOT,
        "matmul_peak_gflops": peaks, "plan_gflop": flops[next(iter(ours))] / 1e9,
        "lerobot_plan_gflop": lerobot_flops / 1e9, "plans": plans, "updates": [],
        "load_before": args.load_before, "load_after": list(os.getloadavg()), "malloc_tuned": malloc_tuned,
    }  # fmt: skip
    print(to_markdown({**res, "updates": []}), flush=True)  # the plans survive a failing update run
    try:
        res["updates"] = measure_updates(args, peer, lcfg, spec) if args.updates > 0 else []
    except Exception as e:  # report the plans, and why the updates are missing
        res["updates_error"] = f"{type(e).__name__}: {e}"
    res["load_after"] = list(os.getloadavg())
    return res


def measure_updates(args: argparse.Namespace, peer: Any, lcfg: Any, spec: Any) -> list[dict[str, Any]]:
    """One optimiser step each at batch 256, interleaved: LeRobot's forward + backward + Adam + EMA,
    ours `FOWMAgent.update` (paper preset; fp32 and, where the config has it, bf16 autocast)."""
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_core import synthetic_buffer

    from fowm_core.agent import FOWMAgent
    from fowm_core.config import OptimConfig, load_config

    B, T = 256, lcfg.horizon
    peer.train()
    optim = torch.optim.Adam(peer.parameters(), lr=lcfg.optimizer_lr)
    batch = {
        "observation.image": torch.rand(B, T + 1, 3, 84, 84),
        "observation.state": torch.randn(B, T + 1, 8),
        "action": torch.rand(B, T, 4) * 2 - 1,
        "next.reward": torch.randn(B, T),
        "observation.state_is_pad": torch.zeros(B, T + 1, dtype=torch.bool),
        "action_is_pad": torch.zeros(B, T, dtype=torch.bool),
        "next.reward_is_pad": torch.zeros(B, T, dtype=torch.bool),
        "index": torch.arange(B),
    }

    def peer_update() -> None:
        loss, _ = peer.forward(dict(batch))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peer.parameters(), 10.0)  # lerobot's AdamConfig default, as FOWM
        optim.step()
        peer.update()

    ours = {}
    amp = ["float32"] + (["bfloat16"] if "amp_dtype" in OptimConfig.__dataclass_fields__ else [])
    for dtype in amp:
        over = {"optim": {"amp_dtype": dtype}} if len(amp) > 1 else {}
        cfg = load_config("paper", over)
        agent = FOWMAgent(cfg, spec, 4)
        buf = synthetic_buffer(spec, cfg.optim.horizon)
        rng = np.random.default_rng(0)
        ours[f"ours paper update {dtype}"] = (agent, buf, rng)

    times: dict[str, list[float]] = {"lerobot update fp32": [], **{k: [] for k in ours}}
    peer_update()
    for agent, buf, rng in ours.values():
        agent.update(buf.sample(256, rng))
    for _ in range(args.updates):
        t0 = time.perf_counter()
        peer_update()
        times["lerobot update fp32"].append(time.perf_counter() - t0)
        for name, (agent, buf, rng) in ours.items():
            b = buf.sample(256, rng)
            t0 = time.perf_counter()
            agent.update(b)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["lerobot update fp32"])
    return [
        {"update": k, "p50_ms": _median_ms(v), "updates_per_s": 1 / statistics.median(v),
         "speedup_vs_lerobot": base / statistics.median(v)}
        for k, v in times.items()
    ]  # fmt: skip


def to_markdown(res: dict[str, Any]) -> str:
    from bench_core import allocator_note

    if "skipped" in res:
        return f"# Peer benchmark (LeRobot TD-MPC)\n\nSkipped: {res['skipped']}\n"
    pk = res["matmul_peak_gflops"]
    lines = [
        "# Peer benchmark: LeRobot TD-MPC vs fowm_core",
        "",
        f"{res['date']}, {res['machine']}, torch {res['torch']}, {res['threads']} torch thread(s), "
        f"{res['lerobot']}; 1-min load average before/after: {res['load_before'][0]:.1f}/"
        f"{res['load_after'][0]:.1f}. Matmul peak in this run: fp32 {pk['float32']:.0f}, "
        f"bf16 {pk['bfloat16']:.0f} GFLOP/s. One plan (rgb 84x84 + state, 512 + 51 samples, "
        f"6 iterations, 5 Qs) = {res.get('lerobot_plan_gflop', res['plan_gflop']):.0f} GFLOP as LeRobot "
        f"computes it, {res['plan_gflop']:.0f} GFLOP in ours, which scores the policy proposals' "
        "rollout once per plan instead of at every iteration (same returns).",
        "",
        allocator_note(res.get("malloc_tuned")) + " Both sides run in this process under it.",
        "",
        "CPU ms: the planning thread's own CPU time (what a plan costs with a core to itself).",
        "",
        "| plan (encode + plan) | p50 ms | p99 ms | speed vs LeRobot fp32 | CPU p50 ms "
        "| CPU speed vs LeRobot | fraction of matmul peak |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["plans"]:
        lines.append(
            f"| {r['planner']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['speedup_vs_lerobot']:.2f}x | "
            f"{r['cpu_p50_ms']:.0f} | {r['cpu_speedup_vs_lerobot']:.2f}x | "
            f"{r['fraction_of_peak']:.2f} ({r['peak_dtype']}) |"
        )
    if res.get("updates_error"):
        lines += ["", f"Updates not measured: {res['updates_error']}"]
    if res["updates"]:
        lines += ["", "| update, batch 256 | p50 ms | updates/s | speed vs LeRobot |", "|---|---:|---:|---:|"]
        for r in res["updates"]:
            lines.append(
                f"| {r['update']} | {r['p50_ms']:.0f} | {r['updates_per_s']:.2f} | "
                f"{r['speedup_vs_lerobot']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    from bench_core import add_allocator_option

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions, no compiled variant")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--plans", type=int, default=0, help="plans per planner (default 10, quick 3)")
    p.add_argument("--updates", type=int, default=-1, help="updates per side (default 5, quick 2; 0: none)")
    p.add_argument("--out", default=str(ROOT / "bench-results"))
    add_allocator_option(p)
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)  # running inside the venv
    p.add_argument("--load-before", type=float, nargs="*", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    a.plans = a.plans or (3 if a.quick else 10)
    a.updates = a.updates if a.updates >= 0 else (2 if a.quick else 5)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.inner:
        why = build_venv()
        if why is None:
            cmd = [
                str(VENV / "bin" / "python"), __file__, "--inner", "--out", str(out),
                "--threads", str(a.threads), "--plans", str(a.plans), "--updates", str(a.updates),
                "--load-before", *map(str, os.getloadavg()),
            ]  # fmt: skip
            cmd += ["--quick"] if a.quick else []
            cmd += ["--default-allocator"] if a.default_allocator else []
            r = subprocess.run(cmd)
            if r.returncode == 0:
                return 0
            why = f"the peer run exited with {r.returncode}"
        print(f"peer benchmark skipped: {why}", flush=True)
        res = {"skipped": why}
        (out / "peer.json").write_text(json.dumps(res, indent=2))
        (out / "peer.md").write_text(to_markdown(res))
        return 0
    res = measure(a)
    (out / "peer.json").write_text(json.dumps(res, indent=2))
    (out / "peer.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
