"""The realtime planner node: camera + joint states in, safe xArm joint commands out.

Each decision: the latest image and joint state -> fowm_xarm's observation path -> one plan with
the FOWM agent (or, past the deadline, the policy network's action) -> fowm_xarm's ActionMapper and
safety layer -> JointTrajectory + gripper command + the executed action (naming its observation's
stamp). Around it: the input watchdog, services (start/stop/reset/estop/clear_estop), authenticated
weight hot-swap (blob on /fowm/weights, commit through the parameter service) and diagnostics.

Clock modes:
- realtime: a steady-clock timer every control period.
- lockstep (use_sim_time, against the sim node in lockstep): one decision per new observation stamp
  (image and joint state with the same header stamp), after `lockstep_settle` wall seconds so that
  episode events published with it are seen first. After an episode's "end" it waits for "start"
  and never acts on the terminal observation.

Everything runs on one SingleThreadedExecutor thread (this rclpy's multi-threaded executor collapses
under load), so a weight swap or a service call always lands between two decisions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float32MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from fowm_core.weights import load_key_file
from fowm_planner.background import BackgroundPlanner
from fowm_planner.config import PlannerNodeConfig
from fowm_planner.decision import HOLD, Decision, DecisionMaker
from fowm_planner.inputs import Observed, joint_measurement, observe, stamp_ns
from fowm_planner.model import build_agent, plan_info, value_estimate, warmup
from fowm_planner.timing import DeadlineMonitor, PeriodJitter, RollingStats
from fowm_planner.watchdog import InputWatchdog
from fowm_planner.weight_commit import COMMIT_PARAMETERS, SHA256, SIGNATURE, VERSION, WeightCommitter
from fowm_xarm import topics
from fowm_xarm.kinematics import HOME_Q
from fowm_xarm.observation import RGB_KEY, make_observation
from fowm_xarm.ros_node import declare_config, spin_node
from fowm_xarm.topics import EpisodeEvent

NODE_NAME = "fowm_planner"
DIAGNOSTICS_TOPIC = "/diagnostics"
GRIPPER_LEAD_S = 0.01  # lockstep: the gripper command's head start over the trajectory


@dataclass
class _InFlight:
    """The tick a background plan was started for."""

    observed: Observed
    published: bool = False  # a command for this tick went out (the deadline's fallback)


class PlannerNode(Node):
    """See the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__(NODE_NAME, **overrides)
        self.config = cfg = declare_config(self, PlannerNodeConfig)
        log = self.get_logger()

        # -- model and weights -------------------------------------------------------------------
        self.agent, meta, sha = build_agent(
            cfg.preset, cfg.observation_keys, cfg.image_size, cfg.weights_file, cfg.device, cfg.torch_threads,
            cfg.overrides, cfg.task,
        )
        key = None
        if cfg.require_signature:
            if not cfg.key_file:
                raise ValueError("require_signature is true but key_file is empty (make one: fowm-keygen)")
            key = load_key_file(cfg.key_file)
        else:
            log.warning("require_signature is false: ANY weights published on the weights topic are accepted")
        self.committer = WeightCommitter(self.agent, key)
        self.declare_parameter(VERSION, 0, ParameterDescriptor(description="version of the loaded weights"))
        self.declare_parameter(SHA256, sha, ParameterDescriptor(description="sha256 of the loaded weights"))
        self.declare_parameter(
            SIGNATURE, "", ParameterDescriptor(description="HMAC-SHA256 (hex) of the committed weights blob")
        )

        # -- observation and action path -----------------------------------------------------------
        self.mapper = cfg.action_mapper()
        self.kinematics = self.mapper.kinematics
        self.obs_config = cfg.observation_config()
        # Realtime with a budget plans on a worker thread against a real deadline (plan_in_thread);
        # otherwise in the callback, where the monitor replaces late plans and skips predicted ones.
        threaded = cfg.deadline_enabled and cfg.plan_in_thread
        self.deadline = DeadlineMonitor(cfg.plan_budget if cfg.deadline_enabled and not threaded else 0.0)
        self.decider = DecisionMaker(
            self.agent, self.mapper, self.deadline, cfg.deadline_fallback, act=self._act_function()
        )
        self._background = BackgroundPlanner(self.decider.act) if threaded else None
        self._inflight: _InFlight | None = None  # the background plan's tick
        self._late = 0  # background plans that missed the deadline (or were not started: busy)
        self.watchdog = InputWatchdog(cfg.stale_periods * cfg.control_period, cfg.log_throttle)
        self.plan_latency = RollingStats()
        self.jitter = PeriodJitter(cfg.control_period)
        self._period_ns = round(cfg.control_period * 1e9)
        self._lockstep = cfg.clock_mode == "lockstep"

        # -- state ---------------------------------------------------------------------------------
        self._image: Image | None = None
        self._joint_state: JointState | None = None
        self._last_q: np.ndarray | None = None  # last valid measurement: what a hold holds
        self._last_gripper = 1.0
        self._running = cfg.autostart
        self._estop = False
        self._first_step = True
        self._last_decided_stamp = -1  # lockstep: stamp of the last observation acted on
        self._last_acted_stamp = -1  # any mode: stamp of the last observation a plan started from
        self._awaiting_start = False  # lockstep: an episode ended; wait for the next "start"
        self._skip_through = -1  # lockstep: never act on observations stamped at or before this
        self._last_decision: Decision | None = None
        self._last_observed: Observed | None = None
        self._pending: bytes | None = None  # lockstep: the trajectory, sent after the gripper lead
        self.decisions = {"plan": 0, "policy": 0, "hold": 0}

        t0 = time.perf_counter()
        warm = warmup(self.agent, self._dummy_observation())
        log.info(
            f"agent ready: preset={cfg.preset}"
            + (f" task={cfg.task}" if cfg.task else "")
            + (f" overrides={cfg.overrides}" if cfg.overrides else "")
            + f" obs={cfg.observations} device={self.agent.device} "
            f"weights={cfg.weights_file or 'seeded random init'}"
            + (f" ({meta.num_updates} updates)" if meta else "")
            + f", warmup {warm:.2f} s of {time.perf_counter() - t0:.2f} s"
        )

        # -- ROS interfaces --------------------------------------------------------------------------
        def qos(spec: topics.TopicSpec) -> Any:
            return topics.rclpy_qos(spec.qos)

        # Episode events first: when an event and an observation are ready in the same wait, the
        # single-threaded executor runs subscriptions in creation order, so the event lands first.
        # A deeper queue than the latched topic's depth 1: an "end" and the "start" right after it
        # must both reach us.
        episode_qos = qos(topics.EPISODE)
        episode_qos.depth = 10
        self.create_subscription(String, topics.EPISODE.name, self._on_episode, episode_qos)
        self.create_subscription(UInt8MultiArray, topics.WEIGHTS.name, self._on_weights, qos(topics.WEIGHTS))
        self.create_subscription(
            JointState, topics.JOINT_STATES.name, self._on_joint_state, qos(topics.JOINT_STATES)
        )
        self.create_subscription(Image, topics.IMAGE.name, self._on_image, qos(topics.IMAGE))
        self._gripper_pub = self.create_publisher(
            Float32, topics.GRIPPER_COMMAND.name, qos(topics.GRIPPER_COMMAND)
        )
        self._traj_pub = self.create_publisher(
            JointTrajectory, topics.JOINT_TRAJECTORY.name, qos(topics.JOINT_TRAJECTORY)
        )
        self._action_pub = self.create_publisher(Float32MultiArray, topics.ACTION.name, qos(topics.ACTION))
        self._diag_pub = self.create_publisher(
            DiagnosticArray, DIAGNOSTICS_TOPIC, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        for name, handler in (
            ("start", self._on_start),
            ("stop", self._on_stop),
            ("reset", self._on_reset),
            ("estop", self._on_estop),
            ("clear_estop", self._on_clear_estop),
        ):
            self.create_service(Trigger, f"~/{name}", handler)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self._lockstep:
            self._settle_timer = self.create_timer(
                max(cfg.lockstep_settle, 1e-3), self._on_settled, clock=steady, autostart=False
            )
            self._decide_guard = self.create_guard_condition(self._on_decide)
            self._lead_timer = self.create_timer(
                GRIPPER_LEAD_S, self._send_pending, clock=steady, autostart=False
            )
        else:
            self.create_timer(cfg.control_period, self._on_tick, clock=steady)
        if self._background is not None:
            self._plan_done_guard = self.create_guard_condition(self._on_plan_done)
            self._deadline_timer = self.create_timer(
                cfg.plan_budget, self._on_deadline, clock=steady, autostart=False
            )
        self.create_timer(cfg.diagnostics_period, self._publish_diagnostics, clock=steady)
        log.info(
            f"planner up: clock_mode={cfg.clock_mode} period={cfg.control_period}s "
            f"budget={cfg.plan_budget if cfg.deadline_enabled else 'none'} running={self._running}"
        )

    def _act_function(self) -> Any:
        """act(obs, first_step) -> (4,) action: the plan (with exploration noise if configured), the
        policy prior alone (policy=prior: shows whether planning helps or spoils it) or, with
        policy=random, uniform actions (seeded like the agent) for a baseline; all go through the same
        observation, command and safety path."""
        if self.config.policy == "prior":
            return lambda obs, first: self.agent.act_prior(obs)
        if self.config.policy == "random":
            rng = np.random.default_rng(self.agent.cfg.seed)
            return lambda obs, first: rng.uniform(-1.0, 1.0, self.agent.action_dim).astype(np.float32)
        explore = self.config.explore
        return lambda obs, first: self.agent.act(obs, first_step=first, explore=explore)

    # -- inputs ------------------------------------------------------------------------------------

    def _dummy_observation(self) -> dict[str, np.ndarray]:
        frame = np.zeros((*self.config.min_frame_hw(), 3), np.uint8)
        full = make_observation(frame, HOME_Q, 1.0, self.kinematics, self.obs_config)
        return {k: full[k] for k in self.config.observation_keys}

    def _on_image(self, msg: Image) -> None:
        self._image = msg
        if self._lockstep:
            self._schedule_lockstep()

    def _on_joint_state(self, msg: JointState) -> None:
        self._joint_state = msg
        if self._lockstep:
            self._schedule_lockstep()

    def _on_episode(self, msg: String) -> None:
        try:
            event = EpisodeEvent.from_json(msg.data)
        except ValueError as e:
            self.get_logger().warning(f"ignored malformed episode event: {e}")
            return
        if event.event == "start":
            stamp = event.first_obs_stamp_ns
            if stamp is not None and self._last_acted_stamp >= stamp:
                # A late (latched) start event for an episode we already act in: its first step is
                # behind us, and flagging the next one as first would throw the warm start away.
                self.get_logger().info(f"episode {event.episode}: start heard late, warm start kept")
            else:
                self._first_step = True
            self._awaiting_start = False
            if self._lockstep:
                self._schedule_lockstep()
        else:
            if self.config.pause_after_episode:
                self._running = False  # until ~/start: weights may be swapped between episodes
            if not self._lockstep:
                return
            # The terminal observation is stamped one period after the last command we sent.
            self._awaiting_start = True
            self._skip_through = max(self._skip_through, self._last_decided_stamp + self._period_ns)

    def _on_weights(self, msg: UInt8MultiArray) -> None:
        digest = self.committer.receive(bytes(msg.data))
        self.get_logger().info(f"received weights blob sha256={digest[:16]}... ({len(msg.data)} bytes)")

    # -- control -----------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        self.jitter.tick(time.monotonic())
        self._control_step()

    def _schedule_lockstep(self) -> None:
        if self._ready_lockstep_stamp() is not None:
            self._settle_timer.reset()

    def _ready_lockstep_stamp(self) -> int | None:
        """The stamp of a complete, new, actionable observation in lockstep, or None."""
        if self._joint_state is None or self._awaiting_start or not (self._running or self._estop):
            return None
        stamp = stamp_ns(self._joint_state)
        needs_image = RGB_KEY in self.config.observation_keys
        if needs_image and (self._image is None or stamp_ns(self._image) != stamp):
            return None
        if stamp <= self._last_decided_stamp or stamp <= self._skip_through:
            return None
        return stamp

    def _on_settled(self) -> None:
        self._settle_timer.cancel()
        # The executor runs ready timers before ready subscriptions, and guard conditions after
        # both: deciding from a guard lets an episode event that is already here land first.
        self._decide_guard.trigger()

    def _on_decide(self) -> None:
        stamp = self._ready_lockstep_stamp()
        if stamp is not None:
            self._last_decided_stamp = stamp
            self._control_step()

    def _control_step(self) -> None:
        """One decision from the latest inputs (or a hold) and its publication."""
        now_ns = self.get_clock().now().nanoseconds
        observed, error = None, None
        if self._joint_state is not None:
            try:
                self._last_q, self._last_gripper = joint_measurement(self._joint_state)
                if self._image is not None or RGB_KEY not in self.config.observation_keys:
                    observed = observe(
                        self._image, self._joint_state, self.config.observation_keys,
                        self.kinematics, self.obs_config,
                    )  # fmt: skip
            except ValueError as e:
                error = str(e)
        stamps = {"joint states": None if self._joint_state is None else stamp_ns(self._joint_state)}
        if RGB_KEY in self.config.observation_keys:
            stamps = {"camera image": None if self._image is None else stamp_ns(self._image), **stamps}
        state = self.watchdog.check(now_ns, stamps, error)

        if self._estop:
            self._hold("e-stop latched (call ~/clear_estop)", now_ns)
            return
        if not self._running:
            return
        if not state.ok:
            if self.watchdog.should_log(now_ns):
                self.get_logger().warning(f"watchdog: holding: {state.reason}")
            self._hold(f"watchdog: {state.reason}", now_ns)
            self._first_step = True  # the warm start is stale after a gap
            return
        assert observed is not None
        self._last_observed = observed
        if self._background is not None:
            self._start_background_plan(observed)
            return
        decision = self.decider.decide(observed, first_step=self._first_step)
        self._first_step, self._last_acted_stamp = False, observed.stamp_ns
        if decision.plan_latency_s is not None:
            self.plan_latency.add(decision.plan_latency_s)
        self._publish(decision, observed.stamp_ns)

    # -- background planning (realtime with a deadline) --------------------------------------------

    def _start_background_plan(self, observed: Observed) -> None:
        if self._background.finished:
            self._on_plan_done()  # finished just before this tick: publish or account for it first
        if self._background.busy:
            # The last plan still runs past its deadline: no new plan, the fallback right away.
            self._late += 1
            self._publish(self.decider.fallback_decision(observed), observed.stamp_ns)
            return
        first, self._first_step = self._first_step, False
        self._last_acted_stamp = observed.stamp_ns
        self._inflight = _InFlight(observed)
        self._background.start(observed.obs, first, self._plan_done_guard.trigger)
        self._deadline_timer.reset()

    def _on_plan_done(self) -> None:
        try:
            result = self._background.take()
        except Exception as e:  # a broken model must not take the node down: hold
            self.get_logger().error(f"plan failed ({type(e).__name__}: {e}): holding")
            job, self._inflight = self._inflight, None
            if job is not None and not job.published:
                self._deadline_timer.cancel()
                hold = self.decider.hold(job.observed.q, job.observed.gripper, f"plan failed: {e}")
                self._publish(hold, None)
            return
        if result is None:
            return
        action, latency = result
        self.plan_latency.add(latency)
        job, self._inflight = self._inflight, None
        if job is None or job.published:
            return  # the deadline passed first: its fallback went out
        self._deadline_timer.cancel()
        if self._estop or not self._running:
            return  # an e-stop or a stop came in while it planned: the tick holds or stays quiet
        if latency > self.config.plan_budget:  # the deadline timer itself was late
            self._late += 1
            decision = self.decider.fallback_decision(job.observed, latency)
        else:
            decision = self.decider.plan_decision(job.observed, action, latency)
        self._publish(decision, job.observed.stamp_ns)

    def _on_deadline(self) -> None:
        self._deadline_timer.cancel()
        job = self._inflight
        if job is None or job.published:
            return
        job.published = True
        self._late += 1
        if not self._estop and self._running:
            self._publish(self.decider.fallback_decision(job.observed), job.observed.stamp_ns)

    def _hold(self, reason: str, now_ns: int) -> None:
        if self._last_q is None:
            return  # nothing measured yet: there is no position to hold, so command nothing
        self._publish(self.decider.hold(self._last_q, self._last_gripper, reason), None)

    def _publish(self, decision: Decision, obs_stamp_ns: int | None) -> None:
        cmd = decision.command
        self.decisions[decision.source] += 1
        self._last_decision = decision
        # The action record goes out first, before anything that moves the robot: a reward can only
        # follow the commands, so a recorder receives every action before the reward it earned (the
        # episode assembler pairs them in receive order; the other way round under load it lost
        # steps: "an action has no reward").
        if decision.action is not None and not cmd.held and obs_stamp_ns is not None:
            self._action_pub.publish(topics.action_msg(decision.action, obs_stamp_ns=obs_stamp_ns))
        self._gripper_pub.publish(topics.float32_msg(cmd.gripper))
        self._pending = topics.joint_trajectory_msg(0, cmd.joint_targets, self.config.control_period)
        if self._lockstep:
            # The lockstep sim applies a gripper command to the trajectory after it, and the two
            # travel on different topics: give the gripper command a head start. (Waiting for its
            # acknowledgement costs up to a DDS heartbeat period, ~0.5 s.)
            self._lead_timer.reset()
        else:
            self._send_pending()

    def _send_pending(self) -> None:
        if self._lockstep:
            self._lead_timer.cancel()
        if self._pending is not None:
            trajectory, self._pending = self._pending, None
            self._traj_pub.publish(trajectory)

    # -- services ----------------------------------------------------------------------------------

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._running, self._first_step = True, True
        self.jitter.restart()
        if self._lockstep:
            self._schedule_lockstep()
        latched = " (e-stop still latched: holding)" if self._estop else ""
        return self._answer(response, "commanding" + latched)

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._running = False
        latched = " (e-stop still latched)" if self._estop else ""
        return self._answer(response, "stopped: no commands until ~/start" + latched)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._first_step = True
        return self._answer(response, "episode start: the next plan starts afresh")

    def _on_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._estop = True
        self.get_logger().error("E-STOP latched: holding position until ~/clear_estop")
        if self._lockstep:
            self._schedule_lockstep()
        return self._answer(response, "e-stop latched: holding position until ~/clear_estop")

    def _on_clear_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was = self._estop
        self._estop, self._first_step = False, True
        self.get_logger().warning("e-stop cleared")
        return self._answer(response, "e-stop cleared" if was else "no e-stop was latched")

    def _answer(self, response: Trigger.Response, message: str) -> Trigger.Response:
        response.success, response.message = True, message
        return response

    # -- weights -----------------------------------------------------------------------------------

    def _on_set_parameters(self, params: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        names = {p.name: p for p in params}
        others = sorted(set(names) - set(COMMIT_PARAMETERS))
        if others:
            return SetParametersResult(successful=False, reason=f"parameters {others} are read at startup")
        if set(names) != set(COMMIT_PARAMETERS):
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(COMMIT_PARAMETERS)} must be set together in one atomic call",
            )
        if self._background is not None:
            self._background.wait()  # never swap during a plan
        result = self.committer.commit(
            int(names[VERSION].value), str(names[SHA256].value), str(names[SIGNATURE].value)
        )
        if not result.accepted:
            self.get_logger().warning(f"weight update refused: {result.reason}")
            return SetParametersResult(successful=False, reason=result.reason)
        # Loaded on the executor thread between two decisions; recompiles nothing for equal shapes.
        if self._last_observed is not None:
            warmup(self.agent, self._last_observed.obs)
        self.get_logger().info(f"weights swapped: {result.reason}, sha256={names[SHA256].value[:16]}...")
        return SetParametersResult(successful=True, reason=result.reason)

    # -- diagnostics -------------------------------------------------------------------------------

    def diagnostic_values(self) -> dict[str, str]:
        info = plan_info(self.agent)
        last, observed = self._last_decision, self._last_observed
        acted = observed is not None and last is not None and last.action is not None
        if "predicted_return" not in info and acted:
            info = value_estimate(self.agent, observed.obs, last.action)
        return {
            "model_version": str(self.get_parameter(VERSION).value),
            "model_sha256": str(self.get_parameter(SHA256).value),
            "plan_latency_p50_ms": f"{self.plan_latency.percentile_ms(50):.2f}",
            "plan_latency_p99_ms": f"{self.plan_latency.percentile_ms(99):.2f}",
            "period_jitter_p50_ms": f"{self.jitter.stats.percentile_ms(50):.2f}",
            "period_jitter_p99_ms": f"{self.jitter.stats.percentile_ms(99):.2f}",
            "deadline_misses": str(self.deadline.misses + self._late),
            "predicted_return": f"{info.get('predicted_return', float('nan')):.4f}",
            "uncertainty": f"{info.get('uncertainty', float('nan')):.4f}",
            "watchdog": self.watchdog.state.reason,
            "watchdog_trips": str(self.watchdog.trips),
            "estop": str(self._estop).lower(),
            "running": str(self._running).lower(),
            "clock_mode": self.config.clock_mode,
            "decisions_plan": str(self.decisions["plan"]),
            "decisions_policy": str(self.decisions["policy"]),
            "decisions_hold": str(self.decisions[HOLD]),
            "weights_accepted": str(self.committer.accepted),
            "weights_rejected": str(self.committer.rejected),
            "last_weights_rejection": self.committer.last_rejection,
        }

    def destroy_node(self) -> None:
        if self._background is not None:
            self._background.shutdown()
        super().destroy_node()

    def _publish_diagnostics(self) -> None:
        values = self.diagnostic_values()
        status = DiagnosticStatus(name=NODE_NAME, hardware_id="fowm")
        if self._estop:
            status.level, status.message = DiagnosticStatus.ERROR, "e-stop latched"
        elif not self.watchdog.state.ok:
            status.level, status.message = DiagnosticStatus.WARN, f"holding: {self.watchdog.state.reason}"
        elif not self._running:
            status.level, status.message = DiagnosticStatus.WARN, "stopped"
        else:
            status.level, status.message = DiagnosticStatus.OK, "commanding"
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    spin_node(PlannerNode, args)


if __name__ == "__main__":
    main()
