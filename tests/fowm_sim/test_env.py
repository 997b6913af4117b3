"""XArmTaskEnv: the gymnasium contract, the joint-target path the ROS sim node uses, and limits."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import

from collections.abc import Iterator

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from fowm_sim.config import SimConfig
from fowm_sim.env import XArmTaskEnv
from fowm_xarm.limits import JOINT_LOWER, JOINT_UPPER


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Iterator[XArmTaskEnv]:
    task = getattr(request, "param", "reach")
    e = XArmTaskEnv(task, SimConfig(task=task, obs_from_full_frame=False))
    yield e
    e.close()


def test_spaces_and_observation_contract(env: XArmTaskEnv) -> None:
    obs, info = env.reset(seed=0)
    assert env.observation_space["rgb"].shape == (3, 84, 84)
    assert env.observation_space["state"].shape == (4,)
    assert env.action_space.shape == (4,) and env.action_space.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert obs["rgb"].dtype == np.uint8 and obs["state"].dtype == np.float32
    np.testing.assert_allclose(obs["state"][:3], env.tcp_position(), atol=1e-6)
    assert obs["state"][3] == pytest.approx(1.0)  # episodes start with the gripper open
    assert set(info) >= {"success", "joint_targets", "gripper_target"}


def test_passes_gymnasium_env_checker(env: XArmTaskEnv) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning (e.g. unbounded spaces) fails the test
        # ...except the note that envs built without gymnasium.make() have no registry spec.
        warnings.filterwarnings("ignore", message=".*not having a spec.*")
        check_env(env, skip_render_check=False)


def test_episode_truncates_after_25_decisions(env: XArmTaskEnv) -> None:
    env.reset(seed=1)
    for k in range(25):
        _, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        assert not terminated
        assert truncated == (k == 24)
        assert np.isfinite(reward) and isinstance(info["success"], bool)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(4))


def test_same_seed_same_episode(env: XArmTaskEnv) -> None:
    env.reset(seed=7)
    first = env.task_state()
    env.reset(seed=8)
    assert env.task_state() != first
    env.reset(seed=7)
    assert env.task_state() == first


def test_step_is_ik_plus_step_joint_targets() -> None:
    # Two envs from the same seed: one steps with actions, the other replays the joint targets
    # that step() reported. They must end in the same state with the same rewards.
    a_env = XArmTaskEnv("push", SimConfig(task="push", obs_from_full_frame=False))
    b_env = XArmTaskEnv("push", SimConfig(task="push", obs_from_full_frame=False))
    try:
        a_env.reset(seed=3)
        b_env.reset(seed=3)
        rng = np.random.default_rng(0)
        for _ in range(5):
            _, ra, _, _, info = a_env.step(rng.uniform(-1, 1, 4))
            _, rb, _, _, _ = b_env.step_joint_targets(info["joint_targets"], info["gripper_target"])
            assert ra == pytest.approx(rb)
        np.testing.assert_allclose(a_env.joint_positions(), b_env.joint_positions(), atol=1e-9)
    finally:
        a_env.close()
        b_env.close()


def test_joint_targets_are_tracked_within_a_control_period(env: XArmTaskEnv) -> None:
    env.reset(seed=2)
    q = env.joint_positions()
    target = q + np.array([0.1, -0.08, 0.05, 0.1, -0.1, 0.08, 0.1])
    env.step_joint_targets(target, 0.0)
    assert np.abs(env.joint_positions() - target).max() < 0.01
    assert env.gripper_position() < 0.1  # mostly closed within the period
    env.step_joint_targets(target, 0.0)
    assert env.gripper_position() < 0.02


def test_actions_move_the_tcp(env: XArmTaskEnv) -> None:
    env.reset(seed=4)
    start = env.tcp_position()
    env.step(np.array([1.0, 0.0, 0.0, 1.0]))
    moved = env.tcp_position() - start
    assert moved[0] == pytest.approx(env.config.max_delta_m, abs=0.01)
    assert abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01


@pytest.mark.parametrize("env", ["reach", "push", "lift"], indirect=True)
def test_random_actions_respect_joint_and_workspace_limits(env: XArmTaskEnv) -> None:
    rng = np.random.default_rng(5)
    ws = env.config.workspace
    for episode in range(2):
        env.reset(seed=episode)
        for _ in range(25):
            # Saturating actions push hardest against the limits.
            obs, *_ = env.step(np.sign(rng.uniform(-1, 1, 4)))
            q = env.joint_positions()
            assert np.all(q >= JOINT_LOWER) and np.all(q <= JOINT_UPPER)
            assert ws.contains(obs["state"][:3].astype(np.float64), tol=0.01)


def test_bad_commands_raise(env: XArmTaskEnv) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    q = env.joint_positions()
    with pytest.raises(ValueError, match="joint4"):
        env.step_joint_targets(np.where(np.arange(7) == 3, 5.0, q), 0.5)
    with pytest.raises(ValueError, match="gripper_target"):
        env.step_joint_targets(q, 1.5)
    with pytest.raises(ValueError, match="task"):
        SimConfig(task="stack")
    with pytest.raises(ValueError, match="whole multiple"):
        SimConfig(control_period=0.161)


def test_camera_intrinsics_match_d435_colour_fov(env: XArmTaskEnv) -> None:
    k = env.camera_intrinsics()
    assert (k["width"], k["height"]) == (640, 480)
    vfov = 2 * np.degrees(np.arctan(k["height"] / 2 / k["fy"]))
    hfov = 2 * np.degrees(np.arctan(k["width"] / 2 / k["fx"]))
    assert vfov == pytest.approx(42.5, abs=0.1)
    assert 54 < hfov < 56  # D435 colour at 4:3; the 69 deg datasheet figure is the 16:9 mode


def test_task_state_reports_objects(env: XArmTaskEnv) -> None:
    env.reset(seed=0)
    s = env.task_state()
    for key in ("tcp_x", "cube_x", "cube_z", "goal_x", "goal_z", "gripper"):
        assert isinstance(s[key], float)
    assert s["cube_z"] == pytest.approx(env.config.cube_half_size_m, abs=1e-3)  # resting on the table
