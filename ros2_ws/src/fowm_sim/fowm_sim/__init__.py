"""MuJoCo simulation of the xArm7 world (table, cube, goal, camera), the reach/push/lift tasks,
scripted experts, a gymnasium env and a ROS 2 sim node.
"""
