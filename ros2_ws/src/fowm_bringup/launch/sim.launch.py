"""The whole FOWM loop in MuJoCo: sim node, planner, recorder and online trainer.

    ros2 launch fowm_bringup sim.launch.py task:=push \\
        weights_file:=artifacts/pretrain/push/weights.safetensors
"""

from fowm_bringup.graph import SIM
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(SIM)
