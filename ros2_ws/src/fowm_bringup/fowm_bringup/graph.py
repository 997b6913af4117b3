"""The node graphs of fowm-ros, described once.

Both faces are generated from these descriptions, so they cannot drift apart:
- `launch/*.launch.py` (real ROS 2 installs: `ros2 launch fowm_bringup sim.launch.py task:=push`)
  turn a Graph into launch_ros Node actions (fowm_bringup.launch_support);
- `python -m fowm_bringup.run sim task:=push` (pip installs, which have no `ros2 launch`) starts
  the same nodes as processes with the same parameters (fowm_bringup.run).

Parameters come from one YAML file per graph in fowm_bringup/config (ROS params-file format, a
section per node); launch arguments override single parameters.
This module imports neither rclpy nor launch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument that sets one parameter of one node."""

    name: str  # argument name on the command line (name:=value)
    default: str  # default value, as text (ROS parameter syntax)
    description: str  # shown by `ros2 launch -s` and `run --help`
    node: str  # node (NodeSpec.name) whose parameter it sets
    parameter: str  # that parameter's name


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph."""

    name: str  # node name (also the params-file section)
    package: str  # ROS package that installs it
    executable: str  # console script, as `ros2 run <package> <executable>` knows it
    module: str  # python module whose main() runs the node (used by the pip-path runner)
    doc: str  # what it does


@dataclass(frozen=True)
class Graph:
    """Nodes started together, their parameter file and launch arguments."""

    name: str
    doc: str
    nodes: tuple[NodeSpec, ...]
    params_file: str  # file name in fowm_bringup/config
    arguments: tuple[LaunchArgument, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"graph {self.name!r} has duplicate node names {names}")
        for arg in self.arguments:
            if arg.node not in names:
                raise ValueError(f"launch argument {arg.name!r} targets unknown node {arg.node!r}")

    def params_path(self, config_dir: Path = CONFIG_DIR) -> Path:
        return config_dir / self.params_file


SIM_NODE = NodeSpec(
    name="fowm_sim",
    package="fowm_sim",
    executable="fowm_sim_node",
    module="fowm_sim.sim_node",
    doc="MuJoCo xArm7 with the real robot's topics (camera, joint states, trajectory commands)",
)

SIM = Graph(
    name="sim",
    doc="The MuJoCo xArm7 simulation standing in for the robot and its camera.",
    nodes=(SIM_NODE,),
    params_file="sim.yaml",
    arguments=(
        LaunchArgument("task", "reach", "sim task: reach, push or lift", "fowm_sim", "task"),
        LaunchArgument("seed", "0", "episode n of the sim resets with seed + n", "fowm_sim", "seed"),
        LaunchArgument(
            "clock_mode", "realtime",
            "realtime (wall clock) or lockstep (one control period per command, publishes /clock)",
            "fowm_sim", "clock_mode",
        ),
    ),
)

PLANNER_NODE = NodeSpec(
    name="fowm_planner",
    package="fowm_planner",
    executable="fowm_planner_node",
    module="fowm_planner.planner_node",
    doc="realtime FOWM planner: camera + joint states in, safe joint trajectories out, weight hot-swap",
)

PLANNER = Graph(
    name="planner",
    doc="The planner node driving the MuJoCo sim (lockstep by default: one plan per observation).",
    nodes=(SIM_NODE, PLANNER_NODE),
    params_file="planner.yaml",
    arguments=(
        LaunchArgument("task", "reach", "sim task: reach, push or lift", "fowm_sim", "task"),
        LaunchArgument("seed", "0", "episode n of the sim resets with seed + n", "fowm_sim", "seed"),
        LaunchArgument(
            "sim_clock_mode", "lockstep", "sim: lockstep (a step per command) or realtime",
            "fowm_sim", "clock_mode",
        ),
        LaunchArgument(
            "clock_mode", "lockstep", "planner: lockstep (a plan per observation) or realtime (a timer)",
            "fowm_planner", "clock_mode",
        ),
        LaunchArgument(
            "use_sim_time", "true", "planner follows the sim's /clock (true with lockstep)",
            "fowm_planner", "use_sim_time",
        ),
        LaunchArgument(
            "weights_file", "''", "weights to plan with; '': seeded random init",
            "fowm_planner", "weights_file",
        ),
        LaunchArgument("preset", "realtime-cpu", "fowm_core preset of the weights", "fowm_planner", "preset"),
    ),
)

GRAPHS: dict[str, Graph] = {g.name: g for g in (SIM, PLANNER)}
