"""`colcon build` of ros2_ws (colcon-core + colcon-ros from PyPI) into a temporary directory: every
package installs, with its console scripts, launch files and configs where a ROS install expects
them (lib/<pkg>/<script> for `ros2 run`, share/<pkg>/launch and config for `ros2 launch`, the
ament resource index), and the installed runner finds the installed configs."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fowm_bringup.graph import GRAPHS

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "ros2_ws/src"
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "package.xml").is_file())
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _console_scripts(package: str) -> list[str]:
    """Script names declared in a package's setup.py (entry_points console_scripts)."""
    tree = ast.parse((SRC / package / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return [e.value.split("=")[0].strip() for e in value.elts]
    return []


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colcon")
    colcon = Path(sys.executable).parent / "colcon"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        [str(colcon), "--log-base", str(root / "log"), "build", "--base-paths", str(SRC),
         "--build-base", str(root / "build"), "--install-base", str(root / "install")],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for package in PACKAGES:
        assert f"Finished <<< {package}" in result.stdout, f"{package} did not build"
    return root / "install"


def test_workspace_has_the_six_packages():
    assert PACKAGES == ["fowm_bringup", "fowm_core", "fowm_planner", "fowm_sim", "fowm_trainer", "fowm_xarm"]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_installs_where_ros_expects_it(install, package):
    prefix = install / package
    assert (prefix / "share/ament_index/resource_index/packages" / package).is_file()
    assert (prefix / "share" / package / "package.xml").is_file()
    assert (prefix / "lib" / PY / "site-packages" / package / "__init__.py").is_file()
    for script in _console_scripts(package):
        exe = prefix / "lib" / package / script
        assert exe.is_file() and os.access(exe, os.X_OK), f"`ros2 run {package} {script}` would not find it"


def test_bringup_installs_every_launch_file_and_config(install):
    share = install / "fowm_bringup/share/fowm_bringup"
    for graph in GRAPHS.values():
        assert (share / "launch" / f"{graph.name}.launch.py").is_file(), graph.name
        assert (share / "config" / graph.params_file).is_file(), graph.name
        for arg in graph.arguments:
            if arg.config_file:
                assert (share / "config" / arg.default).is_file(), arg.name
    assert (share / "config/fastdds.xml").is_file()


def test_installed_runner_and_console_script_work_from_the_install(install, tmp_path):
    """With only the install on the paths (as `source install/setup.bash` sets them), the runner
    resolves the graph's params file in the installed share directory, and an installed console
    script starts."""
    site = [str(install / p / "lib" / PY / "site-packages") for p in PACKAGES]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(site),
        "AMENT_PREFIX_PATH": os.pathsep.join(str(install / p) for p in PACKAGES),
    }
    code = (
        "import fowm_bringup.run as r, fowm_bringup.graph as g; print(r.__file__); "
        "sim = g.GRAPHS['sim']; print(r.node_commands(sim, r.parse_launch_arguments(sim, []))['fowm_sim'])"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {site!r}; {code}"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    module_file, command = out.stdout.splitlines()
    assert module_file.startswith(str(install)), "the installed fowm_bringup was imported"
    assert str(install / "fowm_bringup/share/fowm_bringup/config/sim.yaml") in command
    script = install / "fowm_trainer/lib/fowm_trainer/fowm-train-success-classifier"
    help_out = subprocess.run([str(script), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert help_out.returncode == 0 and "--bags" in help_out.stdout, help_out.stderr
