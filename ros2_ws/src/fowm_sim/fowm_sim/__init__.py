"""MuJoCo simulation of the xArm7 world (table, cube, goal, camera), the reach/push/lift tasks,
scripted experts, a gymnasium env and a ROS 2 sim node.
"""

import os as _os

# MuJoCo picks its GL backend when first imported; without a display only EGL (or OSMesa) works,
# so default headless machines to EGL rather than failing at the first render.
if not (_os.environ.get("DISPLAY") or _os.environ.get("WAYLAND_DISPLAY")):
    _os.environ.setdefault("MUJOCO_GL", "egl")
