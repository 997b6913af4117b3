"""fowm_teleop: drive the arm (real or sim) from the keyboard or a SpaceMouse, and label episodes.

At each new joint state (at most once per control_period) the keys typed since the last decision
(or the SpaceMouse's deflection) become one action in [-1, 1]^4 (fowm_xarm.teleop.KeyboardTeleop),
which goes through the shared action path and safety layer (fowm_xarm.command.ActionMapper, the
planner's path) to a JointTrajectory + gripper command. The action itself goes out on /fowm/action
naming the stamp of the joint state it acted on, so a recorder's bag pairs it with exactly that
observation.
Commands flow only while an episode runs (between the "start" and "end" events on /fowm/episode):
between episodes the episode manager owns the arm (homing).

Episode keys call the episode manager's services (std_srvs/Trigger), which publish the events:
    g  the scene is reset: start the next episode      y  end it, labelled success
    n  end it, labelled failure                        q  quit teleop (the graph keeps running)
Motion keys: fowm_xarm.teleop (w/s +-x, a/d +-y, r/f +-z, space toggles the gripper).

Where keys come from: a terminal on stdin (put in cbreak mode: single keys, no echo, Ctrl-C still
stops the node), a pipe on stdin (`printf 'ww' | ros2 run fowm_xarm fowm_teleop`), and always the
topic ~/keys (std_msgs/String, every character one key press), which is how tests drive it.
With input=spacemouse the SpaceMouse (pyspacemouse, optional, needs the hidapi system library)
gives the motion: its x/y/z deflection in the ROS convention is the action, button 0 toggles the
gripper; episode keys still come from the keyboard sources.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import sys
import termios
import time
import tty
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, Float32MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from fowm_xarm import topics
from fowm_xarm.command import ActionMapper, SafetyLimits
from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.observation import joint_state_to_arrays
from fowm_xarm.ros_node import declare_config, param
from fowm_xarm.teleop import KeyboardTeleop, TeleopConfig
from fowm_xarm.topics import EpisodeEvent

INPUTS = ("keyboard", "spacemouse")
START_KEY, SUCCESS_KEY, FAILURE_KEY, QUIT_KEY = "g", "y", "n", "q"
EPISODE_KEYS = {START_KEY: "start", SUCCESS_KEY: "success", FAILURE_KEY: "failure"}



@dataclass
class TeleopNodeConfig:
    """Parameters of fowm_teleop; each field is declared as a ROS parameter with its doc."""

    input: str = param("keyboard", "motion source: keyboard or spacemouse (pyspacemouse, when installed)")
    step: float = param(1.0, "one key press as a fraction of max_delta_m, in (0, 1]")
    max_delta_m: float = param(0.05, "TCP displacement (m) of an action component of +-1 (the sim's)")
    max_joint_step_rad: float = param(0.3, "safety layer: largest joint target change per decision (rad)")
    control_period: float = param(
        0.16, "decisions at most this often (wall clock; a lockstep sim waits for them), s"
    )
    command_duration: float = param(0.16, "time_from_start (s) of each trajectory point (a decision)")
    spacemouse_deadzone: float = param(0.1, "SpaceMouse deflections below this are zero, in [0, 1)")
    episode_manager: str = param(
        "fowm_episode_manager", "node whose start/success/failure services keys call"
    )
    read_stdin: bool = param(True, "read keys from stdin when it is a terminal or a pipe")

    def __post_init__(self) -> None:
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if not 0.0 < self.control_period <= 5.0:
            raise ValueError(f"control_period must be in (0, 5] s, got {self.control_period}")
        if not 0.0 < self.command_duration <= 5.0:
            raise ValueError(f"command_duration must be in (0, 5] s, got {self.command_duration}")
        if not 0.0 <= self.spacemouse_deadzone < 1.0:
            raise ValueError(f"spacemouse_deadzone must be in [0, 1), got {self.spacemouse_deadzone}")
        if not self.episode_manager:
            raise ValueError("episode_manager must name the episode manager node")
        TeleopConfig(step=self.step)  # validates step
        SafetyLimits(max_joint_step_rad=self.max_joint_step_rad)


def spacemouse_action(xyz: np.ndarray, gripper_open: bool, deadzone: float) -> np.ndarray:
    """(4,) float32 action from a SpaceMouse deflection (3,) in [-1, 1] (ROS axes: x forward, y left,
    z up, the robot base frame's directions): deflections inside the deadzone are zero, the rest is
    rescaled so that leaving the deadzone starts from zero."""
    v = np.clip(np.asarray(xyz, dtype=np.float64), -1.0, 1.0)
    mag = np.maximum(np.abs(v) - deadzone, 0.0) / (1.0 - deadzone)
    return np.append(np.sign(v) * mag, 1.0 if gripper_open else -1.0).astype(np.float32)


class StdinKeys:
    """Non-blocking key reader on stdin: a terminal (cbreak mode, restored on close) or a pipe."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._saved: list | None = None
        try:
            fd = sys.stdin.fileno()
            mode = os.fstat(fd).st_mode
        except (OSError, ValueError, AttributeError):
            return
        if os.isatty(fd):
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)  # cbreak, not raw: Ctrl-C still reaches the node as SIGINT
            self.fd = fd
        elif stat.S_ISFIFO(mode):
            self.fd = fd

    @property
    def kind(self) -> str:
        return "none" if self.fd is None else ("terminal" if self._saved is not None else "pipe")

    def read(self) -> str:
        keys = []
        while self.fd is not None and select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 64)
            if not chunk:  # the pipe's writer closed it
                self.fd = None
                break
            keys.append(chunk.decode(errors="ignore"))
        return "".join(keys)

    def close(self) -> None:
        if self._saved is not None and self.fd is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        self._saved = None


class TeleopNode(Node):
    """See the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__("fowm_teleop", **overrides)
        self.config = cfg = declare_config(self, TeleopNodeConfig)
        kinematics = XArm7Kinematics()
        self.mapper = ActionMapper(
            kinematics,
            cfg.max_delta_m,
            SafetyLimits(max_joint_step_rad=cfg.max_joint_step_rad, workspace=kinematics.workspace),
        )
        self.teleop = KeyboardTeleop(TeleopConfig(step=cfg.step))
        self.spacemouse = self._open_spacemouse() if cfg.input == "spacemouse" else None
        self._button_was_down = False

        reliable = topics.rclpy_qos(topics.QosKind.RELIABLE)
        self._traj_pub = self.create_publisher(JointTrajectory, topics.JOINT_TRAJECTORY.name, reliable)
        self._grip_pub = self.create_publisher(Float32, topics.GRIPPER_COMMAND.name, reliable)
        self._action_pub = self.create_publisher(Float32MultiArray, topics.ACTION.name, reliable)
        self.create_subscription(
            JointState,
            topics.JOINT_STATES.name,
            self._on_joint_state,
            topics.rclpy_qos(topics.JOINT_STATES.qos),
        )
        self.create_subscription(
            String, topics.EPISODE.name, self._on_episode, topics.rclpy_qos(topics.EPISODE.qos)
        )
        self.create_subscription(String, "~/keys", lambda m: self._take_keys(m.data), reliable)
        self._episode_clients = {
            name: self.create_client(Trigger, f"/{cfg.episode_manager}/{name}")
            for name in EPISODE_KEYS.values()
        }
        self.stdin = StdinKeys() if cfg.read_stdin else None
        if self.stdin is not None and self.stdin.fd is not None:
            self.create_timer(0.02, lambda: self._take_keys(self.stdin.read()))

        self._pending = ""  # motion keys typed since the last decision
        self._last_stamp_ns: int | None = None  # joint-state stamp of the last published action
        self._last_decision_s = -float("inf")  # monotonic time of the last published action
        self.episode_running = False
        self.quit_requested = False
        self.decisions = 0
        source = self.stdin.kind if self.stdin is not None else "none"
        self.get_logger().info(
            f"teleop up: input={cfg.input}, keys from stdin ({source}) and "
            f"{self.resolve_topic_name('~/keys')}; "
            f"{self.teleop.help_text()}; g: start episode, y: success, n: failure, q: quit"
        )

    def _open_spacemouse(self) -> Any:
        try:
            import pyspacemouse
        except ImportError as exc:
            raise RuntimeError(
                "input=spacemouse needs pyspacemouse (pip install pyspacemouse; it needs the hidapi "
                f"system library, e.g. apt-get install libhidapi-hidraw0): {exc}"
            ) from exc
        return pyspacemouse.open(axis_convention=pyspacemouse.AxisConvention.ROS)

    # -- inputs ---------------------------------------------------------------------------------

    def _take_keys(self, keys: str) -> None:
        for key in keys:
            if key == QUIT_KEY:
                self.quit_requested = True
            elif key in EPISODE_KEYS:
                self._call_episode_manager(EPISODE_KEYS[key])
            else:
                self._pending += key

    def _call_episode_manager(self, service: str) -> None:
        client = self._episode_clients[service]
        if not client.service_is_ready():
            self.get_logger().error(
                f"episode manager service {client.srv_name} is not available: is the episode manager up?"
            )
            return
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda f, s=service: self._log_response(s, f))

    def _log_response(self, service: str, future: Any) -> None:
        result = future.result()
        log = self.get_logger().info if result.success else self.get_logger().warning
        log(f"{service}: {result.message}")

    def _on_episode(self, msg: String) -> None:
        try:
            event = EpisodeEvent.from_json(msg.data)
        except ValueError as exc:
            self.get_logger().error(f"ignored episode event: {exc}")
            return
        self.episode_running = event.event == "start"
        if self.episode_running:
            self.teleop.reset()
            self._pending = ""

    # -- one decision per new joint state -----------------------------------------------------

    def _motion_action(self, keys: str) -> np.ndarray:
        if self.spacemouse is None:
            return self.teleop.action(keys)
        state = self.spacemouse.read()
        down = bool(state.buttons and state.buttons[0])
        if down and not self._button_was_down:
            self.teleop.gripper_open = not self.teleop.gripper_open
        self._button_was_down = down
        deflection = np.array([state.x, state.y, state.z])
        return spacemouse_action(deflection, self.teleop.gripper_open, self.config.spacemouse_deadzone)

    def _on_joint_state(self, msg: JointState) -> None:
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if not self.episode_running or stamp_ns == self._last_stamp_ns:
            return  # between episodes the episode manager commands; one action per observation
        now = time.monotonic()
        # 0.8: a realtime sim's or driver's period jitters around ours; never skip a decision for it.
        if now - self._last_decision_s < 0.8 * self.config.control_period:
            return
        try:
            q, gripper = joint_state_to_arrays(msg.name, msg.position)
        except ValueError as exc:
            self.get_logger().error(f"ignored joint state: {exc}", throttle_duration_sec=5.0)
            return
        keys, self._pending = self._pending, ""
        action = self._motion_action(keys)
        command = self.mapper.command(action, q, gripper)
        if command.notes:
            self.get_logger().warning(f"safety layer: {'; '.join(command.notes)}", throttle_duration_sec=2.0)
        now_ns = self.get_clock().now().nanoseconds
        # The action first: a recorder then logs it before the observation its command causes (a
        # lockstep sim steps as soon as the trajectory arrives). The gripper before the trajectory:
        # the lockstep sim applies a gripper command to the trajectory after it.
        self._action_pub.publish(topics.action_msg(action, obs_stamp_ns=stamp_ns))
        self._grip_pub.publish(topics.float32_msg(command.gripper))
        self._traj_pub.publish(
            topics.joint_trajectory_msg(now_ns, command.joint_targets, self.config.command_duration)
        )
        self._last_stamp_ns = stamp_ns
        self._last_decision_s = now
        self.decisions += 1

    def close(self) -> None:
        if self.stdin is not None:
            self.stdin.close()
        if self.spacemouse is not None:
            with contextlib.suppress(Exception):
                self.spacemouse.close()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = TeleopNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not node.quit_requested:
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
