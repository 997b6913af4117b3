"""Push's reward: its action term follows SimConfig.push_action_penalty, and with FOWM's coefficient
(0.15) on this sim's layouts and 0.16 s decisions, standing still is worth more than the scripted
expert's perfect push at the agent's discount (0.9); at our default it is not. That is why push's
default coefficient differs from FOWM's (docs/experiments.md, "Why push did not succeed")."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_sim.config import SimConfig
from fowm_sim.env import XArmTaskEnv
from fowm_sim.experts import scripted_expert
from fowm_sim.tasks import FOWM_PUSH_ACTION_PENALTY, PUSH_ACTION_PENALTY

GAMMA = 0.9  # both presets' discount
SEEDS = range(10_000, 10_006)


def _env(c: float) -> XArmTaskEnv:
    return XArmTaskEnv("push", SimConfig(task="push", push_action_penalty=c, obs_from_full_frame=False))


def test_the_action_term_follows_the_configured_coefficient():
    a = np.array([0.6, -0.3, 0.2, -1.0], np.float32)
    rewards = {}
    for c in (0.0, FOWM_PUSH_ACTION_PENALTY):
        env = _env(c)
        env.reset(seed=10_000)
        rewards[c] = env.step(a)[1]
        env.close()
    # the action term is c ||a_xyz||^2 of the displacement the joint targets command (recovered by
    # forward kinematics, so the ROS sim node's joint-target path rewards the same), ~ the action
    penalty = FOWM_PUSH_ACTION_PENALTY * float(a[:3] @ a[:3])
    assert rewards[FOWM_PUSH_ACTION_PENALTY] - rewards[0.0] == pytest.approx(-penalty, rel=0.01)
    assert SimConfig(task="push").push_action_penalty == PUSH_ACTION_PENALTY == 0.02
    with pytest.raises(ValueError, match="push_action_penalty"):
        SimConfig(task="push", push_action_penalty=-0.1)


def test_fowm_coefficient_makes_standing_still_worth_more_than_pushing():
    env = _env(0.0)  # rewards are then the distance term alone; the action term is added per c below
    expert, rng = scripted_expert("push"), np.random.default_rng(0)
    still = np.array([0.0, 0.0, 0.0, -1.0], np.float32)
    disc = GAMMA ** np.arange(env.config.episode_length)

    def discounted(policy) -> tuple[float, float, int]:
        """Means over SEEDS of the discounted distance term and of the discounted sum of ||a_xyz||^2,
        and the number of layouts solved."""
        dist, act, successes = [], [], 0
        for seed in SEEDS:
            env.reset(seed=seed)
            d, p, success = [], [], False
            for _ in range(env.config.episode_length):
                a = policy()
                _, r, _, _, info = env.step(a)
                d.append(r)
                p.append(float(a[:3] @ a[:3]))
                success |= info["success"]
            dist.append(disc @ d)
            act.append(disc @ p)
            successes += success
        return float(np.mean(dist)), float(np.mean(act)), successes

    push = discounted(lambda: expert(env, rng, 0.0))
    stay = discounted(lambda: still)
    env.close()
    assert push[2] == len(SEEDS)  # the noise-free expert solves every layout
    assert stay[1] == 0.0

    def value(parts: tuple[float, float, int], c: float) -> float:
        return parts[0] - c * parts[1]

    # FOWM's coefficient: pushing does not pay; ours: it does
    assert value(stay, FOWM_PUSH_ACTION_PENALTY) > value(push, FOWM_PUSH_ACTION_PENALTY)
    assert value(push, PUSH_ACTION_PENALTY) > value(stay, PUSH_ACTION_PENALTY)
