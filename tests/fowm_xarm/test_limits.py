"""Joint limits as published for the xArm7, workspace box behaviour, and limits under random IK use."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_xarm.kinematics import HOME_Q, XArm7Kinematics
from fowm_xarm.limits import (
    JOINT_LOWER,
    JOINT_NAMES,
    JOINT_UPPER,
    JOINT_VELOCITY_LIMIT,
    WorkspaceLimits,
    clip_joints,
    joints_within_limits,
)


def test_joint_table_matches_xarm_ros2() -> None:
    assert JOINT_NAMES == ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "joint7")
    # xarm7.urdf.xacro: joints 1/3/5/7 +-2pi, joint2 [-2.059, 2.0944], joint4 [-0.19198, 3.927],
    # joint6 [-1.69297, pi]; every joint 3.14 rad/s.
    np.testing.assert_allclose(JOINT_LOWER[[1, 3, 5]], [-2.059, -0.19198, -1.69297])
    np.testing.assert_allclose(JOINT_UPPER[[1, 3, 5]], [2.0944, 3.927, np.pi])
    np.testing.assert_allclose(JOINT_UPPER[[0, 2, 4, 6]], 2 * np.pi)
    np.testing.assert_allclose(JOINT_VELOCITY_LIMIT, 3.14)
    with pytest.raises(ValueError):
        JOINT_LOWER[0] = 0.0  # read-only: nobody can loosen a limit by accident


def test_clip_and_check_joints() -> None:
    q = np.array([7.0, -3.0, 0.0, 4.0, 0.0, -2.0, 0.0])
    assert not joints_within_limits(q)
    clipped = clip_joints(q)
    assert joints_within_limits(clipped)
    assert clipped[1] == pytest.approx(-2.059) and clipped[3] == pytest.approx(3.927)
    with pytest.raises(ValueError, match="shape"):
        clip_joints(np.zeros(3))


def test_workspace_clip_and_contains() -> None:
    ws = WorkspaceLimits()
    inside = np.array([0.4, 0.0, 0.2])
    assert ws.contains(inside)
    np.testing.assert_allclose(ws.clip(inside), inside)
    outside = np.array([1.0, -1.0, -0.5])
    assert not ws.contains(outside)
    np.testing.assert_allclose(ws.clip(outside), [ws.x_max, ws.y_min, ws.z_min])
    with pytest.raises(ValueError, match="shape"):
        ws.contains(np.zeros(2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x_min": 0.7}, "x_min"),
        ({"z_min": -0.1, "z_max": 0.2}, "table"),
        ({"y_max": float("nan")}, "finite"),
    ],
)
def test_workspace_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkspaceLimits(**kwargs)


def test_random_ee_deltas_never_leave_joint_or_workspace_limits() -> None:
    kin = XArm7Kinematics()
    rng = np.random.default_rng(1)
    q = HOME_Q.copy()
    for _ in range(150):
        q = kin.ee_delta_to_joint_targets(q, rng.uniform(-0.08, 0.08, 3))
        assert joints_within_limits(q)
        assert kin.workspace.contains(kin.fk(q)[0], tol=2e-3)
