"""Start a node graph without `ros2 launch` (pip installs have no launch wheels).

    python -m fowm_bringup.run sim task:=push clock_mode:=lockstep
    python -m fowm_bringup.run sim --list          # the graph's nodes and launch arguments

Each node of fowm_bringup.graph.GRAPHS[name] runs as its own process
(`python -m <module> --ros-args -r __node:=<name> --params-file <yaml> -p k:=v`), exactly the
nodes and parameters the matching launch file starts. Ctrl-C stops them all; if one node exits,
the others are stopped and the runner exits with that node's code.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fowm_bringup.graph import CONFIG_DIR, GRAPHS, Graph


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


def node_commands(graph: Graph, values: dict[str, str], python: str = sys.executable) -> dict[str, list[str]]:
    params_file = config_dir() / graph.params_file
    if not params_file.is_file():
        raise FileNotFoundError(f"parameter file {params_file} of graph {graph.name!r} is missing")
    commands = {}
    for node in graph.nodes:
        cmd = [python, "-m", node.module, "--ros-args", "-r", f"__node:={node.name}"]
        cmd += ["--params-file", str(params_file)]
        for arg in graph.arguments:
            if arg.node == node.name:
                cmd += ["-p", f"{arg.parameter}:={values[arg.name]}"]
        commands[node.name] = cmd
    return commands


def describe(graph: Graph) -> str:
    lines = [f"{graph.name}: {graph.doc}", "nodes:"]
    lines += [f"  {n.name:<16} {n.package}/{n.executable}  {n.doc}" for n in graph.nodes]
    lines.append("launch arguments:")
    lines += [f"  {a.name}:={a.default:<10} {a.description}" for a in graph.arguments]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("graph", choices=sorted(GRAPHS), help="node graph to start")
    p.add_argument("arguments", nargs="*", help="launch arguments name:=value")
    p.add_argument("--list", action="store_true", help="print the graph's nodes and arguments and exit")
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
    procs = {name: subprocess.Popen(cmd, env=os.environ.copy()) for name, cmd in commands.items()}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        exited = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        if exited:
            name, code = next(iter(exited.items()))
            print(f"run: node {name} exited with {code}; stopping the graph", file=sys.stderr)
            break
        time.sleep(0.2)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return code


if __name__ == "__main__":
    sys.exit(main())
