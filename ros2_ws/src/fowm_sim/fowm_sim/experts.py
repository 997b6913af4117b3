"""Scripted experts for reach, push and lift, used to collect offline demonstrations.

Each expert is a stateless feedback policy on privileged sim state (env.task_state()): it picks
a waypoint from where the TCP, gripper and cube are now, and moves towards it with a saturated
proportional action. Gaussian noise (std `noise`) is added to every action component, then clipped.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fowm_sim.env import XArmTaskEnv

Expert = Callable[[XArmTaskEnv, np.random.Generator, float], np.ndarray]

_GRASPED_OPENING = 0.8  # below this opening with the cube between the pads, the cube is held
_HOVER_M = 0.07  # height above the cube centre from which the hand descends


def _vec(s: dict[str, float], name: str) -> np.ndarray:
    return np.array([s[f"{name}_x"], s[f"{name}_y"], s[f"{name}_z"]])


def _move(env: XArmTaskEnv, tcp: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
    """Action (4,) that moves the TCP towards `target` (saturating at max_delta_m per decision)."""
    xyz = np.clip((target - tcp) / env.config.max_delta_m, -1.0, 1.0)
    return np.array([*xyz, gripper])


def _reach(env: XArmTaskEnv, s: dict[str, float]) -> np.ndarray:
    return _move(env, _vec(s, "tcp"), _vec(s, "goal"), 1.0)


def _push(env: XArmTaskEnv, s: dict[str, float]) -> np.ndarray:
    tcp, cube, goal = _vec(s, "tcp"), _vec(s, "cube"), _vec(s, "goal")
    to_goal = goal[:2] - cube[:2]
    dist = float(np.linalg.norm(to_goal))
    low_z = env.config.cube_half_size_m
    if dist < 0.02:
        return _move(env, tcp, tcp, -1.0)  # close enough: hold still rather than risk an overshoot
    d = to_goal / dist  # (2,) push direction
    rel = tcp[:2] - cube[:2]
    along = float(rel @ d)  # negative = behind the cube
    lateral = float(np.linalg.norm(rel - along * d))
    # TCP-to-cube-centre distance when the closed pads (~2.5 cm across) touch the cube.
    contact = env.config.cube_half_size_m + 0.015
    behind = cube[:2] - (contact + 0.015) * d
    if along < -0.8 * contact and lateral < 0.012 and tcp[2] < low_z + 0.015:
        # Aligned behind the cube: push it until its centre reaches the goal.
        target_xy = goal[:2] - contact * d
        return _move(env, tcp, np.array([*target_xy, low_z]), -1.0)
    if np.linalg.norm(tcp[:2] - behind) < 0.012:
        return _move(env, tcp, np.array([*behind, low_z]), -1.0)  # above the start point: descend
    if tcp[2] < low_z + _HOVER_M - 0.02 and np.linalg.norm(rel) < 0.08:
        return _move(env, tcp, tcp + np.array([0.0, 0.0, _HOVER_M]), -1.0)  # near the cube: rise first
    # Travel to the start point above cube height so the hand never sweeps the cube sideways.
    return _move(env, tcp, np.array([*behind, low_z + _HOVER_M]), -1.0)


def _lift(env: XArmTaskEnv, s: dict[str, float]) -> np.ndarray:
    tcp, cube, start = _vec(s, "tcp"), _vec(s, "cube"), _vec(s, "cube_start")
    opening = s["gripper"]
    offset = tcp - cube
    xy_err = float(np.linalg.norm(offset[:2]))
    holding = opening < _GRASPED_OPENING and xy_err < 0.02 and abs(offset[2]) < 0.02
    if holding:
        return _move(env, tcp, np.array([cube[0], cube[1], start[2] + 0.25]), -1.0)
    if xy_err > 0.01:
        # Open and hover above the cube; descend only once above it.
        hover = cube + np.array([0.0, 0.0, _HOVER_M])
        return _move(env, tcp, hover, 1.0)
    if offset[2] > 0.006:
        return _move(env, tcp, cube, 1.0)
    return _move(env, tcp, cube, -1.0)  # at the cube: close the gripper


_POLICIES: dict[str, Callable[[XArmTaskEnv, dict[str, float]], np.ndarray]] = {
    "reach": _reach,
    "push": _push,
    "lift": _lift,
}


def scripted_expert(task: str) -> Expert:
    """The scripted expert for `task`: a callable (env, rng, noise_std) -> action (4,) float32."""
    if task not in _POLICIES:
        raise ValueError(f"no scripted expert for task {task!r}; known: {sorted(_POLICIES)}")
    policy = _POLICIES[task]

    def act(env: XArmTaskEnv, rng: np.random.Generator, noise: float = 0.0) -> np.ndarray:
        if env.task.name != task:
            raise ValueError(f"expert for {task!r} was given an env running {env.task.name!r}")
        if not np.isfinite(noise) or noise < 0:
            raise ValueError(f"noise must be a finite std >= 0, got {noise!r}")
        action = policy(env, env.task_state())
        if noise > 0:
            action = action + rng.normal(0.0, noise, size=4)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return act
