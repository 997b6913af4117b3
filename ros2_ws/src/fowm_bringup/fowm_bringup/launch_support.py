"""Turn a fowm_bringup.graph.Graph into a launch description (real ROS 2 installs only:
imports launch and launch_ros, which have no pip wheels)."""

from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fowm_bringup.graph import Graph


def describe(graph: Graph) -> LaunchDescription:
    params_file = Path(get_package_share_directory("fowm_bringup")) / "config" / graph.params_file
    actions: list = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                     for a in graph.arguments]
    for node in graph.nodes:
        overrides = {a.parameter: LaunchConfiguration(a.name) for a in graph.arguments if a.node == node.name}
        actions.append(
            Node(package=node.package, executable=node.executable, name=node.name, output="screen",
                 parameters=[str(params_file), overrides])
        )
    return LaunchDescription(actions)
