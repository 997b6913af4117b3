"""The MuJoCo world around the xArm7: table, cube, goal marker, lights and a D435-like camera.

The robot MJCF from fowm_xarm is included unchanged; the robot base frame is the world frame and
the table surface is z = 0 (the arm stands on the table, as on the real bench).

A second camera at the same pose sees exactly the observation's region of interest: its
intrinsics are the full camera's focal length with the principal point moved to the ROI, so
rendering it at image_size x image_size equals cropping and shrinking the full frame.
"""

from __future__ import annotations

import mujoco
import numpy as np

from fowm_sim.config import SimConfig
from fowm_xarm.camera import crop_in_frame
from fowm_xarm.description import XARM7_MJCF_PATH

CAMERA_NAME = "d435_color"
ROI_CAMERA_NAME = "d435_color_roi"
CUBE_BODY = "cube"
CUBE_JOINT = "cube_joint"
GOAL_BODY = "goal"
GOAL_SHADOW_BODY = "goal_shadow"

_SCENE_TEMPLATE = """
<mujoco model="xarm7_tabletop">
  <include file="xarm7.xml"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{width}" offheight="{height}"/>
    <quality offsamples="0" shadowsize="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <worldbody>
    <light name="top" pos="0.4 0 1.5" dir="0 0 -1" diffuse="0.5 0.5 0.5" castshadow="false"/>
    <geom name="table" type="box" size="0.6 0.6 0.02" pos="0.35 0 -0.02" rgba="0.55 0.42 0.3 1"
          friction="0.8 0.005 0.0001"/>
    <body name="{cube}" pos="0.45 0 {half}">
      <freejoint name="{cube_joint}"/>
      <geom name="cube_geom" type="box" size="{half} {half} {half}" mass="{mass}" rgba="0.85 0.1 0.1 1"
            condim="4" friction="1.0 0.01 0.001"/>
    </body>
    <body name="{goal}" mocap="true" pos="0.45 0.1 0.001">
      <geom name="goal_marker" type="sphere" size="0.035" contype="0" conaffinity="0"
            rgba="0.1 0.8 0.2 0.7"/>
    </body>
    <!-- A disc on the table under an airborne goal: without it one camera cannot tell a goal's
         height from its distance. -->
    <body name="{goal_shadow}" mocap="true" pos="0.45 0.1 -0.2">
      <geom name="goal_shadow_marker" type="cylinder" size="0.03 0.0005" contype="0" conaffinity="0"
            rgba="0.05 0.35 0.1 1"/>
    </body>
    <camera name="{camera}" pos="{cam_pos}" xyaxes="{xyaxes}" fovy="{fovy}"/>
    <camera name="{roi_camera}" pos="{cam_pos}" xyaxes="{xyaxes}" resolution="{roi_side} {roi_side}"
            sensorsize="{roi_sensor} {roi_sensor}" focalpixel="{focal} {focal}" principalpixel="{principal}"/>
  </worldbody>
</mujoco>
"""


def camera_xyaxes(pos: np.ndarray, lookat: np.ndarray) -> np.ndarray:
    """MuJoCo xyaxes (6,) of a camera at `pos` looking at `lookat` with the image up towards +z."""
    forward = np.asarray(lookat, dtype=np.float64) - np.asarray(pos, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:
        raise ValueError("camera cannot look straight up or down (image up direction is undefined)")
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return np.concatenate([right, up])


def _fmt(values: np.ndarray | tuple[float, ...]) -> str:
    return " ".join(f"{x:.6g}" for x in values)


def scene_xml(config: SimConfig) -> str:
    """The scene MJCF as text (it includes 'xarm7.xml', supplied as an asset by build_model)."""
    w, h = config.camera_width, config.camera_height
    x, y, side, _ = crop_in_frame(w, h, config.image_crop)
    focal = 0.5 * h / np.tan(np.deg2rad(config.camera_fovy_deg) / 2.0)  # px, square pixels
    # MuJoCo's principal point offset is from the sensor centre, x right and y UP (image rows grow
    # down): the full frame's optical centre seen from the ROI's centre (checked by rendering).
    principal = (x + side / 2.0 - w / 2.0, h / 2.0 - (y + side / 2.0))
    return _SCENE_TEMPLATE.format(
        timestep=config.physics_timestep,
        width=config.camera_width,
        height=config.camera_height,
        cube=CUBE_BODY,
        cube_joint=CUBE_JOINT,
        goal=GOAL_BODY,
        goal_shadow=GOAL_SHADOW_BODY,
        camera=CAMERA_NAME,
        half=config.cube_half_size_m,
        mass=config.cube_mass_kg,
        cam_pos=_fmt(config.camera_pos),
        xyaxes=_fmt(camera_xyaxes(np.array(config.camera_pos), np.array(config.camera_lookat))),
        fovy=config.camera_fovy_deg,
        roi_camera=ROI_CAMERA_NAME,
        roi_side=side,
        roi_sensor=side * 1e-5,  # any pixel pitch: only focal and principal point in pixels matter
        focal=f"{focal:.9g}",
        principal=_fmt(principal),
    )


def build_model(config: SimConfig) -> mujoco.MjModel:
    """Compile the scene with the robot description from fowm_xarm."""
    assets = {"xarm7.xml": XARM7_MJCF_PATH.read_bytes()}
    return mujoco.MjModel.from_xml_string(scene_xml(config), assets)
