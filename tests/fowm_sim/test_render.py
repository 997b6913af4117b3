"""Rendering: the D435-like colour frame, the 84x84 observation made from it, and cube visibility."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import

from collections.abc import Iterator

import mujoco
import numpy as np
import pytest

from fowm_sim.env import XArmTaskEnv
from fowm_xarm.camera import preprocess_rgb


@pytest.fixture
def env() -> Iterator[XArmTaskEnv]:
    e = XArmTaskEnv("push")  # default config: the observation is made from the full frame
    yield e
    e.close()


def red_pixels(rgb_hwc: np.ndarray) -> np.ndarray:
    """Mask of the cube's saturated red (the table is brown, the arm white/grey, the goal green)."""
    r, g, b = (rgb_hwc[..., i].astype(int) for i in range(3))
    return (r > 120) & (r > 2 * g) & (r > 2 * b)


def move_cube(env: XArmTaskEnv, xy: tuple[float, float]) -> None:
    adr = env.model.joint("cube_joint").qposadr[0]
    env.data.qpos[adr : adr + 2] = xy
    mujoco.mj_forward(env.model, env.data)


def test_full_frame_shape_and_observation_from_it(env: XArmTaskEnv) -> None:
    obs, _ = env.reset(seed=0)
    frame = env.render_camera()
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # a real picture, not a blank buffer
    np.testing.assert_array_equal(obs["rgb"], preprocess_rgb(frame, 84, env.config.image_crop))


def test_cube_is_visible_and_tracks_its_position(env: XArmTaskEnv) -> None:
    env.reset(seed=0)
    move_cube(env, (0.45, -0.12))
    at_minus_y = red_pixels(env.render_camera())
    move_cube(env, (0.45, 0.12))
    at_plus_y = red_pixels(env.render_camera())
    assert at_minus_y.sum() > 200 and at_plus_y.sum() > 200  # a 5 cm cube covers a few hundred pixels
    # The camera faces the robot from the front, so the robot's left (+y) is the image's right.
    assert np.argwhere(at_plus_y)[:, 1].mean() > np.argwhere(at_minus_y)[:, 1].mean() + 50
    obs_rgb = env._observation()["rgb"].transpose(1, 2, 0)
    assert red_pixels(obs_rgb).sum() >= 25  # a blob of several pixels after the ROI crop and 84x84 shrink


def test_observation_changes_when_the_arm_moves(env: XArmTaskEnv) -> None:
    obs0, _ = env.reset(seed=1)
    obs1, *_ = env.step(np.array([0.0, 1.0, -1.0, -1.0]))
    assert np.abs(obs1["rgb"].astype(int) - obs0["rgb"].astype(int)).sum() > 1000
