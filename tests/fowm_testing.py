"""Test harness shared by every test tier: DDS isolation, node processes, and spin helpers.

Imported by tests/conftest.py (which puts tests/ on sys.path) and by tests that need the
helpers directly: `from fowm_testing import spin_until, wait_for_messages`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO_ROOT / "ros2_ws/src/fowm_bringup/config/fastdds.xml"
SHM_DIR = Path("/dev/shm")
_FASTDDS_SHM_PREFIXES = ("fastrtps_", "sem.fastrtps_", "fast_datasharing_", "sem.fast_datasharing_")


def isolated_ros_environment(domain_id: int, log_dir: Path) -> dict[str, str]:
    """Environment variables that keep one test session's DDS traffic to itself."""
    if not 1 <= domain_id <= 101:
        raise ValueError(f"ROS_DOMAIN_ID must be in 1..101, got {domain_id}")
    return {
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": str(log_dir),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
        "PYTHONUNBUFFERED": "1",
    }


def fastdds_shm_files() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if p.name.startswith(_FASTDDS_SHM_PREFIXES)}


def _shm_files_in_use() -> set[str]:
    """Names of /dev/shm files some live process has mapped or open (those must survive)."""
    in_use: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for line in (proc / "maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    in_use.add(line.rsplit("/dev/shm/", 1)[1].strip())
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("/dev/shm/"):
                        in_use.add(target[len("/dev/shm/"):])
    return in_use


def remove_stale_fastdds_shm(existing_before: set[str]) -> list[str]:
    """Remove Fast DDS shared-memory files created since `existing_before` that no live process
    uses any more (the ones killed node processes leave behind). Returns the removed names."""
    in_use = _shm_files_in_use()
    removed = []
    for name in sorted(fastdds_shm_files() - existing_before - in_use):
        with contextlib.suppress(FileNotFoundError):
            (SHM_DIR / name).unlink()
            removed.append(name)
    return removed


class NodeProcesses:
    """Starts real ROS 2 node processes and always tears them down.

    Each process runs in its own process group (so children die with it) and writes its
    output to `<log_dir>/<name>.log`, which tests can read and which is printed on failure.
    """

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}

    def start(self, args: list[str], name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        if name in self._procs:
            raise ValueError(f"a process named {name!r} is already running")
        log_path = self.log_dir / f"{name}.log"
        env = {**os.environ, **self.env, **(extra_env or {})}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, start_new_session=True
            )
        self._procs[name] = proc
        self._logs[name] = log_path
        return proc

    def start_module(self, module: str, name: str, ros_args: list[str] | None = None) -> subprocess.Popen:
        """Start `python -m module --ros-args ...` with the test's interpreter."""
        args = [sys.executable, "-m", module]
        if ros_args:
            args += ["--ros-args", *ros_args]
        return self.start(args, name)

    def log(self, name: str) -> str:
        return self._logs[name].read_text(errors="replace") if name in self._logs else ""

    def assert_running(self, name: str) -> None:
        proc = self._procs[name]
        if proc.poll() is not None:
            raise AssertionError(f"process {name!r} exited with {proc.returncode}:\n{self.log(name)[-4000:]}")

    def stop(self, name: str, timeout_s: float = 10.0) -> int | None:
        """SIGINT (a clean rclpy shutdown), then SIGKILL to the whole process group."""
        proc = self._procs.pop(name)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
        # Children that outlived their parent still belong to its group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self._procs):
            self.stop(name)

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(
            f"----- {n}.log -----\n{p.read_text(errors='replace')[-chars:]}" for n, p in self._logs.items()
        )


def spin_until(node, predicate: Callable[[], bool], timeout_s: float, period_s: float = 0.01) -> bool:
    """Spin `node` (single-threaded) until `predicate()` is true or the timeout passes."""
    import rclpy

    executor = node.executor
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if executor is not None:
            executor.spin_once(timeout_sec=period_s)
        else:
            rclpy.spin_once(node, timeout_sec=period_s)
    return predicate()


def wait_for_messages(node, topics: dict[str, type], timeout_s: float, qos=None) -> dict[str, object]:
    """Subscribe to each topic and wait for its first message. Raises TimeoutError naming the
    topics that stayed silent."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = qos or QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    first: dict[str, object] = {}
    subs = [
        node.create_subscription(msg_type, topic, lambda m, t=topic: first.setdefault(t, m), qos)
        for topic, msg_type in topics.items()
    ]
    try:
        spin_until(node, lambda: len(first) == len(topics), timeout_s)
    finally:
        for sub in subs:
            node.destroy_subscription(sub)
    missing = sorted(set(topics) - set(first))
    if missing:
        raise TimeoutError(f"no message within {timeout_s:.0f} s on {missing}")
    return first


@contextlib.contextmanager
def rclpy_node(name: str) -> Iterator:
    """An in-process node with its own context and single-threaded executor (`node.executor`),
    all destroyed afterwards."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
