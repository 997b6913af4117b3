"""The xArm7 driver node: xarm-python-sdk behind the robot's topic contract (fowm_xarm.topics).

- Connects to `robot_ip`, enables the motors and puts the arm in servo mode (mode 1, state 0).
- Every tick (`rate_hz`, default 150 Hz) reads the joints (`get_joint_states`) and publishes
  /joint_states: joint1..7 (rad, rad/s) and `gripper` (opening in [0, 1], read at `gripper_poll_hz`).
- A JointTrajectory (last point = target) is validated by `topics.trajectory_targets` and passed
  through the planner's safety layer (`ActionMapper.enforce` with `SafetyLimits` from parameters):
  clipped to the joint limits, at most `max_joint_step_rad` from the measured position, refused
  (held) if its TCP leaves the workspace. The driver then streams `set_servo_angle_j` setpoints
  that ramp to the target within `ramp_time_s` at no more than `max_joint_speed_rad_s` (servo mode
  executes each setpoint at once, so it must never receive a jump) — the sim ramps the same way.
- /xarm_gripper/command (opening in [0, 1]) -> `set_gripper_position` in pulses.
- A controller error or warning code (from the SDK's report callback or its properties) stops the
  arm (`set_state(4)`), drops the target and latches a fault that /diagnostics reports with the SDK's
  description, until `~/clear_fault` (std_srvs/Trigger) clears it and re-enables servo mode.
- Watchdog: no command for `stale_periods` command periods -> stop streaming (hold where it is).
- A lost link stops publishing joint states (stale ones would mislead the planner) and reconnects
  with exponential backoff (`reconnect_initial_s` doubling up to `reconnect_max_s`).

`sdk_backend:=recorded` swaps the SDK's XArmAPI for `xarm_sdk.RecordedXArm`, which logs every call
to `recorded_log`; the tests run the node that way (no robot exists here).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from fowm_xarm import topics
from fowm_xarm.command import ActionMapper, SafetyLimits
from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.limits import JOINT_LOWER, JOINT_UPPER, JOINT_VELOCITY_LIMIT, WorkspaceLimits
from fowm_xarm.ros_node import declare_config, param, spin_node
from fowm_xarm.xarm_sdk import (
    SDK_BACKENDS,
    SERVO_MODE,
    STATE_READY,
    STATE_STOP,
    controller_code_title,
    make_arm,
)

NODE_NAME = "xarm_driver"
DIAGNOSTICS_TOPIC = "/diagnostics"



@dataclass
class XArmDriverConfig:
    """Parameters of the xArm driver; each field is declared as a ROS parameter with its doc."""

    robot_ip: str = param("192.168.1.185", "IP address of the xArm control box")
    sdk_backend: str = param("sdk", "sdk (xarm.wrapper.XArmAPI) or recorded (a logging fake arm, no robot)")
    recorded_log: str = param("", "recorded backend: JSON-lines file every SDK call is appended to")
    rate_hz: float = param(150.0, "joint state publishing and servo setpoint rate (Hz)")
    command_period_s: float = param(0.16, "expected period of JointTrajectory commands (the planner's)")
    stale_periods: int = param(3, "hold (stop streaming) when no command came for this many periods")
    ramp_time_s: float = param(0.12, "time over which the setpoints ramp to a new target (s)")
    max_joint_speed_rad_s: float = param(3.14, "fastest setpoint change of any joint (rad/s)")
    gripper_open_pulse: float = param(850.0, "xArm gripper position (pulses) of a fully open gripper")
    gripper_speed: float = param(3000.0, "xArm gripper speed (r/min)")
    gripper_poll_hz: float = param(10.0, "how often the gripper position is read (Hz)")
    reconnect_initial_s: float = param(0.5, "first wait before reconnecting after a lost link (s)")
    reconnect_max_s: float = param(10.0, "longest wait between reconnection attempts (s)")
    max_joint_step_rad: float = param(0.3, "SafetyLimits: largest target change from the measured joints")
    joint_margin_rad: float = param(0.0, "SafetyLimits: targets stay this far inside the joint limits")
    workspace_tol_m: float = param(0.01, "SafetyLimits: slack on the TCP workspace box (m)")
    gripper_min: float = param(0.0, "SafetyLimits: smallest gripper opening command")
    gripper_max: float = param(1.0, "SafetyLimits: largest gripper opening command")
    workspace_x_min: float = param(0.25, "TCP workspace box, robot base frame (m)")
    workspace_x_max: float = param(0.65, "TCP workspace box (m)")
    workspace_y_min: float = param(-0.30, "TCP workspace box (m)")
    workspace_y_max: float = param(0.30, "TCP workspace box (m)")
    workspace_z_min: float = param(0.015, "TCP workspace box (m)")
    workspace_z_max: float = param(0.45, "TCP workspace box (m)")

    def __post_init__(self) -> None:
        if self.sdk_backend not in SDK_BACKENDS:
            raise ValueError(f"sdk_backend must be one of {SDK_BACKENDS}, got {self.sdk_backend!r}")
        if self.sdk_backend == "recorded" and not self.recorded_log:
            raise ValueError("sdk_backend 'recorded' needs recorded_log (the call log path)")
        if not 1.0 <= self.rate_hz <= 1000.0:
            raise ValueError(f"rate_hz must be in [1, 1000], got {self.rate_hz}")
        if self.command_period_s <= 0 or self.stale_periods < 1:
            raise ValueError("command_period_s must be > 0 and stale_periods >= 1")
        if self.ramp_time_s < 0 or not 0 < self.max_joint_speed_rad_s <= float(np.max(JOINT_VELOCITY_LIMIT)):
            raise ValueError(
                f"ramp_time_s must be >= 0 and max_joint_speed_rad_s in (0, {np.max(JOINT_VELOCITY_LIMIT)}]"
            )
        if self.gripper_open_pulse <= 0 or self.gripper_speed <= 0 or self.gripper_poll_hz <= 0:
            raise ValueError("gripper_open_pulse, gripper_speed and gripper_poll_hz must be > 0")
        if not 0 < self.reconnect_initial_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_initial_s <= reconnect_max_s")
        self.safety_limits()  # SafetyLimits / WorkspaceLimits validate their own fields

    def safety_limits(self) -> SafetyLimits:
        """The safety layer's limits (the same dataclass the planner uses)."""
        box = WorkspaceLimits(
            **{f"{a}_{e}": getattr(self, f"workspace_{a}_{e}") for a in "xyz" for e in ("min", "max")}
        )
        return SafetyLimits(
            max_joint_step_rad=self.max_joint_step_rad,
            joint_margin_rad=self.joint_margin_rad,
            workspace=box,
            workspace_tol_m=self.workspace_tol_m,
            gripper_min=self.gripper_min,
            gripper_max=self.gripper_max,
        )


class XArmDriverNode(Node):
    """xArm7 over xarm-python-sdk with the fowm topic contract; see the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__(NODE_NAME, **overrides)
        self.config = declare_config(self, XArmDriverConfig)
        cfg = self.config
        limits = cfg.safety_limits()
        self.mapper = ActionMapper(XArm7Kinematics(workspace=limits.workspace), limits=limits)
        self._dt = 1.0 / cfg.rate_hz

        self._joint_pub = self.create_publisher(
            JointState, topics.JOINT_STATES.name, topics.rclpy_qos(topics.JOINT_STATES.qos)
        )
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self.create_subscription(
            Float32,
            topics.GRIPPER_COMMAND.name,
            self._on_gripper,
            topics.rclpy_qos(topics.GRIPPER_COMMAND.qos),
        )
        self.create_subscription(
            JointTrajectory,
            topics.JOINT_TRAJECTORY.name,
            self._on_trajectory,
            topics.rclpy_qos(topics.JOINT_TRAJECTORY.qos),
        )
        self.create_service(Trigger, "~/clear_fault", self._on_clear_fault)

        # Written by the SDK's report thread (error/warn callback), read by the timer.
        self._reported_lock = threading.Lock()
        self._reported_codes = (0, 0)

        self._arm = make_arm(cfg.sdk_backend, cfg.robot_ip, cfg.recorded_log)
        self._connected = False
        self._fault = ""  # non-empty: stopped until ~/clear_fault
        self._fault_codes = (0, 0)
        self._backoff_s = cfg.reconnect_initial_s
        self._next_connect = 0.0
        self._reconnects = 0
        self._read_failures = 0
        self._q: np.ndarray | None = None  # last measured joints (7,)
        self._gripper = 1.0  # last measured opening
        self._next_gripper_read = 0.0
        self._setpoint: np.ndarray | None = None  # last sent servo setpoint (7,)
        self._target: np.ndarray | None = None  # where the setpoints ramp to; None = idle
        self._step: np.ndarray = np.zeros(7)  # per-tick setpoint change while ramping
        self._gripper_sent: float | None = None
        self._last_command = -np.inf
        self._watchdog = "idle"
        self._counts = {"commands": 0, "rejected": 0, "held": 0, "servo_failures": 0}
        self._last_note = ""
        self._publish_times: deque[float] = deque(maxlen=int(cfg.rate_hz * 2))

        self._connect()
        self.create_timer(self._dt, self._on_tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"xArm driver up: robot_ip={cfg.robot_ip} backend={cfg.sdk_backend} rate={cfg.rate_hz} Hz"
        )

    # -- connection -------------------------------------------------------------------------------

    def _connect(self) -> None:
        """One connection attempt, then motors on, servo mode, ready state, gripper set up."""
        arm = self._arm
        try:
            arm.connect()
        except Exception as exc:  # the SDK raises bare Exceptions for refused/unreachable links
            self._connect_failed(f"cannot connect to the xArm at {self.config.robot_ip}: {exc}")
            return
        if not arm.connected:
            self._connect_failed(f"cannot connect to the xArm at {self.config.robot_ip}")
            return
        arm.register_error_warn_changed_callback(self._on_error_warn_report)
        codes = [arm.motion_enable(enable=True), arm.set_mode(SERVO_MODE), arm.set_state(STATE_READY)]
        if any(codes):
            self.get_logger().error(f"enabling servo mode returned SDK codes {codes}")
        arm.set_gripper_mode(0)
        arm.set_gripper_enable(True)
        arm.set_gripper_speed(self.config.gripper_speed)
        self._connected = True
        self._backoff_s = self.config.reconnect_initial_s
        self._setpoint = self._target = None  # re-seeded from the first measurement: no jump
        self._gripper_sent = None
        self._next_gripper_read = 0.0
        self.get_logger().info(f"connected to the xArm at {self.config.robot_ip}, servo mode on")

    def _connect_failed(self, reason: str) -> None:
        self.get_logger().error(f"{reason}; retrying in {self._backoff_s:.1f} s")
        self._next_connect = time.monotonic() + self._backoff_s
        self._backoff_s = min(2.0 * self._backoff_s, self.config.reconnect_max_s)

    def _link_lost(self, reason: str) -> None:
        self.get_logger().error(f"lost the xArm link: {reason}")
        self._connected = False
        self._read_failures = 0
        self._reconnects += 1
        self._target = None
        self._q = None  # joint states stop until the link is back
        self._next_connect = time.monotonic() + self._backoff_s
        self._publish_diagnostics()

    # -- the control tick -------------------------------------------------------------------------

    def _on_tick(self) -> None:
        now = time.monotonic()
        if not self._connected:
            if now >= self._next_connect:
                self._connect()
            return
        code, states = self._arm.get_joint_states(is_radian=True)
        if code != 0 or not self._arm.connected:
            self._read_failures += 1
            # A dropped socket shows at once; a link that only answers with errors for a whole
            # second counts as lost too.
            if not self._arm.connected or self._read_failures >= self.config.rate_hz:
                self._link_lost(f"get_joint_states returned SDK code {code}")
            return
        self._read_failures = 0
        q = np.asarray(states[0][:7], dtype=np.float64)
        qd = np.asarray(states[1][:7], dtype=np.float64)
        if now >= self._next_gripper_read:
            self._next_gripper_read = now + 1.0 / self.config.gripper_poll_hz
            gcode, pulse = self._arm.get_gripper_position()
            if gcode == 0 and pulse is not None:
                self._gripper = float(np.clip(float(pulse) / self.config.gripper_open_pulse, 0.0, 1.0))
        self._q = q
        if self._setpoint is None:
            self._setpoint = q.copy()
        self._joint_pub.publish(
            topics.joint_state_msg(self.get_clock().now().nanoseconds, q, qd, self._gripper)
        )
        self._publish_times.append(now)
        self._check_controller_codes()
        self._stream(now)

    def _stream(self, now: float) -> None:
        """Advance the servo setpoint one tick towards the target (or hold)."""
        if self._fault or self._target is None or self._setpoint is None:
            return
        if now - self._last_command > self.config.stale_periods * self.config.command_period_s:
            self._target = None  # hold at the last setpoint: servo mode keeps the arm there
            self._watchdog = "stale"
            self.get_logger().warning(
                f"no joint command for {self.config.stale_periods} periods: holding position"
            )
            return
        remaining = self._target - self._setpoint
        if not np.any(remaining):
            return
        self._setpoint = self._setpoint + np.clip(remaining, -self._step, self._step)
        code = self._arm.set_servo_angle_j(self._setpoint.tolist(), is_radian=True)
        if code != 0:
            self._counts["servo_failures"] += 1
            self.get_logger().error(f"set_servo_angle_j returned SDK code {code}")
            self._check_controller_codes()

    # -- controller errors and warnings -----------------------------------------------------------

    def _on_error_warn_report(self, data: dict) -> None:
        # Called on the SDK's report thread: only store, the timer acts.
        with self._reported_lock:
            self._reported_codes = (int(data.get("error_code", 0)), int(data.get("warn_code", 0)))

    def _check_controller_codes(self) -> None:
        with self._reported_lock:
            reported = self._reported_codes
        error = int(self._arm.error_code) or reported[0]
        warn = int(self._arm.warn_code) or reported[1]
        if (error or warn) and not self._fault:
            self._stop(error, warn)

    def _stop(self, error: int, warn: int) -> None:
        """Stop the arm and latch a fault until ~/clear_fault."""
        self._arm.set_state(STATE_STOP)
        self._target = None
        self._fault_codes = (error, warn)
        self._fault = controller_code_title(error, warn)
        self.get_logger().error(f"xArm controller reports {self._fault}: arm stopped; call ~/clear_fault")
        self._publish_diagnostics()

    def _on_clear_fault(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if not self._connected:
            response.success, response.message = False, "not connected to the xArm"
            return response
        arm = self._arm
        arm.clean_error()
        arm.clean_warn()
        with self._reported_lock:
            self._reported_codes = (0, 0)
        if arm.error_code or arm.warn_code:
            response.success = False
            response.message = (
                f"controller still reports {controller_code_title(arm.error_code, arm.warn_code)}"
            )
            return response
        codes = [arm.motion_enable(enable=True), arm.set_mode(SERVO_MODE), arm.set_state(STATE_READY)]
        if any(codes):
            response.success, response.message = False, f"re-enabling servo mode returned SDK codes {codes}"
            return response
        self._fault, self._fault_codes = "", (0, 0)
        self._setpoint = self._q.copy() if self._q is not None else None
        response.success, response.message = True, "fault cleared, servo mode on"
        self.get_logger().info(response.message)
        return response

    # -- commands -------------------------------------------------------------------------------

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        if self._q is None or self._setpoint is None:
            self._reject("no joint state measured yet")
            return
        if self._fault:
            self._reject(f"stopped by a controller fault ({self._fault})")
            return
        try:
            targets = topics.trajectory_targets(msg.joint_names, msg.points, JOINT_LOWER, JOINT_UPPER)
        except ValueError as exc:
            self._reject(str(exc))
            return
        cmd = self.mapper.enforce(targets, self._gripper, self._q, self._gripper)
        self._counts["commands"] += 1
        if cmd.held:
            self._counts["held"] += 1
        if cmd.notes:
            self._last_note = "; ".join(cmd.notes)
            self.get_logger().warning(f"safety layer: {self._last_note}")
        self._target = cmd.joint_targets
        ticks = max(1, round(self.config.ramp_time_s * self.config.rate_hz))
        self._step = np.minimum(
            np.abs(self._target - self._setpoint) / ticks, self.config.max_joint_speed_rad_s * self._dt
        )
        self._last_command = time.monotonic()
        self._watchdog = "ok"

    def _reject(self, reason: str) -> None:
        self._counts["rejected"] += 1
        self._last_note = f"rejected: {reason}"
        self.get_logger().error(f"rejected joint trajectory: {reason}")

    def _on_gripper(self, msg: Float32) -> None:
        value = float(msg.data)
        if not np.isfinite(value) or not 0.0 <= value <= 1.0:
            self.get_logger().error(f"rejected gripper command {value}: must be a finite opening in [0, 1]")
            return
        if not self._connected or self._fault:
            return
        lim = self.mapper.limits
        opening = float(np.clip(value, lim.gripper_min, lim.gripper_max))
        if self._gripper_sent is not None and abs(opening - self._gripper_sent) < 1e-3:
            return  # the gripper moves over Modbus: send only changes
        code = self._arm.set_gripper_position(
            opening * self.config.gripper_open_pulse, wait=False, speed=self.config.gripper_speed
        )
        if code == 0:
            self._gripper_sent = opening
        else:
            self.get_logger().error(f"set_gripper_position returned SDK code {code}")

    # -- diagnostics ------------------------------------------------------------------------------

    def joint_state_rate_hz(self) -> float:
        """Publishing rate over the last ~2 s of ticks."""
        t = self._publish_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def _publish_diagnostics(self) -> None:
        if not self._connected:
            level, message = DiagnosticStatus.ERROR, "disconnected: reconnecting"
        elif self._fault:
            level, message = DiagnosticStatus.ERROR, f"stopped: {self._fault}"
        elif self._watchdog == "stale":
            level, message = DiagnosticStatus.WARN, "no recent joint command: holding"
        else:
            level, message = DiagnosticStatus.OK, "streaming" if self._target is not None else "ready"
        values = {
            "connected": self._connected,
            "error_code": self._fault_codes[0],
            "warn_code": self._fault_codes[1],
            "fault": self._fault,
            "watchdog": self._watchdog,
            "joint_state_rate_hz": f"{self.joint_state_rate_hz():.1f}",
            "reconnects": self._reconnects,
            "last_safety_note": self._last_note,
            **self._counts,
        }
        status = DiagnosticStatus(
            level=level,
            name=NODE_NAME,
            message=message,
            hardware_id=f"xarm7@{self.config.robot_ip}",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def close(self) -> None:
        """Stop streaming and let go of the arm."""
        if self._connected:
            self._arm.set_state(STATE_STOP)
        self._arm.disconnect()


def main(args: list[str] | None = None) -> None:
    spin_node(XArmDriverNode, args, XArmDriverNode.close)


if __name__ == "__main__":
    main()
