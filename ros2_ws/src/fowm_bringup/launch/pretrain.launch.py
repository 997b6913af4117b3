"""Offline pretraining from a directory of episode bags (fowm-pretrain as a graph node).

    ros2 launch fowm_bringup pretrain.launch.py bags:=data/push_teleop output:=artifacts/pretrain/push
"""

from fowm_bringup.graph import PRETRAIN
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(PRETRAIN)
