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

from dataclasses import dataclass, field, replace
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class LaunchArgument:
    """A launch argument that sets one parameter of one node (and optionally more: `also`)."""

    name: str  # argument name on the command line (name:=value)
    default: str  # default value, as text (ROS parameter syntax)
    description: str  # shown by `ros2 launch -s` and `run --help`
    node: str  # node (NodeSpec.name) whose parameter it sets
    parameter: str  # that parameter's name
    also: tuple[tuple[str, str], ...] = ()  # further (node, parameter) pairs set to the same value
    config_file: bool = False  # the value names a file in fowm_bringup/config (absolute paths pass)

    def targets(self) -> tuple[tuple[str, str], ...]:
        """Every (node, parameter) this argument sets."""
        return ((self.node, self.parameter), *self.also)

    def parameter_for(self, node: str) -> list[str]:
        """The parameters of `node` this argument sets."""
        return [p for n, p in self.targets() if n == node]


# How a node takes its configuration.
ROS_NODE = "ros"  # --ros-args --params-file <graph yaml> -p name:=value (rclpy nodes)
CLI_NODE = "cli"  # --config <graph yaml> --name value (argparse tools that read their yaml section)


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph."""

    name: str  # node name (also the params-file section)
    package: str  # ROS package that installs it
    executable: str  # console script, as `ros2 run <package> <executable>` knows it
    module: str  # python module whose main() runs the node (pip-path runner); "" = not Python (ROS only)
    doc: str  # what it does
    interface: str = ROS_NODE  # ROS_NODE or CLI_NODE
    terminal: bool = False  # reads the operator's keys: the runner gives it stdin, launch an xterm
    required: bool = True  # the runner stops the graph when it exits
    arguments: tuple[str, ...] = ()  # fixed command-line arguments (before any ROS arguments)

    def __post_init__(self) -> None:
        if self.interface not in (ROS_NODE, CLI_NODE):
            raise ValueError(f"node {self.name!r}: interface must be {ROS_NODE!r} or {CLI_NODE!r}")


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
        arg_names = [a.name for a in self.arguments]
        if len(set(arg_names)) != len(arg_names):
            raise ValueError(f"graph {self.name!r} has duplicate launch arguments {arg_names}")
        for arg in self.arguments:
            for node, _ in arg.targets():
                if node not in names:
                    raise ValueError(f"launch argument {arg.name!r} targets unknown node {node!r}")

    def params_path(self, config_dir: Path = CONFIG_DIR) -> Path:
        return config_dir / self.params_file

    @property
    def runnable_without_ros(self) -> bool:
        """True when every node is Python (the pip-path runner can start the graph)."""
        return all(n.module for n in self.nodes)


SIM_NODE = NodeSpec(
    name="fowm_sim",
    package="fowm_sim",
    executable="fowm_sim_node",
    module="fowm_sim.sim_node",
    doc="MuJoCo xArm7 with the real robot's topics (camera, joint states, trajectory commands)",
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
        LaunchArgument(
            "task", "reach", "sim task: reach, push or lift (and the preset's section for it)", "fowm_sim",
            "task", also=(("fowm_planner", "task"),),
        ),
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

RECORDER_NODE = NodeSpec(
    name="fowm_recorder",
    package="fowm_trainer",
    executable="fowm_recorder_node",
    module="fowm_trainer.recorder_node",
    doc="contract topics -> one episode bag (MCAP) per episode, delimited by /fowm/episode",
)
TRAINER_NODE = NodeSpec(
    name="fowm_trainer",
    package="fowm_trainer",
    executable="fowm_trainer_node",
    module="fowm_trainer.trainer_node",
    doc="online finetuning on new episode bags; signed weights to the planner",
)
PRETRAIN_NODE = NodeSpec(
    name="fowm_pretrain",
    package="fowm_trainer",
    executable="fowm-pretrain",
    module="fowm_trainer.pretrain",
    doc="offline pretraining from bag directories (exits when done)",
    interface=CLI_NODE,
)
REWARD_NODE = NodeSpec(
    name="fowm_reward",
    package="fowm_trainer",
    executable="fowm_reward_node",
    module="fowm_trainer.reward_node",
    doc="/fowm/reward per decision: operator label, success classifier or colour detector",
)
EPISODE_MANAGER_NODE = NodeSpec(
    name="fowm_episode_manager",
    package="fowm_xarm",
    executable="fowm_episode_manager",
    module="fowm_xarm.episode_manager_node",
    doc="home, wait for the scene reset, start, end (length or label), /fowm/episode events",
)
TELEOP_NODE = NodeSpec(
    name="fowm_teleop",
    package="fowm_xarm",
    executable="fowm_teleop",
    module="fowm_xarm.teleop_node",
    doc="keyboard / SpaceMouse teleoperation through the safety layer; episode keys",
    terminal=True,
)
XARM_DRIVER_NODE = NodeSpec(
    name="xarm_driver",
    package="fowm_xarm",
    executable="fowm_xarm_driver",
    module="fowm_xarm.xarm_driver_node",
    doc="xArm7 through xarm-python-sdk: servo mode, 150 Hz joint states, gripper, faults",
)
REALSENSE_NODE = NodeSpec(
    name="realsense",
    package="fowm_xarm",
    executable="fowm_realsense",
    module="fowm_xarm.realsense_node",
    doc="RealSense colour stream (pyrealsense2) -> Image + CameraInfo",
)
# Gazebo Harmonic through ros_gz (ROS installs only: C++ nodes, no pip wheels).
GZ_SERVER_NODE = NodeSpec(
    name="gz_server",
    package="ros_gz_sim",
    executable="gzserver",
    module="",
    doc="Gazebo Harmonic server running the fowm table world (camera, cube, goal)",
)
ROBOT_STATE_PUBLISHER_NODE = NodeSpec(
    name="robot_state_publisher",
    package="robot_state_publisher",
    executable="robot_state_publisher",
    module="",
    doc="publishes the xArm7 URDF (xarm_description, gz_ros2_control) on /robot_description",
)
GZ_SPAWN_NODE = NodeSpec(
    name="gz_spawn_xarm7",
    package="ros_gz_sim",
    executable="create",
    module="",
    doc="spawns the xArm7 from /robot_description into the running world",
    required=False,  # exits once the robot is spawned
    arguments=("-topic", "robot_description", "-name", "xarm7"),
)
GZ_BRIDGE_NODE = NodeSpec(
    name="gz_bridge",
    package="ros_gz_bridge",
    executable="parameter_bridge",
    module="",
    doc="bridges the Gazebo camera and /clock onto the topic contract",
)
CONTROLLER_SPAWNER_NODE = NodeSpec(
    name="controller_spawner",
    package="controller_manager",
    executable="spawner",
    module="",
    doc="activates joint_state_broadcaster and xarm7_traj_controller in gz_ros2_control",
    required=False,  # exits once the controllers are active
    arguments=("joint_state_broadcaster", "xarm7_traj_controller"),
)


def _sim_arguments(
    sim: str = SIM_NODE.name, also: tuple[tuple[str, str], ...] = ()
) -> tuple[LaunchArgument, ...]:
    return (
        LaunchArgument("task", "reach", "sim task: reach, push or lift", sim, "task", also=also),
        LaunchArgument("seed", "0", "episode n of the sim resets with seed + n", sim, "seed"),
    )


# The trainer's start from fowm-pretrain's checkpoint, in the graphs that train online (sim, real).
PRETRAIN_CHECKPOINT_ARG = LaunchArgument(
    "pretrain_checkpoint",
    "''",
    "fowm-pretrain's checkpoint.pt of weights_file: the trainer also resumes its Adam state "
    "(the official online phase); '': new optimisers",
    "fowm_trainer",
    "init_checkpoint",
)


SIM = Graph(
    name="sim",
    doc="The whole loop in MuJoCo: sim node + planner + recorder + online trainer (lockstep by default).",
    nodes=(SIM_NODE, PLANNER_NODE, RECORDER_NODE, TRAINER_NODE),
    params_file="sim.yaml",
    arguments=(
        *_sim_arguments(also=(("fowm_planner", "task"), ("fowm_trainer", "task"))),
        LaunchArgument(
            "clock_mode",
            "lockstep",
            "sim: lockstep (one control period per command, publishes /clock) or realtime (wall clock)",
            "fowm_sim",
            "clock_mode",
        ),
        LaunchArgument(
            "planner_clock_mode",
            "lockstep",
            "planner: lockstep (a plan per observation) or realtime (a timer)",
            "fowm_planner",
            "clock_mode",
        ),
        LaunchArgument(
            "use_sim_time",
            "true",
            "planner follows the sim's /clock (true with lockstep)",
            "fowm_planner",
            "use_sim_time",
        ),
        LaunchArgument(
            "preset",
            "realtime-cpu",
            "fowm_core preset of planner and trainer (paper, realtime-cpu, YAML path)",
            "fowm_planner",
            "preset",
            also=(("fowm_trainer", "preset"),),
        ),
        LaunchArgument(
            "weights_file",
            "''",
            "weights both start from (e.g. fowm-pretrain's weights.safetensors); '': random",
            "fowm_planner",
            "weights_file",
            also=(("fowm_trainer", "init_weights"),),
        ),
        PRETRAIN_CHECKPOINT_ARG,
        LaunchArgument(
            "key_file",
            "''",
            "HMAC key file (fowm-keygen) signing weight pushes; '': unsigned (sim only)",
            "fowm_planner",
            "key_file",
            also=(("fowm_trainer", "key_file"),),
        ),
        LaunchArgument(
            "online_bags",
            "data/online",
            "directory of the online episode bags (recorder writes, trainer reads)",
            "fowm_recorder",
            "output_dir",
            also=(("fowm_trainer", "online_dir"),),
        ),
        LaunchArgument(
            "offline_bags",
            "['']",
            "offline bag directories for balanced batches, e.g. ['data/reach_medium']",
            "fowm_trainer",
            "offline_dirs",
        ),
        LaunchArgument(
            "checkpoint",
            "artifacts/sim/trainer_checkpoint.pt",
            "trainer checkpoint (resumed from if present)",
            "fowm_trainer",
            "checkpoint",
        ),
    ),
)

_ROBOT_ARGUMENTS = (
    LaunchArgument(
        "robot_ip", "192.168.1.185", "IP address of the xArm control box", "xarm_driver", "robot_ip"
    ),
    LaunchArgument(
        "joint_state_rate", "150.0", "joint state and servo rate of the driver (Hz)", "xarm_driver", "rate_hz"
    ),
    LaunchArgument("camera_fps", "30", "RealSense colour frame rate (Hz)", "realsense", "fps"),
)

REAL = Graph(
    name="real",
    doc="Online finetuning on the real xArm7: driver, camera, planner, recorder, trainer, reward, episodes.",
    nodes=(
        XARM_DRIVER_NODE,
        REALSENSE_NODE,
        PLANNER_NODE,
        RECORDER_NODE,
        TRAINER_NODE,
        REWARD_NODE,
        EPISODE_MANAGER_NODE,
    ),
    params_file="real.yaml",
    arguments=(
        *_ROBOT_ARGUMENTS,
        LaunchArgument(
            "task", "push", "task name of the episode events; the preset's section for it applies",
            "fowm_episode_manager", "task", also=(("fowm_planner", "task"), ("fowm_trainer", "task")),
        ),
        LaunchArgument(
            "episode_length",
            "25",
            "decisions per episode (FOWM: 25 at 6.25 Hz)",
            "fowm_episode_manager",
            "episode_length",
        ),
        LaunchArgument(
            "control_period",
            "0.16",
            "planner control period (s); the driver expects commands this often",
            "fowm_planner",
            "control_period",
            also=(("xarm_driver", "command_period_s"),),
        ),
        LaunchArgument(
            "preset",
            "realtime-cpu",
            "fowm_core preset of planner and trainer (paper, realtime-cpu, YAML path)",
            "fowm_planner",
            "preset",
            also=(("fowm_trainer", "preset"),),
        ),
        LaunchArgument(
            "weights_file",
            "''",
            "pretrained weights (fowm-pretrain's weights.safetensors) for planner and trainer",
            "fowm_planner",
            "weights_file",
            also=(("fowm_trainer", "init_weights"),),
        ),
        PRETRAIN_CHECKPOINT_ARG,
        LaunchArgument(
            "key_file",
            "/etc/fowm/weights.key",
            "HMAC key file (fowm-keygen) shared by trainer and planner",
            "fowm_planner",
            "key_file",
            also=(("fowm_trainer", "key_file"),),
        ),
        LaunchArgument(
            "online_bags",
            "data/online",
            "directory of the online episode bags (recorder writes, trainer reads)",
            "fowm_recorder",
            "output_dir",
            also=(("fowm_trainer", "online_dir"),),
        ),
        LaunchArgument(
            "offline_bags",
            "['data/offline']",
            "offline bag directories (teleop, scripted, earlier runs)",
            "fowm_trainer",
            "offline_dirs",
        ),
        LaunchArgument(
            "checkpoint",
            "artifacts/real/trainer_checkpoint.pt",
            "trainer checkpoint (resumed from if present)",
            "fowm_trainer",
            "checkpoint",
        ),
        LaunchArgument(
            "reward_source",
            "operator",
            "reward: operator (success key), classifier or color",
            "fowm_reward",
            "source",
        ),
        LaunchArgument(
            "classifier_file",
            "''",
            "success classifier for reward_source:=classifier",
            "fowm_reward",
            "classifier_file",
        ),
    ),
)


def _without_node(arguments: tuple[LaunchArgument, ...], node: str) -> tuple[LaunchArgument, ...]:
    """The arguments with every target on `node` dropped (and arguments left with none)."""
    kept = []
    for arg in arguments:
        targets = [t for t in arg.targets() if t[0] != node]
        if targets:
            (first_node, first_param), *rest = targets
            kept.append(replace(arg, node=first_node, parameter=first_param, also=tuple(rest)))
    return tuple(kept)


ROBOT = Graph(
    name="robot",
    doc="The robot side of `real` for a split deployment: everything but the trainer (on a GPU host).",
    nodes=tuple(n for n in REAL.nodes if n is not TRAINER_NODE),
    params_file="real.yaml",
    arguments=_without_node(REAL.arguments, TRAINER_NODE.name),
)

_TELEOP_ARGUMENTS = (
    LaunchArgument(
        "bag_dir", "data/teleop", "directory the demonstration bags go to", "fowm_recorder", "output_dir"
    ),
    LaunchArgument(
        "episode_length",
        "100",
        "decisions per demonstration before it ends unlabelled (failure)",
        "fowm_episode_manager",
        "episode_length",
    ),
    LaunchArgument(
        "input", "keyboard", "teleop motion source: keyboard or spacemouse", "fowm_teleop", "input"
    ),
)

TELEOP = Graph(
    name="teleop",
    doc="Demonstrations on the real xArm7: driver, camera, teleop, episode manager, recorder, reward.",
    nodes=(XARM_DRIVER_NODE, REALSENSE_NODE, TELEOP_NODE, EPISODE_MANAGER_NODE, RECORDER_NODE, REWARD_NODE),
    params_file="teleop.yaml",
    arguments=(
        *_ROBOT_ARGUMENTS,
        *_TELEOP_ARGUMENTS,
        LaunchArgument(
            "task", "push", "task name written into the episode events", "fowm_episode_manager", "task"
        ),
    ),
)

TELEOP_SIM = Graph(
    name="teleop_sim",
    doc="Demonstrations in MuJoCo: sim node (episodes owned by the manager), teleop, manager, recorder.",
    nodes=(SIM_NODE, TELEOP_NODE, EPISODE_MANAGER_NODE, RECORDER_NODE),
    params_file="teleop_sim.yaml",
    arguments=(
        LaunchArgument(
            "task",
            "push",
            "sim task: reach, push or lift",
            "fowm_sim",
            "task",
            also=(("fowm_episode_manager", "task"),),
        ),
        LaunchArgument("seed", "0", "scene reset n of the sim uses seed + n", "fowm_sim", "seed"),
        LaunchArgument(
            "clock_mode",
            "lockstep",
            "sim: lockstep (a step per command) or realtime",
            "fowm_sim",
            "clock_mode",
        ),
        *_TELEOP_ARGUMENTS,
    ),
)

PRETRAIN = Graph(
    name="pretrain",
    doc="Offline pretraining from directories of episode bags (fowm-pretrain as a graph node).",
    nodes=(PRETRAIN_NODE,),
    params_file="pretrain.yaml",
    arguments=(
        LaunchArgument(
            "bags", "data/reach_medium", "directory of offline episode bags", "fowm_pretrain", "bags"
        ),
        LaunchArgument(
            "output",
            "artifacts/pretrain/reach",
            "checkpoint, weights.safetensors, summary, TensorBoard",
            "fowm_pretrain",
            "output",
        ),
        LaunchArgument(
            "preset",
            "realtime-cpu",
            "fowm_core preset (paper, realtime-cpu) or YAML path",
            "fowm_pretrain",
            "preset",
        ),
        LaunchArgument(
            "updates", "0", "updates to run; 0: the preset's offline_updates", "fowm_pretrain", "updates"
        ),
    ),
)

GAZEBO = Graph(
    name="gazebo",
    doc="Gazebo Harmonic (ros_gz): xArm7 + camera on the topic contract, driven by the planner (ROS only).",
    nodes=(
        GZ_SERVER_NODE,
        ROBOT_STATE_PUBLISHER_NODE,
        GZ_SPAWN_NODE,
        CONTROLLER_SPAWNER_NODE,
        GZ_BRIDGE_NODE,
        PLANNER_NODE,
    ),
    params_file="gazebo.yaml",
    arguments=(
        LaunchArgument(
            "world",
            "gazebo/fowm_table.sdf",
            "SDF world (file in fowm_bringup/config or absolute path)",
            "gz_server",
            "world_sdf_file",
            config_file=True,
        ),
        LaunchArgument(
            "robot_description",
            "''",
            "xArm7 URDF text from xarm_description's xarm_device.urdf.xacro (dof:=7, "
            "ros2_control_plugin:=gz_ros2_control/GazeboSimSystem); see the README",
            "robot_state_publisher",
            "robot_description",
        ),
        LaunchArgument(
            "bridge_config",
            "gazebo/bridge.yaml",
            "ros_gz_bridge topic map (file in fowm_bringup/config)",
            "gz_bridge",
            "config_file",
            config_file=True,
        ),
        LaunchArgument("preset", "realtime-cpu", "fowm_core preset of the weights", "fowm_planner", "preset"),
        LaunchArgument(
            "weights_file", "''", "weights to plan with; '': random init", "fowm_planner", "weights_file"
        ),
        LaunchArgument("key_file", "''", "HMAC key file for weight updates", "fowm_planner", "key_file"),
    ),
)

GRAPHS: dict[str, Graph] = {
    g.name: g for g in (SIM, PLANNER, REAL, ROBOT, TELEOP, TELEOP_SIM, PRETRAIN, GAZEBO)
}
