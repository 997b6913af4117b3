"""Scripted experts solve their tasks; a random policy mostly does not."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first mujoco import

import numpy as np
import pytest

from fowm_sim.config import SimConfig
from fowm_sim.env import XArmTaskEnv
from fowm_sim.experts import scripted_expert

EPISODES = 50


def success_rate(task: str, policy) -> float:
    env = XArmTaskEnv(task, SimConfig(task=task, obs_from_full_frame=False))
    rng = np.random.default_rng(0)
    wins = 0
    try:
        for seed in range(EPISODES):
            env.reset(seed=seed)
            truncated = False
            while not truncated:
                _, _, _, truncated, info = env.step(policy(env, rng))
            wins += info["success"]  # success at the end of the episode
    finally:
        env.close()
    return wins / EPISODES


@pytest.mark.parametrize("task", ["reach", "push", "lift"])
def test_noiseless_expert_succeeds_and_beats_random(task: str) -> None:
    expert = scripted_expert(task)
    expert_rate = success_rate(task, lambda env, rng: expert(env, rng, 0.0))
    random_rate = success_rate(task, lambda env, rng: rng.uniform(-1, 1, 4).astype(np.float32))
    print(f"{task}: expert {expert_rate:.2f}, random {random_rate:.2f}")
    assert expert_rate >= 0.9
    assert random_rate <= 0.2
    assert expert_rate - random_rate >= 0.7


def test_noisy_expert_actions_stay_in_range() -> None:
    env = XArmTaskEnv("push", SimConfig(task="push", obs_from_full_frame=False))
    try:
        env.reset(seed=0)
        expert = scripted_expert("push")
        rng = np.random.default_rng(0)
        actions = np.stack([expert(env, rng, 0.5) for _ in range(20)])
        assert actions.dtype == np.float32 and actions.shape == (20, 4)
        assert np.all(np.abs(actions) <= 1.0)
        assert actions.std(axis=0).min() > 0.1  # the noise is really there
    finally:
        env.close()


def test_expert_rejects_wrong_task_and_bad_noise() -> None:
    env = XArmTaskEnv("reach", SimConfig(task="reach", obs_from_full_frame=False))
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        with pytest.raises(ValueError, match="reach"):
            scripted_expert("lift")(env, rng, 0.0)
        with pytest.raises(ValueError, match="noise"):
            scripted_expert("reach")(env, rng, -1.0)
        with pytest.raises(ValueError, match="known"):
            scripted_expert("stack")
    finally:
        env.close()
