"""The node-graph descriptions, the pip-path runner and the launch files agree for every graph, and
the graphs start for real: the sim graph runs the whole loop; a required node that dies stops a graph.

launch / launch_ros have no pip wheels, so the launch files are checked by generating their launch
descriptions against small stand-ins of the launch classes that record what they are given; the
recorded nodes, parameter files and overrides are then compared with the runner's commands.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import types
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from fowm_bringup.graph import CLI_NODE, GRAPHS, Graph
from fowm_bringup.run import argument_value, config_dir, node_commands, parse_launch_arguments

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "ros2_ws/src/fowm_bringup/launch"
FOWM_PACKAGES = ("fowm_sim", "fowm_xarm", "fowm_planner", "fowm_trainer", "fowm_bringup", "fowm_core")


# -- launch stand-ins ----------------------------------------------------------------------------


class _Recorded:
    """A launch class stand-in: remembers its constructor arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _stand_in_modules() -> dict[str, types.ModuleType]:
    classes = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "ExecuteProcess", "Shutdown"],
        "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution"],
        "launch_ros": [],
        "launch_ros.actions": ["Node"],
        "launch_ros.substitutions": ["ExecutableInPackage", "FindPackageShare"],
    }
    modules = {}
    for name, members in classes.items():
        module = types.ModuleType(name)
        for member in members:
            setattr(module, member, type(member, (_Recorded,), {}))
        modules[name] = module
    return modules


@pytest.fixture
def launch_stand_ins(monkeypatch):
    for name, module in _stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "fowm_bringup.launch_support", raising=False)
    yield
    sys.modules.pop("fowm_bringup.launch_support", None)


def _evaluate(sub, values: dict[str, str]) -> str:
    """A recorded substitution (or plain text) as the text launch would make of it."""
    kind = type(sub).__name__
    if isinstance(sub, str):
        return sub
    if kind == "LaunchConfiguration":
        return values[sub.args[0]]
    if kind == "FindPackageShare":
        assert sub.args == ("fowm_bringup",)
        return str(config_dir().parent)
    if kind == "PathJoinSubstitution":
        return os.path.join(*(_evaluate(p, values) for p in sub.args[0]))
    if kind == "ExecutableInPackage":
        return f"{sub.args[1]}/{sub.args[0]}"
    raise AssertionError(f"unexpected substitution {kind}")


def _launched(graph: Graph, values: dict[str, str]) -> tuple[dict, dict]:
    """(declared arguments, nodes) of the graph's launch file: node name -> what it starts."""
    spec = importlib.util.spec_from_file_location(
        f"launch_{graph.name}", LAUNCH_DIR / f"{graph.name}.launch.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared, nodes = {}, {}
    for action in description.args[0]:
        kind = type(action).__name__
        if kind == "DeclareLaunchArgument":
            declared[action.args[0]] = action.kwargs
        elif kind == "Node":
            kw = action.kwargs
            params_file, overrides = kw["parameters"]
            nodes[kw["name"]] = dict(
                executable=f"{kw['package']}/{kw['executable']}",
                arguments=list(kw["arguments"]),
                params_file=_evaluate(params_file, values),
                overrides={k: _evaluate(v, values) for k, v in overrides.items()},
                terminal=kw["prefix"] is not None,
                required=kw["on_exit"] is not None,
            )
        elif kind == "ExecuteProcess":
            cmd = [_evaluate(c, values) for c in action.kwargs["cmd"]]
            nodes[action.kwargs["name"]] = dict(
                executable=cmd[0], cli=cmd[1:], required=action.kwargs["on_exit"] is not None
            )
        else:
            raise AssertionError(f"unexpected launch action {kind}")
    return declared, nodes


def _run_view(cmd: list[str]) -> dict:
    """The runner's command for one ROS node, in the same terms."""
    ros = cmd.index("--ros-args")
    overrides = dict(cmd[i + 1].split(":=", 1) for i in range(ros, len(cmd)) if cmd[i] == "-p")
    return dict(arguments=cmd[3:ros], params_file=cmd[cmd.index("--params-file") + 1], overrides=overrides)


# -- static agreement --------------------------------------------------------------------------


@pytest.mark.parametrize("graph", GRAPHS.values(), ids=list(GRAPHS))
def test_every_python_node_is_an_installed_console_script(graph):
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    for node in graph.nodes:
        if node.package not in FOWM_PACKAGES:
            assert not node.module, f"{node.name}: a node of another ROS package has no module to run"
            continue
        assert node.executable in scripts, f"{node.package} declares no console script {node.executable!r}"
        assert scripts[node.executable].split(":")[0] == node.module


@pytest.mark.parametrize("graph", GRAPHS.values(), ids=list(GRAPHS))
def test_params_file_has_a_section_per_node_and_covers_the_arguments(graph):
    params = yaml.safe_load((config_dir() / graph.params_file).read_text())
    # A section per node; a file shared by several graphs (real, robot) holds the union of theirs.
    sharing = [g for g in GRAPHS.values() if g.params_file == graph.params_file]
    assert {n.name for n in graph.nodes} <= set(params)
    assert set(params) == {n.name for g in sharing for n in g.nodes}
    for arg in graph.arguments:
        assert arg.description, arg
        for node, parameter in arg.targets():
            assert parameter in params[node]["ros__parameters"], (arg.name, node, parameter)
            if arg.config_file:
                assert (config_dir() / arg.default).is_file(), arg


@pytest.mark.parametrize("graph", GRAPHS.values(), ids=list(GRAPHS))
def test_launch_file_and_runner_start_the_same_nodes_with_the_same_parameters(graph, launch_stand_ins):
    # Defaults, and then a value of our own for every argument (overrides must reach the same place).
    for values in (
        parse_launch_arguments(graph, []),
        {a.name: (f"x_{a.name}.yaml" if a.config_file else f"value_of_{a.name}") for a in graph.arguments},
    ):
        declared, launched = _launched(graph, values)
        assert {n: d["description"] for n, d in declared.items()} == {
            a.name: a.description for a in graph.arguments
        }
        assert {n: d["default_value"] for n, d in declared.items()} == {
            a.name: a.default for a in graph.arguments
        }
        assert list(launched) == [n.name for n in graph.nodes]
        specs = {n.name: n for n in graph.nodes}
        for name, node in launched.items():
            assert node["required"] == specs[name].required
        if not graph.runnable_without_ros:
            with pytest.raises(ValueError, match="needs a ROS install"):
                node_commands(graph, values)
            for name, node in launched.items():
                assert node["params_file"] == str(config_dir() / graph.params_file)
                expected = {
                    p: argument_value(a, values[a.name])
                    for a in graph.arguments
                    for p in a.parameter_for(name)
                }
                assert node["overrides"] == expected, name
            continue
        commands = node_commands(graph, values)
        assert list(commands) == list(launched)
        for name, cmd in commands.items():
            spec, node = specs[name], launched[name]
            assert cmd[1:3] == ["-m", spec.module]
            assert node["executable"] == f"{spec.package}/{spec.executable}"
            if spec.interface == CLI_NODE:
                assert node["cli"] == cmd[3:], name
            else:
                assert node["terminal"] == spec.terminal
                assert {k: node[k] for k in ("arguments", "params_file", "overrides")} == _run_view(cmd), name


def test_each_launch_file_launches_a_described_graph():
    launch_files = sorted(p.name.removesuffix(".launch.py") for p in LAUNCH_DIR.glob("*.launch.py"))
    assert launch_files == sorted(GRAPHS)


def test_runner_rejects_unknown_and_malformed_arguments():
    graph = GRAPHS["sim"]
    with pytest.raises(ValueError, match="no launch argument 'tsak'"):
        parse_launch_arguments(graph, ["tsak:=push"])
    with pytest.raises(ValueError, match="name:=value"):
        parse_launch_arguments(graph, ["task=push"])
    cmd = node_commands(graph, parse_launch_arguments(graph, ["task:=push"]))["fowm_sim"]
    assert cmd[cmd.index("-p") + 1] == "task:=push"
    gazebo = subprocess.run(
        [sys.executable, "-m", "fowm_bringup.run", "gazebo"], capture_output=True, text=True, timeout=60
    )
    assert gazebo.returncode == 2 and "ros2 launch fowm_bringup gazebo.launch.py" in gazebo.stderr


# -- the graphs for real -----------------------------------------------------------------------


def _started_pids(log: str) -> dict[str, int]:
    line = next(x for x in log.splitlines() if x.startswith("run: ") and " started " in x)
    return {name: int(pid) for name, pid in re.findall(r"(\w+) \((\d+)\)", line)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent, the runner, reaps it).
    return (
        "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
        if Path(f"/proc/{pid}").exists()
        else False
    )


@pytest.mark.ros
def test_real_graph_stops_when_a_required_node_dies(ros_processes, tmp_path):
    """No RealSense here: the camera node exits with its no-device code; the runner stops the other
    six nodes (the arm driver keeps retrying its robot until then) and exits with that code."""
    from fowm_core.weights import generate_key_file

    key = tmp_path / "key"
    generate_key_file(key)
    proc = ros_processes.start(
        [sys.executable, "-m", "fowm_bringup.run", "real", f"online_bags:={tmp_path}/online",
         f"checkpoint:={tmp_path}/ckpt.pt", f"key_file:={key}", "offline_bags:=['']"],
        "real_graph",
    )  # fmt: skip
    assert proc.wait(timeout=240) == 2, ros_processes.log("real_graph")[-4000:]
    log = ros_processes.log("real_graph")
    assert "run: required node realsense exited with 2; stopping the graph" in log
    assert re.search(r"^\[realsense\] +.*", log, re.M), "node output is forwarded with its name"
    assert all(not _alive(pid) for pid in _started_pids(log).values())


@pytest.mark.ros
def test_sim_graph_runs_the_whole_loop_and_stops_cleanly(ros_processes, ros_node, tmp_path):
    from rcl_interfaces.srv import GetParameters
    from sensor_msgs.msg import JointState
    from std_msgs.msg import UInt8MultiArray
    from trajectory_msgs.msg import JointTrajectory

    from fowm_testing import _shm_files_in_use, fastdds_shm_files, spin_until
    from fowm_xarm import topics

    shm_before = fastdds_shm_files()
    online = tmp_path / "online"
    runner = ros_processes.start(
        [sys.executable, "-m", "fowm_bringup.run", "sim", "task:=reach", f"online_bags:={online}",
         f"checkpoint:={tmp_path}/trainer.pt"],
        "sim_graph",
    )  # fmt: skip
    commands, stamps, weights = [], set(), []
    ros_node.create_subscription(
        JointTrajectory,
        topics.JOINT_TRAJECTORY.name,
        commands.append,
        topics.rclpy_qos(topics.QosKind.RELIABLE),
    )
    ros_node.create_subscription(
        JointState,
        topics.JOINT_STATES.name,
        lambda m: stamps.add(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec),
        topics.rclpy_qos(topics.QosKind.SENSOR),
    )
    ros_node.create_subscription(
        UInt8MultiArray,
        topics.WEIGHTS.name,
        lambda m: weights.append(len(m.data)),
        topics.rclpy_qos(topics.QosKind.LATCHED),
    )

    def every_node_up() -> bool:
        return {"fowm_sim", "fowm_planner", "fowm_recorder", "fowm_trainer"} <= set(ros_node.get_node_names())

    assert spin_until(ros_node, every_node_up, 120), ros_processes.log_tails()
    # Commands reach the sim: planner trajectories arrive and the lockstep sim advances on them.
    assert spin_until(ros_node, lambda: len(commands) >= 5 and len(stamps) >= 5, 120), (
        ros_processes.log_tails()
    )
    # An episode bag appears, the trainer trains on it and pushes weights the planner commits.
    assert spin_until(ros_node, lambda: online.is_dir() and any(online.glob("episode_*")), 180)
    assert spin_until(ros_node, lambda: bool(weights), 300), ros_processes.log_tails()
    client = ros_node.create_client(GetParameters, "/fowm_planner/get_parameters")

    def committed_version() -> int:
        future = client.call_async(GetParameters.Request(names=["model.version"]))
        assert spin_until(ros_node, future.done, 30)
        return future.result().values[0].integer_value

    assert spin_until(ros_node, client.service_is_ready, 30)
    deadline = time.monotonic() + 120
    while committed_version() < 1 and time.monotonic() < deadline:
        spin_until(ros_node, lambda: False, 1.0)
    assert committed_version() >= 1, "the planner did not commit the trainer's weights"
    assert runner.poll() is None

    # Ctrl-C: every node exits, and no Fast DDS shared-memory file of theirs is left behind.
    pids = _started_pids(ros_processes.log("sim_graph"))
    assert set(pids) == {"fowm_sim", "fowm_planner", "fowm_recorder", "fowm_trainer"}
    os.kill(runner.pid, signal.SIGINT)
    assert runner.wait(timeout=60) == 0, ros_processes.log("sim_graph")[-3000:]
    assert [n for n, pid in pids.items() if _alive(pid)] == []
    left = fastdds_shm_files() - shm_before - _shm_files_in_use()
    assert left == set(), f"shared-memory files left behind: {sorted(left)}"
    log = ros_processes.log("sim_graph")
    assert "[fowm_trainer]" in log and "[fowm_planner]" in log


def test_pretrain_graph_runs_fowm_pretrain_as_a_node_and_ends_with_it(tmp_path):
    from fowm_sim.collect import CollectConfig, collect

    collect(CollectConfig(tmp_path / "bags", task="reach", episodes=2), progress=False)
    out = subprocess.run(
        [sys.executable, "-m", "fowm_bringup.run", "pretrain", f"bags:={tmp_path / 'bags'}",
         f"output:={tmp_path / 'pretrain'}", "updates:=3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.search(r"^\[fowm_pretrain\] +3 updates on 2 episodes", out.stdout, re.M), out.stdout[-2000:]
    assert (tmp_path / "pretrain/weights.safetensors").is_file()


def test_gazebo_world_and_bridge_put_the_camera_on_the_topic_contract():
    """The gazebo graph cannot run here; its files at least agree with each other and the contract."""
    import xml.etree.ElementTree as ET

    from fowm_xarm import topics

    world = ET.parse(config_dir() / "gazebo/fowm_table.sdf").getroot()
    sensor = world.find(".//sensor[@type='camera']")
    image = sensor.find("camera/image")
    assert (int(image.find("width").text), int(image.find("height").text)) == (640, 480)
    bridge = {
        b["ros_topic_name"]: b for b in yaml.safe_load((config_dir() / "gazebo/bridge.yaml").read_text())
    }
    assert bridge[topics.IMAGE.name]["gz_topic_name"] == sensor.find("topic").text
    assert bridge[topics.CAMERA_INFO.name]["gz_topic_name"] == sensor.find("camera/camera_info_topic").text
    assert bridge[topics.CLOCK.name]["direction"] == "GZ_TO_ROS"
    assert {b["ros_type_name"] for b in bridge.values()} >= {topics.IMAGE.msgtype, topics.CAMERA_INFO.msgtype}
