"""Turn a fowm_bringup.graph.Graph into a launch description (real ROS 2 installs only: imports
launch and launch_ros, which have no pip wheels).

Per node, exactly what `python -m fowm_bringup.run` does on a pip install:
- ROS nodes: the graph's params file, then every launch argument that targets the node as a
  parameter override (so arguments beat the YAML);
- CLI nodes (fowm-pretrain): `--config <params file>` and `--<parameter> <value>` per argument;
- arguments that name a config file are resolved in fowm_bringup's share/config directory;
- terminal nodes (teleop) open in an xterm: `ros2 launch` gives its children no stdin;
- a required node that exits shuts the launch down (the runner stops the graph likewise).
"""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import ExecutableInPackage, FindPackageShare

from fowm_bringup.graph import CLI_NODE, Graph, LaunchArgument, NodeSpec

TERMINAL_PREFIX = "xterm -e"


def _config_path(name: object) -> PathJoinSubstitution:
    # os.path.join semantics: an absolute path given on the command line wins.
    return PathJoinSubstitution([FindPackageShare("fowm_bringup"), "config", name])


def _value(arg: LaunchArgument) -> object:
    value = LaunchConfiguration(arg.name)
    return _config_path(value) if arg.config_file else value


def _on_exit(node: NodeSpec) -> list | None:
    # A required node that exits ends the whole launch, as the runner stops the graph.
    return [Shutdown(reason=f"required node {node.name} exited")] if node.required else None


def describe(graph: Graph) -> LaunchDescription:
    params_file = _config_path(graph.params_file)
    actions: list = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
        for a in graph.arguments
    ]
    for node in graph.nodes:
        targeted = [(a, p) for a in graph.arguments for p in a.parameter_for(node.name)]
        if node.interface == CLI_NODE:
            cmd: list = [ExecutableInPackage(node.executable, node.package), *node.arguments]
            cmd += ["--config", params_file]
            for arg, parameter in targeted:
                cmd += ["--" + parameter.replace("_", "-"), _value(arg)]
            actions.append(ExecuteProcess(cmd=cmd, name=node.name, output="screen", on_exit=_on_exit(node)))
            continue
        overrides = {parameter: _value(arg) for arg, parameter in targeted}
        actions.append(
            Node(
                package=node.package,
                executable=node.executable,
                name=node.name,
                output="screen",
                parameters=[params_file, overrides],
                arguments=list(node.arguments),
                prefix=TERMINAL_PREFIX if node.terminal else None,
                on_exit=_on_exit(node),
            )
        )
    return LaunchDescription(actions)
