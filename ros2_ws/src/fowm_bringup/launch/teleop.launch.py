"""Demonstrations on the real xArm7: driver, camera, teleop (in an xterm), episode manager, recorder.

    ros2 launch fowm_bringup teleop.launch.py robot_ip:=192.168.1.185 bag_dir:=data/push_teleop
"""

from fowm_bringup.graph import TELEOP
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(TELEOP)
