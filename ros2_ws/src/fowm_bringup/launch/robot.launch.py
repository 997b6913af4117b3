"""The robot side of the real graph (driver, camera, planner, recorder, reward, episode manager) for a
split deployment whose trainer runs on a GPU host (docker/compose.yaml).

    ros2 launch fowm_bringup robot.launch.py robot_ip:=192.168.1.185 key_file:=/etc/fowm/weights.key
"""

from fowm_bringup.graph import ROBOT
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(ROBOT)
