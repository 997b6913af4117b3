"""A 2-D point-mass reaching task: the smallest environment the training loop runs on.

No ROS, no MuJoCo: it exists for the learning test, the README example and quick demos. It
follows the gymnasium API (reset(seed) -> (obs, info); step(a) -> (obs, r, terminated,
truncated, info)) with dict observations {"state": float32 (4,)} = (x, y, goal_x, goal_y).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fowm_core.buffer import Episode
from fowm_core.specs import ObservationSpec


@dataclass
class PointMassConfig:
    """Parameters of the point-mass reaching task."""

    episode_length: int = 25  # decisions per episode (FOWM's xArm episodes are 25 long)
    step_size: float = 0.15  # displacement per step at |action| = 1, per axis
    arena: float = 1.0  # positions and goals live in [-arena, arena]^2
    success_radius: float = 0.1  # distance to the goal that counts as success
    min_goal_distance: float = 0.5  # resets place the goal at least this far from the start

    def __post_init__(self) -> None:
        if self.episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {self.episode_length}")
        if self.step_size <= 0 or self.arena <= 0 or self.success_radius <= 0:
            raise ValueError("step_size, arena and success_radius must be positive")
        if not 0 <= self.min_goal_distance < 2 * self.arena:
            raise ValueError(
                f"min_goal_distance must be in [0, {2 * self.arena}), got {self.min_goal_distance}"
            )


class PointMassEnv:
    """Move a point to a goal: action in [-1, 1]^2 moves it by step_size * action.

    reward = -distance to goal after the move; info["success"] is True while within
    success_radius. Episodes never terminate early; they are truncated after episode_length.
    """

    action_dim = 2
    obs_spec = ObservationSpec.make(state_dim=4)

    def __init__(self, config: PointMassConfig | None = None) -> None:
        self.config = config or PointMassConfig()
        self._rng = np.random.default_rng()
        self._pos = np.zeros(2, dtype=np.float64)
        self._goal = np.zeros(2, dtype=np.float64)
        self._t = 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {"state": np.concatenate([self._pos, self._goal]).astype(np.float32)}

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        a, c = self.config.arena, self.config
        self._pos = self._rng.uniform(-a, a, size=2)
        while True:  # rejection-sample a goal far enough away that reaching it takes planning
            self._goal = self._rng.uniform(-a, a, size=2)
            if np.linalg.norm(self._goal - self._pos) >= c.min_goal_distance:
                break
        self._t = 0
        return self._obs(), {"success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"PointMassEnv action must have shape (2,), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError("PointMassEnv action contains NaN or Inf")
        c = self.config
        self._pos = np.clip(self._pos + c.step_size * np.clip(action, -1.0, 1.0), -c.arena, c.arena)
        self._t += 1
        dist = float(np.linalg.norm(self._goal - self._pos))
        truncated = self._t >= c.episode_length
        return self._obs(), -dist, False, truncated, {"success": dist < c.success_radius}


def point_mass_expert(
    obs: dict[str, np.ndarray],
    noise: float,
    rng: np.random.Generator,
    step_size: float = 0.15,
    aim_offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """A scripted reacher: head straight for goal + `aim_offset` (full speed until one step
    away), plus Gaussian noise of std `noise` per axis, clipped to [-1, 1]. A non-zero offset
    makes a systematically wrong demonstrator. Returns (2,) float32."""
    state = np.asarray(obs["state"], dtype=np.float64)
    delta = state[2:4] + np.asarray(aim_offset) - state[0:2]
    action = np.clip(delta / step_size, -1.0, 1.0) + noise * rng.standard_normal(2)
    return np.clip(action, -1.0, 1.0).astype(np.float32)


# Config overrides (for fowm_core.config.load_config("paper", ...)) that shrink the model and the
# planner enough for this 2-D task to train in about a minute on a 2-core CPU.
POINT_MASS_OVERRIDES: dict[str, Any] = {
    "model": {"mlp_dim": 64, "state_enc_dim": 64, "latent_dim": 32},
    "planner": {"num_samples": 64, "num_pi_trajs": 8, "num_elites": 8, "iterations": 3},
    "optim": {"batch_size": 64},
}


def make_expert_dataset(
    num_episodes: int,
    noise: float,
    seed: int,
    env: PointMassEnv | None = None,
    aim_offset: tuple[float, float] = (0.0, 0.0),
) -> list[Episode]:
    """`num_episodes` episodes of `point_mass_expert`, env seeds seed*1000 + i."""
    from fowm_core.training import collect_episode  # training imports nothing from here

    env = env or PointMassEnv()
    rng = np.random.default_rng(seed)
    step = env.config.step_size
    return [
        collect_episode(
            None, env, explore=False, seed=seed * 1000 + i,
            policy=lambda obs, _first: point_mass_expert(obs, noise, rng, step, aim_offset),
        )
        for i in range(num_episodes)
    ]  # fmt: skip
