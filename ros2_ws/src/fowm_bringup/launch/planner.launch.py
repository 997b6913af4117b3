"""The planner node driving the MuJoCo sim (lockstep by default).

    ros2 launch fowm_bringup planner.launch.py task:=reach \
        weights_file:=artifacts/demo/reach_weights.safetensors
"""

from fowm_bringup.graph import PLANNER
from fowm_bringup.launch_support import describe


def generate_launch_description():
    return describe(PLANNER)
