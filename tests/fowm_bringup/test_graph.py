"""The node-graph description, the pip-path runner and the launch files agree, and the sim graph
starts for real."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from fowm_bringup.graph import GRAPHS
from fowm_bringup.run import config_dir, node_commands, parse_launch_arguments

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "ros2_ws/src/fowm_bringup/launch"


@pytest.mark.parametrize("graph", GRAPHS.values(), ids=list(GRAPHS))
def test_every_node_is_an_installed_console_script(graph):
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    for node in graph.nodes:
        assert node.executable in scripts, f"{node.package} declares no console script {node.executable!r}"
        assert scripts[node.executable].split(":")[0] == node.module


@pytest.mark.parametrize("graph", GRAPHS.values(), ids=list(GRAPHS))
def test_params_file_has_a_section_per_node_and_covers_the_arguments(graph):
    params = yaml.safe_load((config_dir() / graph.params_file).read_text())
    assert set(params) == {n.name for n in graph.nodes}
    for arg in graph.arguments:
        assert arg.parameter in params[arg.node]["ros__parameters"], arg
        assert arg.description


def test_each_launch_file_launches_a_described_graph():
    launch_files = sorted(LAUNCH_DIR.glob("*.launch.py"))
    assert launch_files
    for path in launch_files:
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        graphs = {name for name in imported if name.lower() in GRAPHS}
        assert graphs, f"{path.name} builds no graph from fowm_bringup.graph"
        assert "describe" in imported and "generate_launch_description" in path.read_text()


def test_runner_rejects_unknown_and_malformed_arguments():
    graph = GRAPHS["sim"]
    with pytest.raises(ValueError, match="no launch argument 'tsak'"):
        parse_launch_arguments(graph, ["tsak:=push"])
    with pytest.raises(ValueError, match="name:=value"):
        parse_launch_arguments(graph, ["task=push"])
    cmd = node_commands(graph, parse_launch_arguments(graph, ["task:=push"]))["fowm_sim"]
    assert cmd[cmd.index("-p") + 1] == "task:=push"


@pytest.mark.ros
def test_sim_graph_starts_and_publishes_the_robot_topics(ros_processes, ros_node):
    from rcl_interfaces.srv import GetParameters
    from sensor_msgs.msg import Image, JointState

    from fowm_testing import spin_until, wait_for_messages

    ros_processes.start(
        [sys.executable, "-m", "fowm_bringup.run", "sim", "task:=push", "clock_mode:=realtime"], "sim_graph"
    )
    first = wait_for_messages(
        ros_node, {"/joint_states": JointState, "/camera/color/image_raw": Image}, timeout_s=90
    )
    image = first["/camera/color/image_raw"]
    assert (image.width, image.height, image.encoding) == (640, 480, "rgb8")
    assert list(first["/joint_states"].name[:7]) == [f"joint{i}" for i in range(1, 8)]

    client = ros_node.create_client(GetParameters, "/fowm_sim/get_parameters")
    assert spin_until(ros_node, client.service_is_ready, 30)
    future = client.call_async(GetParameters.Request(names=["task", "clock_mode", "episode_length"]))
    assert spin_until(ros_node, future.done, 30)
    values = [v.string_value or v.integer_value for v in future.result().values]
    assert values == ["push", "realtime", 25]  # launch arguments override the YAML, the rest from it
