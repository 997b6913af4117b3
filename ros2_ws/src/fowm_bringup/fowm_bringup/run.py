"""Start a node graph without `ros2 launch` (pip installs have no launch wheels).

    python -m fowm_bringup.run sim task:=push clock_mode:=lockstep
    python -m fowm_bringup.run sim --list          # the graph's nodes and launch arguments

Each node of fowm_bringup.graph.GRAPHS[name] runs as its own process, exactly the nodes and
parameters the matching launch file starts (fowm_bringup.launch_support):
    ROS node:  python -m <module> --ros-args -r __node:=<name> --params-file <yaml> -p k:=v ...
    CLI node:  python -m <module> --config <yaml> --k v ...
Their output is forwarded line by line with a `[node]` prefix. The node that reads the operator's
keys (teleop) gets this terminal as stdin; the others get none.

Ctrl-C (or SIGTERM) stops every node with SIGINT (a clean rclpy shutdown), SIGKILL after
`--grace` seconds; then the Fast DDS shared-memory files that killed nodes may have left in
/dev/shm are removed. If a required node exits, the others are stopped the same way and the
runner exits with that node's code. If the runner itself is killed, its nodes get SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from fowm_bringup.graph import CLI_NODE, CONFIG_DIR, GRAPHS, Graph, LaunchArgument

SHM_DIR = Path("/dev/shm")
_FASTDDS_SHM_PREFIXES = ("fastrtps_", "sem.fastrtps_", "fast_datasharing_", "sem.fast_datasharing_")


def config_dir() -> Path:
    """Source-tree config (editable installs) or the installed share directory (colcon)."""
    if CONFIG_DIR.is_dir():
        return CONFIG_DIR
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("fowm_bringup")) / "config"


def parse_launch_arguments(graph: Graph, items: list[str]) -> dict[str, str]:
    known = {a.name: a for a in graph.arguments}
    values = {a.name: a.default for a in graph.arguments}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep:
            raise ValueError(f"launch arguments look like name:=value, got {item!r}")
        if name not in known:
            raise ValueError(f"graph {graph.name!r} has no launch argument {name!r}; it has {sorted(known)}")
        values[name] = value
    return values


def argument_value(arg: LaunchArgument, value: str) -> str:
    """The value a node gets: config-file arguments resolve in the config directory."""
    return str(config_dir() / value) if arg.config_file else value


def node_commands(graph: Graph, values: dict[str, str], python: str = sys.executable) -> dict[str, list[str]]:
    if not graph.runnable_without_ros:
        ros_only = [n.name for n in graph.nodes if not n.module]
        raise ValueError(
            f"graph {graph.name!r} has nodes that are not Python ({ros_only}): it needs a ROS install, "
            f"`ros2 launch fowm_bringup {graph.name}.launch.py`"
        )
    params_file = config_dir() / graph.params_file
    if not params_file.is_file():
        raise FileNotFoundError(f"parameter file {params_file} of graph {graph.name!r} is missing")
    commands = {}
    for node in graph.nodes:
        targeted = [(a, p) for a in graph.arguments for p in a.parameter_for(node.name)]
        if node.interface == CLI_NODE:
            cmd = [python, "-m", node.module, *node.arguments, "--config", str(params_file)]
            for arg, parameter in targeted:
                cmd += ["--" + parameter.replace("_", "-"), argument_value(arg, values[arg.name])]
        else:
            cmd = [python, "-m", node.module, *node.arguments, "--ros-args", "-r", f"__node:={node.name}"]
            cmd += ["--params-file", str(params_file)]
            for arg, parameter in targeted:
                cmd += ["-p", f"{parameter}:={argument_value(arg, values[arg.name])}"]
        commands[node.name] = cmd
    return commands


def describe(graph: Graph) -> str:
    lines = [f"{graph.name}: {graph.doc}", "nodes:"]
    lines += [f"  {n.name:<22} {n.package}/{n.executable}  {n.doc}" for n in graph.nodes]
    lines.append("launch arguments:")
    lines += [f"  {a.name}:={a.default:<14} {a.description}" for a in graph.arguments]
    if not graph.runnable_without_ros:
        lines.append(f"(ROS install only: ros2 launch fowm_bringup {graph.name}.launch.py)")
    return "\n".join(lines)


def fastdds_shm_files() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(_FASTDDS_SHM_PREFIXES)}


def _shm_in_use() -> set[str]:
    """/dev/shm names some live process has mapped or open (those must stay)."""
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (proc / "maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    used.add(line.rsplit("/dev/shm/", 1)[1].strip())
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("/dev/shm/"):
                        used.add(target[len("/dev/shm/") :])
    return used


def remove_stale_shm(before: set[str]) -> list[str]:
    """Remove Fast DDS shared-memory files created since `before` that no live process uses."""
    removed = []
    for name in sorted(fastdds_shm_files() - before - _shm_in_use()):
        with contextlib.suppress(FileNotFoundError):
            (SHM_DIR / name).unlink()
            removed.append(name)
    return removed


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the runner dies, even by SIGKILL (Linux prctl), so a
    killed runner never leaves orphaned nodes on the DDS domain."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _forward(name: str, stream: IO[bytes], lock: threading.Lock, width: int) -> None:
    prefix = f"[{name}]".ljust(width + 3).encode()
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.buffer.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            sys.stdout.buffer.flush()
    stream.close()


def stop(procs: dict[str, subprocess.Popen], grace_s: float) -> None:
    """SIGINT to every node's process group, SIGKILL to those still alive after grace_s."""
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in procs.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for name, proc in procs.items():
        if proc.poll() is None:
            print(f"run: node {name} ignored SIGINT for {grace_s:.0f} s; killing it", file=sys.stderr)
        # Children a node left behind belong to its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("graph", choices=sorted(GRAPHS), help="node graph to start")
    p.add_argument("arguments", nargs="*", help="launch arguments name:=value")
    p.add_argument("--list", action="store_true", help="print the graph's nodes and arguments and exit")
    p.add_argument("--grace", type=float, default=15.0, help="seconds a node gets to exit after SIGINT")
    a = p.parse_args(argv)
    graph = GRAPHS[a.graph]
    if a.list:
        print(describe(graph))
        return 0
    try:
        commands = node_commands(graph, parse_launch_arguments(graph, a.arguments))
    except (ValueError, FileNotFoundError) as e:
        print(f"run: {e}", file=sys.stderr)
        return 2

    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    shm_before = fastdds_shm_files()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    lock = threading.Lock()
    width = max(len(n) for n in commands)
    procs: dict[str, subprocess.Popen] = {}
    forwarders = []
    specs = {n.name: n for n in graph.nodes}
    for name, cmd in commands.items():
        # Own process group: Ctrl-C reaches the runner only, which stops the nodes in order.
        procs[name] = subprocess.Popen(
            cmd,
            env=env,
            stdin=None if specs[name].terminal else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        t = threading.Thread(target=_forward, args=(name, procs[name].stdout, lock, width), daemon=True)
        t.start()
        forwarders.append(t)
    started = ", ".join(f"{n} ({p.pid})" for n, p in procs.items())
    print(f"run: {graph.name}: started {started}", file=sys.stderr)

    code = 0
    reported: set[str] = set()
    while not stopping.wait(0.2):
        exited = {n: pr.returncode for n, pr in procs.items() if pr.poll() is not None and n not in reported}
        required = {n: c for n, c in exited.items() if specs[n].required}
        for name, rc in exited.items():
            reported.add(name)
            if name not in required:
                print(f"run: node {name} exited with {rc} (not required; the graph goes on)", file=sys.stderr)
        if required:
            name, code = next(iter(required.items()))
            print(f"run: required node {name} exited with {code}; stopping the graph", file=sys.stderr)
            break
    stop(procs, a.grace)
    for t in forwarders:
        t.join(timeout=2.0)
    removed = remove_stale_shm(shm_before)
    if removed:
        print(f"run: removed {len(removed)} stale Fast DDS shared-memory file(s)", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
