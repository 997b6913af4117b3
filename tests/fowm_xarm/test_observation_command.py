"""The shared observation and action paths: message fields -> arrays, the model observation, and
the safety layer that every command passes."""

from __future__ import annotations

import numpy as np
import pytest

from fowm_sim.env import XArmTaskEnv
from fowm_xarm.command import ActionMapper, SafetyLimits
from fowm_xarm.kinematics import HOME_Q, XArm7Kinematics
from fowm_xarm.limits import JOINT_LOWER, JOINT_NAMES, JOINT_UPPER
from fowm_xarm.observation import image_to_rgb, joint_state_to_arrays, make_observation


@pytest.fixture(scope="module")
def kin() -> XArm7Kinematics:
    return XArm7Kinematics()


def test_image_to_rgb_reads_rgb8_bgr8_and_row_padding() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(4, 5, "rgb8", 15, rgb.tobytes()), rgb)
    assert np.array_equal(image_to_rgb(4, 5, "bgr8", 15, rgb[:, :, ::-1].tobytes()), rgb)
    padded = np.concatenate([rgb.reshape(4, 15), np.full((4, 3), 7, np.uint8)], 1)  # step 18
    assert np.array_equal(image_to_rgb(4, 5, "rgb8", 18, padded.tobytes()), rgb)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((4, 5, "mono8", 5, bytes(20)), "encoding 'mono8'"),
        ((4, 5, "rgb8", 15, bytes(59)), "59 bytes"),
        ((0, 5, "rgb8", 15, b""), "empty"),
        ((4, 5, "rgb8", 10, bytes(40)), "step 10"),
    ],
)
def test_image_to_rgb_rejects_bad_images_with_a_reason(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        image_to_rgb(*args)


def test_joint_state_any_order_and_rejections() -> None:
    names = [*JOINT_NAMES, "gripper"]
    values = [0.1 * i for i in range(8)]
    order = [7, 3, 0, 5, 1, 6, 2, 4]
    q, g = joint_state_to_arrays([names[i] for i in order], [values[i] for i in order])
    assert np.allclose(q, values[:7]) and g == pytest.approx(0.7)
    with pytest.raises(ValueError, match="lacks"):
        joint_state_to_arrays(names[:7], values[:7])
    with pytest.raises(ValueError, match="NaN"):
        joint_state_to_arrays(names, [*values[:7], float("nan")])
    with pytest.raises(ValueError, match="duplicate"):
        joint_state_to_arrays([*names[:7], "joint1"], values)
    with pytest.raises(ValueError, match="8 names but 7"):
        joint_state_to_arrays(names, values[:7])


def test_env_observation_is_make_observation_of_its_sensors() -> None:
    env = XArmTaskEnv("push")
    try:
        obs, _ = env.reset(seed=3)
        for _ in range(3):
            obs, *_ = env.step(np.array([0.5, -0.3, -0.4, -1.0]))
        ours = make_observation(
            env.render_camera(), env.joint_positions(), env.gripper_position(), env.kinematics
        )
        assert np.array_equal(ours["rgb"], obs["rgb"])
        assert np.array_equal(ours["state"], obs["state"])
        # the state's TCP is the sim's TCP (forward kinematics of the measured joints)
        assert np.allclose(obs["state"][:3], env.tcp_position(), atol=2e-3)
    finally:
        env.close()


def test_env_step_commands_what_the_action_mapper_commands() -> None:
    env = XArmTaskEnv("reach")
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(1)
        for _ in range(5):
            a = rng.uniform(-1, 1, 4)
            expected = env.action_mapper.command(a, env.joint_positions(), env.gripper_position())
            _, _, _, _, info = env.step(a)
            assert np.array_equal(info["joint_targets"], expected.joint_targets)
            assert info["gripper_target"] == expected.gripper
    finally:
        env.close()


def test_every_command_satisfies_the_limits_whatever_the_action(kin: XArm7Kinematics) -> None:
    """Property test: random measured postures and random (also NaN/Inf/huge) actions."""
    mapper = ActionMapper(kin, 0.05, SafetyLimits(max_joint_step_rad=0.2, workspace=kin.workspace))
    rng = np.random.default_rng(0)
    specials = [np.nan, np.inf, -np.inf, 1e9, -1e9]
    held = 0
    for i in range(200):
        q = np.clip(HOME_Q + rng.normal(0, 0.4, 7), JOINT_LOWER, JOINT_UPPER)
        a = rng.uniform(-3, 3, 4)
        if i % 4 == 0:
            a[rng.integers(4)] = specials[i % len(specials)]
        cmd = mapper.command(a, q, float(rng.uniform(0, 1)))
        assert mapper.satisfied(cmd, q), (a, q, cmd)
        held += cmd.held
        if not np.all(np.isfinite(a)):
            assert cmd.held and "NaN or Inf" in cmd.notes[0]
    assert 0 < held < 200


def test_safety_layer_limits_steps_and_refuses_leaving_the_workspace(kin: XArm7Kinematics) -> None:
    mapper = ActionMapper(kin, 0.05, SafetyLimits(max_joint_step_rad=0.1, workspace=kin.workspace))
    q = HOME_Q.copy()
    cmd = mapper.enforce(q + 0.5, 0.5, q, 1.0)
    assert np.allclose(np.abs(cmd.joint_targets - q), 0.1) and any("step limited" in n for n in cmd.notes)
    # straight up by 0.5 rad on joint 2 would swing the TCP far out of the box: hold
    far = q.copy()
    far[1] -= 0.1
    far[3] -= 0.1
    tcp_far = kin.fk(far)[0]
    if not kin.workspace.contains(tcp_far, tol=0.01):
        assert mapper.enforce(far, 0.5, q, 1.0).held
    out = mapper.enforce(np.full(7, np.nan), 0.5, q, 0.3)
    assert out.held and np.allclose(out.joint_targets, q) and out.gripper == pytest.approx(0.3)
    assert mapper.enforce(q, 7.0, q, 1.0).gripper == 1.0


def test_action_message_names_the_observation_stamp() -> None:
    from fowm_xarm import topics

    msg = topics.deserialize(
        topics.action_msg(np.array([0.1, -0.2, 0.3, 1.0]), obs_stamp_ns=1_234_567_890_123),
        topics.ACTION.msgtype,
    )
    assert topics.action_obs_stamp(msg) == 1_234_567_890_123
    assert np.allclose(msg.data, [0.1, -0.2, 0.3, 1.0])
    plain = topics.deserialize(topics.action_msg(np.zeros(4)), topics.ACTION.msgtype)
    assert topics.action_obs_stamp(plain) is None
