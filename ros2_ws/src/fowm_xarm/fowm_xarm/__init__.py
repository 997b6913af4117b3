"""The UFACTORY xArm7: MJCF description, forward/inverse kinematics, joint and workspace limits,
and hardware nodes (xarm-python-sdk driver, RealSense camera, teleop).
"""
