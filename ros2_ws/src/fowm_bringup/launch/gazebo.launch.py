"""Gazebo Harmonic (ros_gz) xArm7 + camera on the topic contract, driven by the planner (not run here).

    ros2 launch fowm_bringup gazebo.launch.py robot_description:="$(xacro \\
        $(ros2 pkg prefix xarm_description)/share/xarm_description/urdf/xarm_device.urdf.xacro \\
        dof:=7 ros2_control_plugin:=gz_ros2_control/GazeboSimSystem)"
"""

from fowm_bringup.graph import GAZEBO
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(GAZEBO)
