"""The camera sees the task: in the model's 84x84 input, the cube and the goal marker are >= 6 px
across at every place the three tasks put them, and all those places lie inside the ROI crop.

Sizes are measured by segmentation rendering of the full 640x480 frame, passed through the same
crop + INTER_AREA shrink as the rgb observation (a pixel of the 84x84 input counts when the object
covers at least half of it). The arm is hidden for the size measurement, so the figures are the
camera's geometry rather than where the arm happens to stand.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import

import itertools
from collections.abc import Iterator

import cv2
import mujoco
import numpy as np
import pytest

from fowm_sim.config import TASKS, SimConfig
from fowm_sim.env import XArmTaskEnv
from fowm_sim.tasks import make_task
from fowm_xarm.observation import SIM_CAMERA_CROP

MIN_PIXELS_ACROSS = 6
HIDDEN = (0.4, 0.0, -0.3)  # under the table top, out of view


def layout_extremes(task: str, cube_half: float, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Corners of the boxes holding the cube positions and goal positions the task's own sampler
    draws (n layouts): (k, 3) cube centres, (m, 3) goal centres (m = 0 if the goal is not shown).

    Push can move the cube anywhere between its start and the goal, so its cube box also covers the
    goals; lift raises the cube to the goal height."""
    t = make_task(task)
    rng = np.random.default_rng(0)
    layouts = [t.sample(rng, cube_half) for _ in range(n)]
    cubes = np.array([[*lay.cube_xy, cube_half] for lay in layouts])
    goals = np.array([lay.goal for lay in layouts])
    if task == "push":
        cubes = np.concatenate([cubes, np.c_[goals[:, :2], np.full(n, cube_half)]])
    if task == "lift":
        cubes = np.concatenate([cubes, goals])

    def corners(points: np.ndarray) -> np.ndarray:
        lo, hi = points.min(axis=0), points.max(axis=0)
        return np.array(list(itertools.product(*zip(lo, hi, strict=True))))

    return corners(cubes), (corners(goals) if t.show_goal else np.zeros((0, 3)))


class Segmenter:
    """Full-frame object masks of the sim camera with the arm hidden."""

    def __init__(self, env: XArmTaskEnv) -> None:
        self.env = env
        cfg = env.config
        self.renderer = mujoco.Renderer(env.model, cfg.camera_height, cfg.camera_width)
        self.renderer.enable_segmentation_rendering()
        self.option = mujoco.MjvOption()
        self.option.geomgroup[1] = self.option.geomgroup[2] = 0  # the arm's visual and collision geoms
        self.cube_adr = env.model.joint("cube_joint").qposadr[0]
        self.goal_mocap = env.model.body("goal").mocapid[0]
        self.shadow_mocap = env.model.body("goal_shadow").mocapid[0]

    def mask(self, geom: str, cube: np.ndarray | tuple, goal: np.ndarray | tuple) -> np.ndarray:
        m, d = self.env.model, self.env.data
        d.qpos[self.cube_adr : self.cube_adr + 7] = [*cube, 1.0, 0.0, 0.0, 0.0]
        d.mocap_pos[self.goal_mocap] = goal
        d.mocap_pos[self.shadow_mocap] = HIDDEN
        mujoco.mj_forward(m, d)
        self.renderer.update_scene(d, camera="d435_color", scene_option=self.option)
        seg = self.renderer.render()  # (H, W, 2): object id, object type
        return (seg[..., 0] == m.geom(geom).id) & (seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM))

    def close(self) -> None:
        self.renderer.close()


def pixels_across_in_observation(
    mask: np.ndarray, crop: tuple[int, int, int, int], size: int
) -> tuple[int, int]:
    """(width, height) in pixels of the object's footprint in the size x size observation."""
    x, y, w, h = crop
    cover = cv2.resize(
        mask[y : y + h, x : x + w].astype(np.float32), (size, size), interpolation=cv2.INTER_AREA
    )
    rows, cols = np.nonzero(cover >= 0.5)
    if rows.size == 0:
        return 0, 0
    return int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


@pytest.fixture(scope="module")
def envs() -> Iterator[dict[str, XArmTaskEnv]]:
    made = {task: XArmTaskEnv(task) for task in TASKS}
    for e in made.values():
        e.reset(seed=0)
    yield made
    for e in made.values():
        e.close()


def test_default_crop_is_shared_by_the_sim_and_the_observation_config(envs: dict[str, XArmTaskEnv]) -> None:
    assert SimConfig().image_crop == SIM_CAMERA_CROP
    assert all(e.observation_config.crop == SIM_CAMERA_CROP for e in envs.values())


@pytest.mark.parametrize("task", TASKS)
def test_cube_and_goal_are_at_least_6_px_across_and_inside_the_crop(
    envs: dict[str, XArmTaskEnv], task: str
) -> None:
    env = envs[task]
    cfg = env.config
    x, y, w, h = cfg.image_crop
    cubes, goals = layout_extremes(task, cfg.cube_half_size_m)
    seg = Segmenter(env)
    try:
        measured = [("cube_geom", c, seg.mask("cube_geom", c, HIDDEN)) for c in cubes]
        hidden_cube = (*HIDDEN[:2], -0.5)
        measured += [("goal_marker", g, seg.mask("goal_marker", hidden_cube, g)) for g in goals]
    finally:
        seg.close()
    sizes = []
    for geom, where, mask in measured:
        assert mask.any(), f"{task}: {geom} at {where} is not in the frame"
        outside = mask.copy()
        outside[y : y + h, x : x + w] = False
        assert not outside.any(), f"{task}: {geom} at {where} reaches outside the crop {cfg.image_crop}"
        across = pixels_across_in_observation(mask, cfg.image_crop, cfg.image_size)
        sizes.append(min(across))
        assert min(across) >= MIN_PIXELS_ACROSS, f"{task}: {geom} at {where} is only {across} px in the obs"
    print(f"{task}: smallest object {min(sizes)} px across in {cfg.image_size}x{cfg.image_size}")


def test_cube_is_visible_in_the_real_observation_with_the_arm(envs: dict[str, XArmTaskEnv]) -> None:
    # With the arm drawn: the saturated red of the cube is a blob of several pixels in the obs.
    env = envs["push"]
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        rgb = obs["rgb"].transpose(1, 2, 0).astype(int)
        red = (rgb[..., 0] > 120) & (rgb[..., 0] > 2 * rgb[..., 1]) & (rgb[..., 0] > 2 * rgb[..., 2])
        assert red.sum() >= MIN_PIXELS_ACROSS**2 // 2, f"seed {seed}: only {red.sum()} red pixels"


def test_direct_roi_render_matches_the_cropped_full_frame() -> None:
    # obs_from_full_frame=False renders image_size x image_size through a camera whose frustum is the ROI.
    full = XArmTaskEnv("reach")
    small = XArmTaskEnv("reach", SimConfig(task="reach", obs_from_full_frame=False))
    try:
        for seed in range(2):
            a, _ = full.reset(seed=seed)
            b, _ = small.reset(seed=seed)
            diff = np.abs(a["rgb"].astype(int) - b["rgb"].astype(int))
            assert diff.mean() < 3  # same picture: only anti-aliasing of edges differs
            assert np.percentile(diff, 99) < 60
    finally:
        full.close()
        small.close()
