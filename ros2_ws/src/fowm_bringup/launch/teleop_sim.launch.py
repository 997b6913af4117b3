"""Demonstrations in MuJoCo: sim node, teleop (in an xterm), episode manager, recorder.

    ros2 launch fowm_bringup teleop_sim.launch.py task:=push bag_dir:=data/push_teleop
"""

from fowm_bringup.graph import TELEOP_SIM
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(TELEOP_SIM)
