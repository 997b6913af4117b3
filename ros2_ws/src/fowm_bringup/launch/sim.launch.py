"""The MuJoCo xArm7 sim node with the real robot's topics.

    ros2 launch fowm_bringup sim.launch.py task:=push clock_mode:=realtime
"""

from fowm_bringup.graph import SIM
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(SIM)
