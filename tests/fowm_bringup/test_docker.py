"""The Docker images install what `make setup` installs, and pass hadolint; the compose file wires
the robot and GPU-trainer services to things that exist. (No Docker engine here: nothing is built.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "docker/Dockerfile", REPO / "docker/Dockerfile.cuda"]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _pins(path: Path) -> dict[str, str]:
    """name -> version of the `name==version` lines (extras dropped, names normalised)."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s#]+)", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(3)
    return pins


def _run_lines(dockerfile: Path) -> str:
    """The Dockerfile's RUN instructions, continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    return "\n".join(line for line in text.splitlines() if line.startswith("RUN "))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_the_pins_of_make_setup(dockerfile):
    text = dockerfile.read_text()
    runs = _run_lines(dockerfile)
    requirements = _pins(REPO / "requirements.txt")
    assert re.search(r"^FROM ros:jazzy-ros-base", text, re.M), "official ROS 2 Jazzy image"
    assert "COPY requirements.txt constraints.txt" in text
    # Exactly the ros-jazzy-* wheels are filtered out (apt provides those), from both pin files.
    filters = re.findall(r"grep -vE '([^']+)' (requirements|constraints)\.txt", runs)
    assert sorted(filters) == [("^ros-jazzy-", "constraints"), ("^ros-jazzy-", "requirements")]
    assert "pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/constraints.txt" in runs
    torch = re.findall(r"torch==([\w.+]+)", runs)
    assert torch == [requirements["torch"]], "torch pinned as in requirements.txt"
    # Every ROS wheel of the pip path has its apt package (same name) in the image.
    apt = set(re.findall(r"\b(ros-jazzy-[a-z0-9-]+)", runs))
    wheels = {name for name in requirements if name.startswith("ros-jazzy-")}
    assert wheels <= apt, f"ROS wheels without an apt package in {dockerfile.name}: {sorted(wheels - apt)}"
    assert "colcon build" in runs and "COPY ros2_ws/src" in text
    assert 'ENTRYPOINT ["/entrypoint.sh"]' in text


def test_requirements_pins_agree_with_constraints():
    """The images install requirements under constraints.txt: a disagreement would fail the build."""
    requirements, constraints = _pins(REPO / "requirements.txt"), _pins(REPO / "constraints.txt")
    for name, version in requirements.items():
        if name.startswith("ros-jazzy-"):
            continue  # ROS wheels register other distribution names; constraints.txt leaves them out
        assert constraints.get(name) == version, (
            f"{name}: requirements {version}, constraints {constraints.get(name)}"
        )


@pytest.mark.skipif(not HADOLINT.exists() and not shutil.which("hadolint"), reason="hadolint not installed")
def test_hadolint_passes_and_would_catch_a_bad_dockerfile(tmp_path):
    exe = str(HADOLINT if HADOLINT.exists() else shutil.which("hadolint"))
    config = str(REPO / ".hadolint.yaml")
    ok = subprocess.run([exe, "--config", config, *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ros:jazzy-ros-base\nRUN pip install numpy\nRUN cd /tmp && ls | wc -l\n")
    out = subprocess.run([exe, "--config", config, str(bad)], capture_output=True, text=True)
    assert out.returncode != 0 and "DL3013" in out.stdout  # unpinned pip package


def test_compose_services_use_things_that_exist():
    compose = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    robot, trainer = compose["services"]["robot"], compose["services"]["trainer"]
    for service in (robot, trainer):
        assert service["network_mode"] == "host"
        assert (
            REPO / service["build"]["context"].replace("..", ".") / service["build"]["dockerfile"]
        ).is_file()
        assert any(v.endswith(":/etc/fowm/weights.key:ro") for v in service["volumes"]), "key file mounted"
    assert any("/dev/bus/usb" in d for d in robot["devices"]), "camera device"
    launch = re.search(r"ros2 launch fowm_bringup (\S+)", robot["command"]).group(1)
    assert (REPO / "ros2_ws/src/fowm_bringup/launch" / launch).is_file()
    assert "key_file:=/etc/fowm/weights.key" in robot["command"]
    gpu = trainer["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert trainer["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert "fowm_trainer_node" in trainer["command"] and "device=cuda" in trainer["command"]
    # The split deployment: the robot side runs every node of `real` but the trainer.
    from fowm_bringup.graph import GRAPHS

    robot_nodes = {n.name for n in GRAPHS["robot"].nodes}
    assert robot_nodes == {n.name for n in GRAPHS["real"].nodes} - {"fowm_trainer"}


def test_entrypoint_sources_ros_and_the_workspace():
    text = (REPO / "docker/entrypoint.sh").read_text()
    assert "source /opt/ros/jazzy/setup.bash" in text and "source /opt/fowm_ws/install/setup.bash" in text
    assert text.rstrip().endswith('exec "$@"')
