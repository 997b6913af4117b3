"""Session-wide DDS isolation and the fixtures every ROS test uses.

Each pytest session reserves its own ROS_DOMAIN_ID (1..100, via domain_coordinator's port lock,
so concurrent runs never cross-talk), limits discovery to localhost, keeps ROS logs in a temp
dir, and on exit removes the Fast DDS shared-memory files its killed processes left in /dev/shm.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# MuJoCo picks its GL backend at first import: headless EGL unless the user chose otherwise.
os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).parent))

from fowm_testing import (
    NodeProcesses,
    fastdds_shm_files,
    isolated_ros_environment,
    rclpy_node,
    remove_stale_fastdds_shm,
)

_session_stack = contextlib.ExitStack()
_shm_before: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    global _shm_before
    from domain_coordinator import domain_id

    candidates = iter(random.sample(range(1, 101), 100))  # random order: concurrent runs rarely collide

    def selector() -> int:
        return next(candidates)

    reserved = _session_stack.enter_context(domain_id(selector))
    log_dir = Path(_session_stack.enter_context(tempfile.TemporaryDirectory(prefix="fowm-roslog-")))
    os.environ.update(isolated_ros_environment(reserved, log_dir))
    _shm_before = fastdds_shm_files()


def pytest_unconfigure(config: pytest.Config) -> None:
    remove_stale_fastdds_shm(_shm_before)
    _session_stack.close()


def pytest_report_header(config: pytest.Config) -> str:
    return f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID')} (localhost discovery, isolated logs)"


@pytest.fixture
def ros_processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NodeProcesses]:
    """Start real node processes: `ros_processes.start([...], name)`; torn down after the test,
    with their log tails printed if the test failed."""
    procs = NodeProcesses(tmp_path, {k: os.environ[k] for k in isolated_ros_environment(1, tmp_path)})
    try:
        yield procs
    finally:
        procs.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(procs.log_tails())


@pytest.fixture
def ros_node(request: pytest.FixtureRequest):
    """An in-process rclpy node for the test to publish, subscribe and spin with."""
    name = "test_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:60]
    with rclpy_node(name) as node:
        yield node


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
