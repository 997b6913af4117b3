"""The workspace packages are valid ament_python packages and respect the import rules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "ros2_ws" / "src"
PACKAGES = ["fowm_core", "fowm_xarm", "fowm_sim", "fowm_planner", "fowm_trainer", "fowm_bringup"]

# DESIGN.md section 2: who may import whom (besides itself).
ALLOWED_IMPORTS = {
    "fowm_core": set(),
    "fowm_xarm": set(),
    "fowm_sim": {"fowm_xarm"},
    "fowm_planner": {"fowm_core", "fowm_xarm"},
    "fowm_trainer": {"fowm_core", "fowm_xarm"},
    "fowm_bringup": {"fowm_core", "fowm_xarm", "fowm_sim", "fowm_planner", "fowm_trainer"},
}


def imported_top_level_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_package_xml_is_valid_format_3(package):
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(SRC / package / "package.xml"))  # validates against the format
    assert pkg.name == package
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_python"
    assert (SRC / package / "resource" / package).is_file()
    assert (SRC / package / "setup.cfg").is_file()


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_package_graph(package):
    others = set(PACKAGES) - {package}
    violations = []
    for path in sorted((SRC / package / package).rglob("*.py")):
        bad = (imported_top_level_modules(path) & others) - ALLOWED_IMPORTS[package]
        violations += [f"{path.relative_to(SRC)} imports {name}" for name in sorted(bad)]
    assert not violations, "\n".join(violations)


def test_fowm_core_never_imports_rclpy():
    statically = [
        str(p.relative_to(SRC))
        for p in sorted((SRC / "fowm_core" / "fowm_core").rglob("*.py"))
        if imported_top_level_modules(p) & {"rclpy", "rosidl_runtime_py", "launch", "launch_ros"}
    ]
    assert not statically, f"fowm_core modules import ROS: {statically}"
    # And at run time: importing every core module pulls in no ROS module indirectly.
    code = (
        "import importlib, pkgutil, sys, fowm_core\n"
        "for m in pkgutil.walk_packages(fowm_core.__path__, 'fowm_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "ros = ('rclpy', 'rcl_interfaces', 'sensor_msgs')\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ros)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing fowm_core loaded ROS modules: {out.stdout.strip()}"


def test_import_rule_check_catches_a_violation(tmp_path):
    # Guard against a checker that can never fail.
    bad = tmp_path / "bad.py"
    bad.write_text("import rclpy\nfrom fowm_sim.env import XArmTaskEnv\n")
    assert imported_top_level_modules(bad) == {"rclpy", "fowm_sim"}
