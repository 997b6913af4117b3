#!/usr/bin/env bash
# Source ROS 2 Jazzy and the fowm workspace, then run the given command.
set -e
source /opt/ros/jazzy/setup.bash
source /opt/fowm_ws/install/setup.bash
exec "$@"
