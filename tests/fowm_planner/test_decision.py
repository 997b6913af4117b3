"""The planner's pure logic, in process: the node's observation/command path equals XArmTaskEnv's,
every command satisfies the safety limits whatever the model returns, and the watchdog, deadline
and weight-commit classes behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fowm_planner.config import PlannerNodeConfig
from fowm_planner.decision import HOLD, PLAN, POLICY, DecisionMaker
from fowm_planner.inputs import Observed, observe
from fowm_planner.model import build_agent
from fowm_planner.timing import DeadlineMonitor
from fowm_planner.watchdog import InputWatchdog
from fowm_xarm import topics
from fowm_xarm.limits import JOINT_LOWER, JOINT_UPPER

KEYS = ("rgb", "state")


@pytest.fixture(scope="module")
def agent():
    return build_agent("realtime-cpu", KEYS, 84)[0]


def _ros_messages(stamp_ns: int, frame: np.ndarray, q: np.ndarray, gripper: float, encoding: str, order):
    """The sim node's CDR bytes for one observation, deserialised as rclpy messages (what the planner
    node's callbacks receive). `order` permutes the joint state's names; bgr8 swaps the channels."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image, JointState

    image = deserialize_message(topics.image_msg(stamp_ns, np.ascontiguousarray(frame)), Image)
    if encoding == "bgr8":
        image.encoding = "bgr8"
        image.data = np.ascontiguousarray(frame[:, :, ::-1]).reshape(-1).tobytes()
    js = deserialize_message(topics.joint_state_msg(stamp_ns, q, np.zeros(7), gripper), JointState)
    names, pos = list(js.name), list(js.position)
    js.name, js.position = [names[i] for i in order], [pos[i] for i in order]
    return image, js


def test_node_and_env_produce_identical_observations_and_commands(agent):
    """Item 1 of issue 9: the node's conversion and command path against XArmTaskEnv, step by step,
    on the sim's own messages (rgb8 and bgr8, joint names in the wire order and shuffled)."""
    from fowm_sim.env import XArmTaskEnv

    cfg = PlannerNodeConfig()
    mapper, obs_config = cfg.action_mapper(), cfg.observation_config()
    env = XArmTaskEnv("reach")
    rng = np.random.default_rng(0)
    try:
        env_obs, _ = env.reset(seed=5)
        for step in range(6):
            frame, q, g = env.render_camera(), env.joint_positions(), env.gripper_position()
            encoding = ("rgb8", "bgr8")[step % 2]
            order = list(range(8)) if step % 3 else list(rng.permutation(8))
            image, js = _ros_messages(10**9 + step, frame, q, g, encoding, order)
            observed = observe(image, js, KEYS, mapper.kinematics, obs_config)
            np.testing.assert_array_equal(observed.obs["rgb"], env_obs["rgb"])
            np.testing.assert_array_equal(observed.obs["state"], env_obs["state"])
            assert observed.stamp_ns == 10**9 + step

            action = rng.uniform(-1.2, 1.2, 4).astype(np.float32)  # beyond the box too: both clip
            cmd = mapper.command(action, observed.q, observed.gripper)
            env_obs, _, _, _, info = env.step(action)
            np.testing.assert_array_equal(cmd.joint_targets, info["joint_targets"])
            assert cmd.gripper == info["gripper_target"]
    finally:
        env.close()


def test_observation_errors_name_the_problem():
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image, JointState

    cfg = PlannerNodeConfig()
    kin, oc = cfg.action_mapper().kinematics, cfg.observation_config()
    q = np.zeros(7)
    good = deserialize_message(topics.joint_state_msg(1, q, q, 1.0), JointState)
    frame = np.zeros((480, 640, 3), np.uint8)
    image = deserialize_message(topics.image_msg(1, frame), Image)
    mono = deserialize_message(topics.image_msg(1, frame), Image)
    mono.encoding = "mono8"
    small = deserialize_message(topics.image_msg(1, np.zeros((64, 64, 3), np.uint8)), Image)
    nan = deserialize_message(topics.joint_state_msg(1, q, q, 1.0), JointState)
    nan.position = [float("nan"), *nan.position[1:]]
    renamed = deserialize_message(topics.joint_state_msg(1, q, q, 1.0), JointState)
    renamed.name = ["j1", *renamed.name[1:]]
    for img, js, reason in (
        (mono, good, "encoding 'mono8' is not supported"),
        (small, good, "smaller than the model input"),
        (image, nan, "NaN or Inf"),
        (image, renamed, "lacks ['joint1']"),
    ):
        with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
            observe(img, js, KEYS, kin, oc)


def _random_observed(rng: np.random.Generator, kinematics) -> Observed:
    from fowm_xarm.observation import ObservationConfig, make_observation

    q = rng.uniform(JOINT_LOWER, JOINT_UPPER)
    g = float(rng.uniform(0, 1))
    frame = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    obs = make_observation(frame, q, g, kinematics, ObservationConfig(84, crop=None))
    return Observed(obs, q, g, 0)


def test_every_command_satisfies_the_limits_for_random_weights_observations_and_outputs(agent):
    """Property test: random weights (perturbed real agents), random measurements anywhere in the
    joint range, random images, and raw model outputs including NaN, Inf and huge values."""
    cfg = PlannerNodeConfig(max_joint_step_rad=0.1, workspace_min=[0.3, -0.2, 0.05])
    mapper = cfg.action_mapper()
    rng = np.random.default_rng(0)
    sources: dict[str, int] = {}
    weird = [np.nan, np.inf, -np.inf, 1e9, -1e9, 3.0, -3.0]

    def check(maker: DecisionMaker, observed: Observed) -> None:
        d = maker.decide(observed, first_step=bool(rng.integers(2)))
        sources[d.source] = sources.get(d.source, 0) + 1
        assert mapper.satisfied(d.command, observed.q), (d, observed.q)
        assert d.command.held == (d.source == HOLD)
        if d.action is not None:
            assert np.all(np.isfinite(d.action))

    # Raw outputs: anything a broken model could return.
    def raw_act(obs, first):
        a = rng.uniform(-1.5, 1.5, 4)
        mask = rng.random(4) < 0.3
        a[mask] = rng.choice(weird, mask.sum())
        return a

    maker = DecisionMaker(agent, mapper, DeadlineMonitor(0.0), act=raw_act)
    for _ in range(400):
        check(maker, _random_observed(rng, mapper.kinematics))

    # Real plans with random weights: the agent's tensors scaled by random factors.
    original = {k: v.clone() for k, v in agent.get_weights().items()}
    try:
        for trial in range(4):
            g = torch.Generator().manual_seed(trial)
            agent.load_weights(
                {k: v * (1 + 3 * torch.rand(v.shape, generator=g)) if v.is_floating_point() else v
                 for k, v in original.items()}
            )  # fmt: skip
            maker = DecisionMaker(agent, mapper, DeadlineMonitor(0.0))
            for _ in range(8):
                check(maker, _random_observed(rng, mapper.kinematics))
    finally:
        agent.load_weights(original)
    assert sources.get(HOLD, 0) > 0 and sources.get(PLAN, 0) > 0, sources


def test_deadline_misses_fall_back_to_the_policy_or_hold(agent):
    mapper = PlannerNodeConfig().action_mapper()
    rng = np.random.default_rng(1)
    observed = _random_observed(rng, mapper.kinematics)
    observed = Observed(observed.obs, np.array([0, -0.26, 0, 0.96, 0, 1.22, 0]), 1.0, 0)
    now = [0.0]

    def slow_act(obs, first):  # each plan "takes" 0.2 s of a 0.1 s budget
        now[0] += 0.2
        return np.full(4, 0.5)

    deadline = DeadlineMonitor(0.1, probe_every=3)
    maker = DecisionMaker(agent, mapper, deadline, POLICY, slow_act, lambda: now[0])
    first = maker.decide(observed, True)
    assert first.source == POLICY and first.deadline_missed and first.plan_latency_s == pytest.approx(0.2)
    np.testing.assert_allclose(first.action, agent.act_prior(observed.obs), atol=1e-6)
    # Predicted to overrun: skipped (a miss, no plan) until the probe re-measures.
    skipped = maker.decide(observed, False)
    assert skipped.source == POLICY and skipped.plan_latency_s is None
    assert maker.decide(observed, False).plan_latency_s is None
    assert maker.decide(observed, False).plan_latency_s is not None  # the probe
    assert maker.deadline.misses == 4

    hold = DecisionMaker(agent, mapper, DeadlineMonitor(0.1), HOLD, slow_act, lambda: now[0])
    d = hold.decide(observed, True)
    assert d.source == HOLD and d.action is None and d.command.held
    np.testing.assert_array_equal(d.command.joint_targets, observed.q)


def test_watchdog_trips_on_stale_missing_and_bad_inputs_and_recovers():
    wd = InputWatchdog(stale_after_s=0.3, log_throttle_s=1.0)
    s = 10**9
    assert wd.check(s, {"camera image": None, "joint states": s}).reason == "no camera image received yet"
    assert wd.check(s, {"camera image": s, "joint states": s}).ok
    stale = wd.check(s + 400_000_000, {"camera image": s, "joint states": s + 399_000_000})
    assert not stale.ok and "camera image is stale (0.40 s old" in stale.reason
    assert wd.should_log(s) and not wd.should_log(s + 1) and wd.should_log(s + 10**9)
    bad = wd.check(s, {"camera image": s, "joint states": s}, "image encoding 'mono8' is not supported")
    assert bad.reason == "image encoding 'mono8' is not supported" and wd.should_log(s)
    assert wd.check(s, {"camera image": s, "joint states": s}).ok
    assert wd.trips == 2  # missing -> ok, then stale -> bad without an ok between


def test_background_planner_runs_one_plan_at_a_time_and_reports_it():
    import threading

    from fowm_planner.background import BackgroundPlanner

    release, done = threading.Event(), threading.Event()

    def act(obs, first):
        release.wait(5)
        if obs.get("fail"):
            raise ValueError("model exploded")
        return np.full(4, 0.25 if first else -0.25)

    bp = BackgroundPlanner(act)
    try:
        bp.start({}, True, done.set)
        assert bp.busy and not bp.finished and bp.take() is None
        with pytest.raises(RuntimeError, match="still running"):
            bp.start({}, False, done.set)
        release.set()
        assert done.wait(5)
        bp.wait()
        action, seconds = bp.take()
        np.testing.assert_array_equal(action, np.full(4, 0.25))
        assert seconds >= 0 and bp.take() is None and not bp.busy
        bp.start({"fail": True}, False, lambda: None)
        bp.wait()
        with pytest.raises(ValueError, match="model exploded"):
            bp.take()
    finally:
        release.set()
        bp.shutdown()


def test_preset_overrides_reach_the_agent_and_bad_ones_are_refused(tmp_path):
    """`overrides` (as the trainer's) shape the planner's agent: weights trained with model.mlp_dim=128
    load only into a planner given the same override; unknown keys and malformed items fail at
    startup, naming what is wrong."""
    from fowm_core.weights import save_weights

    cfg = PlannerNodeConfig(overrides=["", "planner.num_samples=32", "model.mlp_dim=128"])
    assert cfg.overrides == ["planner.num_samples=32", "model.mlp_dim=128"]
    assert (cfg.fowm_config().planner.num_samples, cfg.fowm_config().model.mlp_dim) == (32, 128)
    with pytest.raises(ValueError, match="model.nope"):
        PlannerNodeConfig(overrides=["model.nope=1"])
    with pytest.raises(ValueError, match="dotted.key=value"):
        PlannerNodeConfig(overrides=["planner.compile"])

    small = build_agent("realtime-cpu", ("state",), 84, overrides=cfg.overrides)[0]
    assert small.planner.cfg.num_samples == 32
    path = tmp_path / "mlp128.safetensors"
    save_weights(path, small)
    agent, meta, _ = build_agent("realtime-cpu", ("state",), 84, str(path), overrides=["model.mlp_dim=128"])
    assert meta is not None and agent.cfg.model.mlp_dim == 128
    with pytest.raises(ValueError, match="config hash mismatch"):
        build_agent("realtime-cpu", ("state",), 84, str(path))
