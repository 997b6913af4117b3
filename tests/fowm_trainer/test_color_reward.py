"""The colour reward on rendered sim frames with the red cube at known positions: the detector finds
the cube where the camera projects it, and the reward falls with the cube's distance to the goal
region, is 0 inside it and `missing_reward` when the cube is out of view."""

from __future__ import annotations

import itertools

import mujoco
import numpy as np
import pytest

from fowm_sim.env import XArmTaskEnv
from fowm_sim.scene import CAMERA_NAME, CUBE_JOINT
from fowm_trainer.color_reward import ColorRewardConfig, color_reward, detect, goal_box_px


@pytest.fixture(scope="module")
def env():
    e = XArmTaskEnv("push")
    e.reset(seed=3)
    yield e
    e.close()


def _place_cube(env: XArmTaskEnv, xyz: tuple[float, float, float]) -> np.ndarray:
    adr = env.model.joint(CUBE_JOINT).qposadr[0]
    env.data.qpos[adr : adr + 7] = [*xyz, 1.0, 0.0, 0.0, 0.0]
    mujoco.mj_forward(env.model, env.data)
    return env.render_camera()


def _project(env: XArmTaskEnv, point: np.ndarray) -> np.ndarray:
    """Pixel (x right, y down) of a world point in the full camera frame (MuJoCo cameras look down -z)."""
    cam = env.model.camera(CAMERA_NAME).id
    rot, pos = env.data.cam_xmat[cam].reshape(3, 3), env.data.cam_xpos[cam]
    p = rot.T @ (np.asarray(point) - pos)
    k = env.camera_intrinsics()
    return np.array([k["cx"] + k["fx"] * p[0] / -p[2], k["cy"] - k["fy"] * p[1] / -p[2]])


def test_detector_finds_the_cube_where_the_camera_projects_it(env):
    cfg = ColorRewardConfig()
    half = env.config.cube_half_size_m
    for xy in [(0.35, -0.15), (0.45, 0.0), (0.52, 0.15), (0.30, 0.20)]:
        frame = _place_cube(env, (*xy, half))
        found = detect(frame, cfg)
        assert found is not None, f"cube at {xy} not detected"
        # The visible top and front faces' centroid sits within a few pixels of the centre's projection.
        err = np.linalg.norm(np.array(found.centroid_xy) - _project(env, np.array([*xy, half])))
        assert err < 6.0, f"cube at {xy}: centroid {found.centroid_xy} is {err:.1f} px from its projection"
        assert 200 < found.area_px < 2000


def test_reward_falls_with_distance_to_the_goal_region_and_is_zero_inside(env):
    half = env.config.cube_half_size_m
    goal_xy = np.array([0.45, 0.05])
    h, w = env.config.camera_height, env.config.camera_width
    gx, gy = _project(env, np.array([*goal_xy, half]))
    cfg = ColorRewardConfig(goal_region=((gx - 10) / w, (gy - 10) / h, (gx + 10) / w, (gy + 10) / h))
    x0, y0, x1, y1 = goal_box_px(w, h, cfg)
    assert x0 < gx < x1 and y0 < gy < y1

    rewards = []
    for d in (0.0, 0.04, 0.08, 0.12, 0.16):  # metres from the goal along -y, on the table
        reward, found = color_reward(_place_cube(env, (goal_xy[0], goal_xy[1] - d, half)), cfg)
        assert found is not None
        rewards.append(reward)
    assert rewards[0] == 0.0, "cube centred on the goal region"
    assert all(a > b for a, b in itertools.pairwise(rewards)), f"reward must fall with distance: {rewards}"
    assert -0.5 < rewards[-1] < -0.02

    hidden = _place_cube(env, (0.45, 0.0, -0.5))  # under the table: out of view
    assert color_reward(hidden, cfg) == (cfg.missing_reward, None)


def test_config_rejects_bad_ranges():
    with pytest.raises(ValueError, match="hsv_low"):
        ColorRewardConfig(hsv_low=(200, 0, 0))
    with pytest.raises(ValueError, match="goal_region"):
        ColorRewardConfig(goal_region=(0.6, 0.1, 0.5, 0.2))
    with pytest.raises(ValueError, match="opening_px"):
        ColorRewardConfig(opening_px=2)
