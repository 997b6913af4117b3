"""Where the xArm7 + gripper MJCF lives, and the names inside it that other modules rely on."""

from __future__ import annotations

from pathlib import Path

XARM7_MJCF_PATH: Path = Path(__file__).resolve().parent / "description" / "xarm7.xml"
"""MJCF of the arm and its parallel gripper (no world around it); see the comment at its top."""

TCP_SITE = "tcp"
"""Site between the fingertips: the end effector whose xyz the policies command."""

FLANGE_SITE = "flange"
"""Site at the link7 origin (the tool flange)."""

TCP_OFFSET_M = 0.172
"""Distance from the flange to the TCP along the flange z axis (xArm gripper TCP offset)."""

ARM_ACTUATORS = tuple(f"act{i}" for i in range(1, 8))
"""Joint-target position actuators, one per arm joint, in joint order."""

FINGER_ACTUATORS = ("left_finger_act", "right_finger_act")
"""Finger position actuators; their control is the finger travel in metres."""

FINGER_JOINTS = ("left_finger_joint", "right_finger_joint")
"""Finger slide joints (0 = closed, FINGER_TRAVEL_M = fully open)."""

FINGER_TRAVEL_M = 0.04
"""Travel of each finger from closed to open: opening 1.0 is a 0.08 m gap between the pads."""
