"""Online finetuning on the real xArm7: driver, camera, planner, recorder, trainer, reward, episodes.

    ros2 launch fowm_bringup real.launch.py robot_ip:=192.168.1.185 key_file:=/etc/fowm/weights.key \\
        weights_file:=artifacts/pretrain/push/weights.safetensors reward_source:=operator
"""

from fowm_bringup.graph import REAL
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(REAL)
