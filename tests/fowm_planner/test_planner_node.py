"""The planner node over real DDS, in its own process: rate and limits on synthetic sensor streams,
the watchdog, signed weight hot-swap, e-stop, and the same returns through ROS (lockstep sim node)
as in process."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from fowm_testing import spin_until

pytestmark = pytest.mark.ros

KEYS = ("rgb", "state")
NODE = "/fowm_planner"
PERIOD = 0.1  # s, the control period of the realtime tests (faster than 0.16 to keep them short)


def _q0() -> np.ndarray:
    from fowm_xarm.kinematics import HOME_Q

    return np.array(HOME_Q, dtype=np.float64)


@dataclass
class Command:
    t: float  # monotonic receive time
    targets: np.ndarray  # (7,) JOINT_NAMES order
    held: bool  # targets == the measured position (a hold)


@dataclass
class Listener:
    """Collects what the planner publishes."""

    node: object
    q: np.ndarray
    commands: list[Command] = field(default_factory=list)
    grippers: list[float] = field(default_factory=list)
    actions: list[tuple[np.ndarray, int | None]] = field(default_factory=list)
    diagnostics: dict[str, str] = field(default_factory=dict)
    diagnostics_count: int = 0
    episode_ends: list[dict] = field(default_factory=list)
    time_from_start_ns: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float32, Float32MultiArray, String
        from trajectory_msgs.msg import JointTrajectory

        from fowm_xarm import topics

        n = self.node
        n.create_subscription(
            JointTrajectory,
            topics.JOINT_TRAJECTORY.name,
            self._on_traj,
            topics.rclpy_qos(topics.JOINT_TRAJECTORY.qos),
        )
        n.create_subscription(
            Float32, topics.GRIPPER_COMMAND.name, lambda m: self.grippers.append(m.data),
            topics.rclpy_qos(topics.GRIPPER_COMMAND.qos),
        )  # fmt: skip
        n.create_subscription(
            Float32MultiArray, topics.ACTION.name,
            lambda m: self.actions.append((np.array(m.data), topics.action_obs_stamp(m))),
            topics.rclpy_qos(topics.ACTION.qos),
        )  # fmt: skip
        n.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            self._on_diag,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        )
        episode_qos = topics.rclpy_qos(topics.EPISODE.qos)
        episode_qos.depth = 10  # an "end" and the "start" after it arrive together
        n.create_subscription(String, topics.EPISODE.name, self._on_episode, episode_qos)

    def _on_traj(self, msg) -> None:
        from fowm_xarm.limits import JOINT_NAMES

        assert len(msg.points) == 1
        names = list(msg.joint_names)
        targets = np.array([msg.points[0].positions[names.index(j)] for j in JOINT_NAMES])
        d = msg.points[0].time_from_start
        self.time_from_start_ns.add(d.sec * 10**9 + d.nanosec)
        self.commands.append(Command(time.monotonic(), targets, bool(np.array_equal(targets, self.q))))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name == "fowm_planner":
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics_count += 1

    def _on_episode(self, msg) -> None:
        event = json.loads(msg.data)
        if event["event"] == "end":
            self.episode_ends.append(event)

    def motions_after(self, t: float) -> int:
        return sum(1 for c in self.commands if c.t > t and not c.held)

    def holds_after(self, t: float) -> int:
        return sum(1 for c in self.commands if c.t > t and c.held)


class SyntheticSensors:
    """A camera (640x480) and joint states at 20 Hz, stamped with the clock, in a chosen mode:
    good, nan (NaN joint position), mono8 (wrong encoding), small (64x64 image), no_image (stale)."""

    def __init__(self, node, q: np.ndarray) -> None:
        from sensor_msgs.msg import Image, JointState

        from fowm_xarm import topics

        self.node, self.q, self.mode = node, q, "good"
        self.frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        self.image_pub = node.create_publisher(Image, topics.IMAGE.name, topics.rclpy_qos(topics.IMAGE.qos))
        self.js_pub = node.create_publisher(
            JointState, topics.JOINT_STATES.name, topics.rclpy_qos(topics.JOINT_STATES.qos)
        )
        self.image_stamps: set[int] = set()
        self.last_image_t = 0.0
        node.create_timer(0.05, self._publish)

    def _publish(self) -> None:
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        from fowm_xarm import topics

        stamp = self.node.get_clock().now().nanoseconds
        q = self.q.copy()
        if self.mode == "nan":
            q[2] = np.nan
        self.js_pub.publish(topics.joint_state_msg(stamp, q, np.zeros(7), 1.0))
        if self.mode == "no_image":
            return
        if self.mode == "small":
            data = topics.image_msg(stamp, self.frame[:64, :64])
        elif self.mode == "mono8":
            msg = deserialize_message(topics.image_msg(stamp, self.frame[:, :, :1].repeat(3, 2)), Image)
            msg.encoding, msg.step, msg.data = "mono8", 640, self.frame[:, :, 0].tobytes()
            data = msg
        else:
            data = topics.image_msg(stamp, self.frame)
        self.image_pub.publish(data)
        self.image_stamps.add(stamp)
        self.last_image_t = time.monotonic()


def _start_planner(ros_processes, *params: str, name: str = "planner"):
    args = [sys.executable, "-m", "fowm_planner.planner_node", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return ros_processes.start(args, name)


def _call(node, srv_type, name: str, request, timeout_s: float = 20.0):
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} never appeared"
    future = client.call_async(request)
    assert spin_until(node, future.done, timeout_s), f"{name} did not answer"
    return future.result()


def _trigger(node, service: str) -> str:
    from std_srvs.srv import Trigger

    result = _call(node, Trigger, f"{NODE}/{service}", Trigger.Request())
    assert result.success
    return result.message


def _wait_motion(node, listener: Listener, after: float, ros_processes, timeout_s: float = 60.0) -> None:
    ok = spin_until(node, lambda: listener.motions_after(after) > 0, timeout_s)
    ros_processes.assert_running("planner")
    assert ok, f"no motion command; diagnostics {listener.diagnostics}"


def test_realtime_rate_limits_and_watchdog(ros_node, ros_processes):
    """Synthetic streams: the node commands at its period within the limits; stale, NaN, wrongly
    encoded or too small inputs make it hold within two periods, say why, and it resumes."""
    from fowm_planner.config import PlannerNodeConfig
    from fowm_xarm.command import JointCommand

    q = _q0()
    listener = Listener(ros_node, q)
    sensors = SyntheticSensors(ros_node, q)
    _start_planner(
        ros_processes, f"control_period:={PERIOD}", "stale_periods:=3.0", "plan_budget:=0.08",
        "require_signature:=false", "log_throttle:=0.5",
    )  # fmt: skip
    _wait_motion(ros_node, listener, 0.0, ros_processes)

    # Rate, measured over ~3 s of good data.
    t0 = time.monotonic()
    spin_until(ros_node, lambda: time.monotonic() - t0 > 3.0, 10)
    window = [c for c in listener.commands if c.t > t0]
    rate = (len(window) - 1) / (window[-1].t - window[0].t)
    assert 0.75 / PERIOD <= rate <= 1.1 / PERIOD, f"commanded at {rate:.2f} Hz, period {PERIOD} s"
    # Good data is not held (a hold or two if this test process stalls past the stale limit).
    assert sum(c.held for c in window) <= 2, "good data was held"
    assert listener.time_from_start_ns == {round(PERIOD * 1e9)}
    diag = listener.diagnostics
    for key in (
        "plan_latency_p50_ms",
        "plan_latency_p99_ms",
        "period_jitter_p99_ms",
        "predicted_return",
        "uncertainty",
    ):
        assert np.isfinite(float(diag[key])), (key, diag)
    assert (diag["watchdog"], diag["estop"], diag["running"]) == ("ok", "false", "true")

    # Limits: every command so far, with its gripper command, satisfies the safety layer.
    mapper = PlannerNodeConfig().action_mapper()
    n = min(len(listener.commands), len(listener.grippers))
    assert n > 20
    for c, g in zip(listener.commands[:n], listener.grippers[:n]):
        assert mapper.satisfied(JointCommand(c.targets, g, held=c.held), q), (c, g)
        assert np.max(np.abs(c.targets - q)) <= mapper.limits.max_joint_step_rad + 1e-9
    # Every executed action names the stamp of an image we published.
    assert listener.actions and all(stamp in sensors.image_stamps for _, stamp in listener.actions)

    for mode, reason in (
        ("nan", "NaN or Inf"),
        ("mono8", "encoding 'mono8' is not supported"),
        ("small", "smaller than the model input"),
        ("no_image", "camera image is stale"),
    ):
        sensors.mode = mode
        t_bad = time.monotonic()
        if mode == "no_image":  # it becomes stale 3 periods after the last image
            spin_until(
                ros_node, lambda: sensors.last_image_t > 0 and time.monotonic() > sensors.last_image_t, 1
            )
            t_bad = sensors.last_image_t + 3 * PERIOD
        assert spin_until(ros_node, lambda t=t_bad: listener.holds_after(t) >= 3, 20), f"{mode}: no hold"
        assert listener.motions_after(t_bad) <= 2, (
            f"{mode}: still moving {listener.motions_after(t_bad)} ticks on"
        )
        t_held = max(c.t for c in listener.commands if c.held)
        assert spin_until(ros_node, lambda r=reason: r in listener.diagnostics.get("watchdog", ""), 10), (
            mode, listener.diagnostics,
        )  # fmt: skip
        assert listener.motions_after(t_held) == 0, f"{mode}: moved while the input was bad"
        assert reason in ros_processes.log("planner"), f"{mode}: the log does not say why"
        sensors.mode = "good"
        _wait_motion(ros_node, listener, time.monotonic(), ros_processes, 20)
    assert spin_until(ros_node, lambda: listener.diagnostics.get("watchdog") == "ok", 10)
    assert int(listener.diagnostics["watchdog_trips"]) >= 4

    # A budget no plan can meet: every tick publishes the policy network's action on time instead.
    ros_processes.stop("planner")
    listener.diagnostics.clear()
    _start_planner(
        ros_processes, f"control_period:={PERIOD}", "plan_budget:=0.001", "require_signature:=false",
        name="planner_tight",
    )  # fmt: skip
    t_tight = time.monotonic()

    def tight() -> list[Command]:
        return [c for c in listener.commands if c.t > t_tight]

    assert spin_until(
        ros_node,
        lambda: len(tight()) >= 30 and int(listener.diagnostics.get("decisions_policy", "0")) >= 10,
        60,
    ), (listener.diagnostics, ros_processes.log("planner_tight")[-2000:])
    diag = listener.diagnostics
    assert diag["decisions_plan"] == "0" and int(diag["deadline_misses"]) >= int(diag["decisions_policy"])
    commands = tight()
    assert not any(c.held for c in commands)
    for c in commands:
        assert np.max(np.abs(c.targets - q)) <= mapper.limits.max_joint_step_rad + 1e-9
    # Over the whole phase: a short window is noisy here, since this process receives in bursts.
    rate = (len(commands) - 1) / (commands[-1].t - commands[0].t)
    assert 0.75 / PERIOD <= rate <= 1.15 / PERIOD, f"fallback commands at {rate:.2f} Hz"


# -- weights ---------------------------------------------------------------------------------------


def _blob_with_nan(agent) -> bytes:
    """A well-formed blob (valid checksum) whose tensors hold NaN: what a diverged trainer sends."""
    from dataclasses import asdict

    from safetensors.torch import save

    from fowm_core import weights as w

    tensors = agent.get_weights()
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name][..., 0] = float("nan")
    meta = json.dumps(asdict(w.WeightsMetadata.from_agent(agent)), sort_keys=True)
    return save(tensors, metadata={w._META_KEY: meta, w._CHECKSUM_KEY: w._checksum(meta, tensors)})


def _blob_with_wrong_shape(agent) -> bytes:
    from fowm_core.weights import WeightsMetadata, weights_to_bytes

    tensors = agent.get_weights()
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 2)
    tensors[name] = tensors[name][:, :-1].contiguous()
    return weights_to_bytes(tensors, WeightsMetadata.from_agent(agent))


class Trainer:
    """Publishes weight blobs and commits them the way the trainer does."""

    def __init__(self, node, key: bytes) -> None:
        from rcl_interfaces.srv import SetParametersAtomically
        from std_msgs.msg import UInt8MultiArray

        from fowm_xarm import topics

        self.node, self.key = node, key
        self.pub = node.create_publisher(
            UInt8MultiArray, topics.WEIGHTS.name, topics.rclpy_qos(topics.WEIGHTS.qos)
        )
        self.client = node.create_client(SetParametersAtomically, f"{NODE}/set_parameters_atomically")

    def publish(self, blob: bytes) -> None:
        from std_msgs.msg import UInt8MultiArray

        msg = UInt8MultiArray()
        msg.data = blob
        self.pub.publish(msg)

    def commit(self, version: int, sha: str, signature: str, wait_for_blob: bool = True):
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParametersAtomically

        integer, string = ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_STRING
        params = [
            Parameter(name="model.version", value=ParameterValue(type=integer, integer_value=version)),
            Parameter(name="model.sha256", value=ParameterValue(type=string, string_value=sha)),
            Parameter(name="model.signature", value=ParameterValue(type=string, string_value=signature)),
        ]
        assert self.client.wait_for_service(timeout_sec=20)
        deadline = time.monotonic() + 30
        while True:
            future = self.client.call_async(SetParametersAtomically.Request(parameters=params))
            assert spin_until(self.node, future.done, 20)
            result = future.result().result
            # The blob travels on its own topic: retry while it is still in flight.
            if result.successful or not wait_for_blob or "no received weights blob" not in result.reason:
                return result
            assert time.monotonic() < deadline, result.reason
            spin_until(self.node, lambda: False, 0.2)

    def send(self, version: int, blob: bytes, key: bytes | None = None):
        from fowm_core.weights import sign_weights, weights_sha256

        self.publish(blob)
        return self.commit(version, weights_sha256(blob), sign_weights(blob, key or self.key, version))


def _get_parameters(node, names: list[str]) -> list:
    from rcl_interfaces.srv import GetParameters

    return _call(node, GetParameters, f"{NODE}/get_parameters", GetParameters.Request(names=names)).values


def test_preset_overrides_parameter_shapes_the_agent(ros_node, ros_processes, tmp_path):
    """`overrides` as a ROS string-array parameter: a planner given model.mlp_dim=128 starts from
    weights trained at that width and commands; one with an unknown key, or a task the preset does
    not list, exits at startup naming it."""
    from fowm_core.weights import save_weights
    from fowm_planner.model import build_agent

    overrides = ["model.mlp_dim=128", "planner.num_samples=32"]
    weights = tmp_path / "mlp128.safetensors"
    save_weights(weights, build_agent("realtime-cpu", KEYS, 84, overrides=overrides)[0])
    q = _q0()
    listener = Listener(ros_node, q)
    SyntheticSensors(ros_node, q)
    bad = _start_planner(ros_processes, "overrides:=[model.nope=1]", name="bad")
    misspelt = _start_planner(ros_processes, "task:=pussh", name="misspelt")
    _start_planner(
        ros_processes, f"control_period:={PERIOD}", "require_signature:=false",
        f"weights_file:={weights}", f"overrides:=[{','.join(overrides)}]",
    )  # fmt: skip
    _wait_motion(ros_node, listener, 0.0, ros_processes)
    assert f"overrides={overrides}" in ros_processes.log("planner")
    assert bad.wait(timeout=60) != 0
    assert "model.nope" in ros_processes.log("bad")
    assert misspelt.wait(timeout=60) != 0
    assert "no section for task 'pussh'" in ros_processes.log("misspelt")


def test_signed_weight_updates_and_estop(ros_node, ros_processes, tmp_path):
    import torch

    from fowm_core.agent import FOWMAgent
    from fowm_core.config import load_config
    from fowm_core.weights import (
        generate_key_file,
        load_key_file,
        save_weights,
        sign_weights,
        weights_sha256,
        weights_to_bytes,
    )
    from fowm_planner.model import build_agent, observation_spec

    key = load_key_file(generate_key_file(tmp_path / "key"))
    other_key = load_key_file(generate_key_file(tmp_path / "other_key"))
    agent = build_agent("realtime-cpu", KEYS, 84)[0]
    start_sha = save_weights(tmp_path / "start.safetensors", agent)
    g = torch.Generator().manual_seed(7)
    agent.load_weights(
        {k: v * (1 + torch.rand(v.shape, generator=g)) if v.is_floating_point() else v
         for k, v in agent.get_weights().items()}
    )  # fmt: skip
    new_blob = weights_to_bytes(agent)

    # Every blob is built before the nodes start: the test's sensor streams only flow while it spins.
    other_cfg = load_config("realtime-cpu", {"model": {"mlp_dim": 128}})
    bad_blobs = {
        "truncated": (new_blob[: len(new_blob) // 2], key, "truncated"),
        "nan": (_blob_with_nan(agent), key, "NaN"),
        "shapes": (_blob_with_wrong_shape(agent), key, "has shape"),
        "config": (
            weights_to_bytes(FOWMAgent(other_cfg, observation_spec(KEYS, 84), 4)),
            key,
            "config hash mismatch",
        ),
        "signature": (new_blob, other_key, "bad signature"),
    }
    later_blob = weights_to_bytes(build_agent("realtime-cpu", KEYS, 84)[0])

    q = _q0()
    listener = Listener(ros_node, q)
    SyntheticSensors(ros_node, q)
    trainer = Trainer(ros_node, key)
    _start_planner(
        ros_processes, f"control_period:={PERIOD}", f"key_file:={tmp_path / 'key'}",
        f"weights_file:={tmp_path / 'start.safetensors'}", "stale_periods:=5.0",
    )  # fmt: skip
    _wait_motion(ros_node, listener, 0.0, ros_processes)
    assert _get_parameters(ros_node, ["model.sha256"])[0].string_value == start_sha

    result = trainer.send(7, new_blob)
    assert result.successful, result.reason
    version, sha = _get_parameters(ros_node, ["model.version", "model.sha256"])
    assert (version.integer_value, sha.string_value) == (7, weights_sha256(new_blob))
    assert spin_until(ros_node, lambda: listener.diagnostics.get("model_version") == "7", 10), (
        listener.diagnostics
    )

    bad = {
        case: (lambda b=blob, k=k: trainer.send(8, b, k), phrase)
        for case, (blob, k, phrase) in bad_blobs.items()
    }
    bad["no blob"] = (
        lambda: trainer.commit(8, weights_sha256(b"never sent"), "0" * 64, wait_for_blob=False),
        "no received weights blob",
    )
    # Replays of the accepted update: its signature under a higher version (the version is signed),
    # and a correctly signed update that is not newer than the loaded one (no rollback).
    sig7 = sign_weights(new_blob, key, 7)
    replay = (lambda: trainer.commit(10, weights_sha256(new_blob), sig7), "signed as version 10")
    bad["replayed as newer"] = replay
    bad["rollback"] = (lambda: trainer.send(7, later_blob), "not newer than the loaded version 7")
    reasons = {}
    t_bad = time.monotonic()
    for case, (send, phrase) in bad.items():
        result = send()
        assert not result.successful, case
        assert phrase in result.reason, (case, result.reason)
        reasons[case] = result.reason
    assert len(set(reasons.values())) == len(bad), reasons
    # The node kept commanding, with the accepted weights.
    t_after = time.monotonic()
    assert spin_until(ros_node, lambda: listener.motions_after(t_after) > 3, 10)
    assert listener.motions_after(t_bad) > 5
    version, sha = _get_parameters(ros_node, ["model.version", "model.sha256"])
    assert (version.integer_value, sha.string_value) == (7, weights_sha256(new_blob))
    assert spin_until(ros_node, lambda: listener.diagnostics.get("weights_rejected") == "8", 10)

    # E-stop: holds through a weight update and stop/start, until cleared.
    assert "latched" in _trigger(ros_node, "estop")
    t_estop = time.monotonic()
    assert spin_until(ros_node, lambda: listener.holds_after(t_estop) >= 3, 10)
    t_held = max(c.t for c in listener.commands if c.held)
    assert trainer.send(9, later_blob).successful
    _trigger(ros_node, "stop")
    spin_until(ros_node, lambda: False, 0.5)
    assert "e-stop still latched" in _trigger(ros_node, "start")
    t_restart = time.monotonic()
    assert spin_until(ros_node, lambda: listener.holds_after(t_restart) >= 5, 10)
    assert listener.motions_after(t_held) == 0, "moved while the e-stop was latched"
    assert listener.diagnostics.get("estop") == "true"
    assert _trigger(ros_node, "clear_estop") == "e-stop cleared"
    _wait_motion(ros_node, listener, time.monotonic(), ros_processes, 20)
    assert spin_until(ros_node, lambda: listener.diagnostics.get("model_version") == "9", 10)

    # Without an e-stop, ~/stop commands nothing at all until ~/start; ~/reset starts an episode.
    _trigger(ros_node, "stop")
    spin_until(ros_node, lambda: False, 2 * PERIOD)  # a command already in flight may still land
    t_stopped = time.monotonic()
    spin_until(ros_node, lambda: False, 5 * PERIOD)
    assert not [c for c in listener.commands if c.t > t_stopped], "commanded while stopped"
    assert "commanding" in _trigger(ros_node, "start")
    assert "episode start" in _trigger(ros_node, "reset")
    _wait_motion(ros_node, listener, time.monotonic(), ros_processes, 20)


# -- same behaviour through ROS as in process --------------------------------------------------------

SEED = 3
EPISODES = 2


def _in_process_returns() -> tuple[list[float], list[float]]:
    """The node's decisions replayed in process on XArmTaskEnv: (the equivalent loop, with the gripper
    command rounded to float32 as std_msgs/Float32 carries it) and fowm_core.training.evaluate."""
    from fowm_core.training import evaluate
    from fowm_planner.model import build_agent
    from fowm_sim.env import XArmTaskEnv

    env = XArmTaskEnv("reach")
    try:
        agent = build_agent("realtime-cpu", KEYS, 84)[0]
        loop = []
        for seed in range(SEED, SEED + EPISODES):
            obs, _ = env.reset(seed=seed)
            total, first, done = 0.0, True, False
            while not done:
                action = agent.act(obs, first_step=first, explore=False)
                first = False
                cmd = env.action_mapper.command(action, env.joint_positions(), env.gripper_position())
                obs, reward, terminated, truncated, _ = env.step_joint_targets(
                    cmd.joint_targets, float(np.float32(cmd.gripper))
                )
                total += reward
                done = terminated or truncated
            loop.append(total)
        agent = build_agent("realtime-cpu", KEYS, 84)[0]
        evaluated = [evaluate(agent, env, 1, seeds=[s])["return"] for s in range(SEED, SEED + EPISODES)]
    finally:
        env.close()
    return loop, evaluated


def test_lockstep_node_returns_equal_in_process_evaluate(ros_node, ros_processes):
    """Seeded random-init weights (the point is equality, not skill): the planner node driving the
    lockstep sim node gets the same episode returns as the same agent in process."""
    loop, evaluated = _in_process_returns()  # first: the test only hears events while it spins
    listener = Listener(ros_node, _q0())
    sim = [sys.executable, "-m", "fowm_sim.sim_node", "--ros-args", "-p", "task:=reach"]
    ros_processes.start([*sim, "-p", f"seed:={SEED}", "-p", "clock_mode:=lockstep"], "sim")
    _start_planner(ros_processes, "clock_mode:=lockstep", "use_sim_time:=true", "require_signature:=false")
    ok = spin_until(ros_node, lambda: len(listener.episode_ends) >= EPISODES, 150)
    ros_processes.assert_running("planner")
    ros_processes.assert_running("sim")
    assert ok, f"episodes ended: {listener.episode_ends}; diagnostics {listener.diagnostics}"
    ends = listener.episode_ends[:EPISODES]
    assert [e["seed"] for e in ends] == list(range(SEED, SEED + EPISODES))
    assert all(e["steps"] == 25 for e in ends)
    ros_returns = [e["episode_return"] for e in ends]
    # Same torch thread count (1), same weights and observations: the same float64 sums.
    np.testing.assert_allclose(ros_returns, loop, rtol=0, atol=1e-6)
    # evaluate keeps rewards as float32, hence the looser tolerance.
    np.testing.assert_allclose(ros_returns, evaluated, rtol=0, atol=1e-4)
