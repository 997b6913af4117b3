"""FK against UFACTORY's published xArm7 geometry, IK round trips, and the ee-delta path."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_xarm.kinematics import DOWN_ROT, HOME_Q, IKConfig, IKError, XArm7Kinematics
from fowm_xarm.limits import JOINT_LOWER, JOINT_UPPER, WorkspaceLimits

# UFACTORY's modified (Craig) DH table for the xArm7, one row per joint: alpha_{i-1}, a_{i-1} (m), d_i (m).
MDH = [
    (0.0, 0.0, 0.267),
    (-np.pi / 2, 0.0, 0.0),
    (np.pi / 2, 0.0, 0.293),
    (np.pi / 2, 0.0525, 0.0),
    (np.pi / 2, 0.0775, 0.3425),
    (np.pi / 2, 0.0, 0.0),
    (-np.pi / 2, 0.076, 0.097),
]
TCP_OFFSET = 0.172


def mdh_flange(q: np.ndarray) -> np.ndarray:
    """4x4 base->flange transform from the DH table with plain homogeneous matrices (no MuJoCo)."""
    t = np.eye(4)
    for (alpha, a, d), theta in zip(MDH, q):
        ca, sa, ct, st = np.cos(alpha), np.sin(alpha), np.cos(theta), np.sin(theta)
        t = t @ np.array(
            [
                [ct, -st, 0.0, a],
                [st * ca, ct * ca, -sa, -sa * d],
                [st * sa, ct * sa, ca, ca * d],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )
    return t


@pytest.fixture(scope="module")
def kin() -> XArm7Kinematics:
    return XArm7Kinematics()


def test_zero_configuration_matches_published_geometry(kin: XArm7Kinematics) -> None:
    # By hand from the offsets: x = 52.5 + 77.5 + 76 mm, z = 267 + 293 - 342.5 - 97 mm; flange faces down.
    pos, rot = kin.fk(np.zeros(7))
    flange = np.array([0.206, 0.0, 0.1205])
    np.testing.assert_allclose(pos, flange + TCP_OFFSET * np.array([0.0, 0.0, -1.0]), atol=1e-3)
    np.testing.assert_allclose(rot, DOWN_ROT, atol=1e-6)


@pytest.mark.parametrize(
    "q",
    [
        [0.5, -0.3, 0.2, 1.0, -0.4, 0.8, 0.3],
        [-1.2, 0.7, -0.9, 2.1, 1.5, -0.6, -2.0],
        [2.5, -1.5, 1.3, 0.3, -2.2, 2.4, 1.1],
    ],
)
def test_fk_matches_independent_dh_chain(kin: XArm7Kinematics, q: list[float]) -> None:
    expected = mdh_flange(np.array(q))
    pos, rot = kin.fk(np.array(q))
    tcp = expected[:3, 3] + TCP_OFFSET * expected[:3, 2]
    assert np.linalg.norm(pos - tcp) < 1e-3  # within 1 mm
    np.testing.assert_allclose(rot, expected[:3, :3], atol=1e-5)


def test_ik_round_trips_random_reachable_poses(kin: XArm7Kinematics) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        # A random configuration near the working posture is reachable by construction.
        q_true = np.clip(HOME_Q + rng.uniform(-0.6, 0.6, 7), JOINT_LOWER, JOINT_UPPER)
        pos, rot = kin.fk(q_true)
        q = kin.ik(pos, HOME_Q, rot, strict=True)
        pos2, rot2 = kin.fk(q)
        assert np.linalg.norm(pos2 - pos) < 1e-3
        assert np.abs(rot2 - rot).max() < 1e-2
        assert np.all(q >= JOINT_LOWER) and np.all(q <= JOINT_UPPER)


def test_position_only_ik_reaches_target(kin: XArm7Kinematics) -> None:
    target = np.array([0.5, -0.15, 0.1])
    q = kin.ik(target, HOME_Q, strict=True)
    assert np.linalg.norm(kin.fk(q)[0] - target) < 1e-3


def test_unreachable_target_is_best_effort_or_raises(kin: XArm7Kinematics) -> None:
    far = np.array([2.0, 0.0, 0.3])  # 2 m away: beyond the arm's ~0.7 m reach
    q = kin.ik(far, HOME_Q)
    assert np.all(q >= JOINT_LOWER) and np.all(q <= JOINT_UPPER)
    assert kin.fk(q)[0][0] > 0.6  # stretched towards it
    with pytest.raises(IKError):
        kin.ik(far, HOME_Q, strict=True)


def test_ee_delta_moves_tcp_and_keeps_gripper_down(kin: XArm7Kinematics) -> None:
    start, _ = kin.fk(HOME_Q)
    delta = np.array([0.03, -0.02, -0.04])
    q = kin.ee_delta_to_joint_targets(HOME_Q, delta)
    pos, rot = kin.fk(q)
    np.testing.assert_allclose(pos, start + delta, atol=1e-3)
    np.testing.assert_allclose(rot, DOWN_ROT, atol=1e-2)


def test_ee_delta_is_clipped_to_workspace() -> None:
    ws = WorkspaceLimits(z_min=0.2)
    kin = XArm7Kinematics(workspace=ws)
    q = kin.ee_delta_to_joint_targets(HOME_Q, np.array([0.0, 0.0, -0.3]))  # asks for z = -0.05
    assert kin.fk(q)[0][2] == pytest.approx(0.2, abs=1e-3)


def test_bad_inputs_raise_clear_errors(kin: XArm7Kinematics) -> None:
    with pytest.raises(ValueError, match="shape"):
        kin.fk(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        kin.fk(np.full(7, np.nan))
    with pytest.raises(ValueError, match="target_pos"):
        kin.ik(np.array([0.4, 0.0]), HOME_Q)
    with pytest.raises(ValueError, match="rotation"):
        kin.ik(np.array([0.4, 0.0, 0.2]), HOME_Q, 2 * np.eye(3))
    with pytest.raises(ValueError, match="delta_xyz"):
        kin.ee_delta_to_joint_targets(HOME_Q, np.array([np.inf, 0.0, 0.0]))
    with pytest.raises(ValueError, match="max_iters"):
        IKConfig(max_iters=0)


def test_jacobian_matches_finite_differences(kin: XArm7Kinematics) -> None:
    q = HOME_Q + np.array([0.2, -0.1, 0.3, 0.2, -0.4, 0.1, 0.5])
    jac = kin.jacobian(q)  # (6, 7)
    eps = 1e-6
    for j in range(7):
        dq = np.zeros(7)
        dq[j] = eps
        numeric = (kin.fk(q + dq)[0] - kin.fk(q - dq)[0]) / (2 * eps)
        np.testing.assert_allclose(jac[:3, j], numeric, atol=1e-6)
