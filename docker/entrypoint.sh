#!/usr/bin/env bash
# Source ROS 2 Jazzy and the fowm workspace (the venv with the pinned Python packages is on PATH),
# then run the given command.
set -e
# shellcheck disable=SC1091
source /opt/ros/jazzy/setup.bash
# shellcheck disable=SC1091
source /opt/fowm_ws/install/setup.bash
exec "$@"
