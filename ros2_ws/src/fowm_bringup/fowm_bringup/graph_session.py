"""A node graph (fowm_bringup.graph) as running processes, and a small rclpy node that watches it.

`GraphProcesses` starts the nodes of a Graph exactly as `python -m fowm_bringup.run` does (the same
commands from `run.node_commands`: the graph's params file and launch arguments), plus per-node
parameter overrides appended as `-p name:=value` (later -p wins), each process in its own process
group with its output in `<log_dir>/<node>.log`.

`GraphMonitor` is the orchestrator's window on the graph: episode events (a deep queue, so an "end"
and the "start" right after it both arrive), the latest /diagnostics status of every node, camera
frames on request, and Trigger / GetParameters service calls. It never commands the robot.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fowm_bringup.graph import Graph
from fowm_bringup.run import node_commands, parse_launch_arguments


def format_parameter(value: Any) -> str:
    """A Python value as `-p name:=value` text (YAML: true/false, [1, 2], quoted empty strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_parameter(v) for v in value) + "]"
    if isinstance(value, str) and value == "":
        return "''"
    return str(value)


class GraphProcesses:
    """The nodes of one graph as processes; see the module docstring."""

    def __init__(
        self,
        graph: Graph,
        overrides: dict[str, dict[str, Any]],
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        names = {n.name for n in graph.nodes}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"graph {graph.name!r} has no node(s) {unknown}; it has {sorted(names)}")
        self.graph = graph
        self.commands = node_commands(graph, parse_launch_arguments(graph, []), python=sys.executable)
        for name, params in overrides.items():
            for key, value in params.items():
                self.commands[name] += ["-p", f"{key}:={format_parameter(value)}"]
        self.log_dir = Path(log_dir)
        self.env = {**os.environ, **(env or {})}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, cmd in self.commands.items():
            with open(self.log_dir / f"{name}.log", "ab") as log:
                self.procs[name] = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
                )

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def check_alive(self, ignore: tuple[str, ...] = ()) -> None:
        """Raise RuntimeError naming the first node that exited (with its log tail)."""
        for name, proc in self.procs.items():
            if name not in ignore and proc.poll() is not None:
                raise RuntimeError(f"node {name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def kill(self, name: str) -> None:
        """SIGKILL one node (no clean shutdown: what a crash looks like to the others)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(timeout=30)

    def stop(self, timeout_s: float = 20.0) -> dict[str, int | None]:
        """SIGINT to every node (clean rclpy shutdown: the recorder closes its bag), then SIGKILL."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, or a node that hung
            proc.wait(timeout=30)
        return {name: proc.returncode for name, proc in self.procs.items()}

    def __enter__(self) -> GraphProcesses:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GraphMonitor:
    """Watches a running graph from the orchestrator's process (rclpy must be initialised)."""

    def __init__(self, name: str = "fowm_ros_demo") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String, UInt8MultiArray

        from fowm_xarm import topics

        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.events: list[topics.EpisodeEvent] = []
        self.diagnostics: dict[str, dict[str, str]] = {}  # node status name -> latest values
        self.frames: dict[int, Any] = {}  # stamp ns -> (H, W, 3) uint8, while capturing
        self.capturing = False
        self._frame_size = (320, 240)
        episode_qos = topics.rclpy_qos(topics.EPISODE.qos)
        episode_qos.depth = 100  # the latched topic keeps 1; a burst of end + start must not lose "end"
        self.node.create_subscription(String, topics.EPISODE.name, self._on_event, episode_qos)
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_diagnostics,
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
        )  # fmt: skip
        self.weights: dict[str, bytes] = {}  # sha256 -> blob, the last few seen on the weights topic
        self.node.create_subscription(
            UInt8MultiArray,
            topics.WEIGHTS.name,
            self._on_weights,
            topics.rclpy_qos(topics.WEIGHTS.qos),
            raw=True,
        )
        self._image_args = (Image, topics.IMAGE.name, self._on_image, topics.rclpy_qos(topics.IMAGE.qos))
        self._image_sub: Any = None
        self._clients: dict[tuple[str, str], Any] = {}

    def capture(self, on: bool) -> None:
        """Start (clearing earlier frames) or stop keeping camera frames; subscribed only meanwhile,
        as 640x480 frames cost this process CPU."""
        if on and self._image_sub is None:
            self.frames.clear()
            self._image_sub = self.node.create_subscription(*self._image_args)
        elif not on and self._image_sub is not None:
            self.node.destroy_subscription(self._image_sub)
            self._image_sub = None
        self.capturing = on

    # -- subscriptions -----------------------------------------------------------------------------

    def _on_event(self, msg: Any) -> None:
        from fowm_xarm.topics import EpisodeEvent

        try:
            self.events.append(EpisodeEvent.from_json(msg.data))
        except ValueError:
            pass

    def _on_weights(self, raw: bytes) -> None:
        from fowm_core.weights import weights_sha256
        from fowm_xarm import topics

        blob = bytes(topics.deserialize(raw, topics.WEIGHTS.msgtype).data)
        self.weights[weights_sha256(blob)] = blob
        while len(self.weights) > 3:  # only recent pushes can be the planner's committed weights
            self.weights.pop(next(iter(self.weights)))

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def _on_image(self, msg: Any) -> None:
        if not self.capturing:
            return
        import cv2

        from fowm_xarm.observation import image_to_rgb

        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if stamp not in self.frames:  # the lockstep sim republishes an unchanged observation
            frame = image_to_rgb(msg.height, msg.width, msg.encoding, msg.step, msg.data)
            self.frames[stamp] = cv2.resize(frame, self._frame_size, interpolation=cv2.INTER_AREA)

    def ended(self) -> list[Any]:
        return [e for e in self.events if e.event == "end"]

    # -- waiting -----------------------------------------------------------------------------------

    def spin_until(
        self, predicate: Callable[[], bool], timeout_s: float, check: Callable[[], None] | None = None
    ) -> bool:
        """Spin until predicate() (True) or timeout (False); `check()` may raise (a node died)."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                return False
            if check is not None:
                check()
            self.executor.spin_once(timeout_sec=0.05)
        return True

    def _call(self, srv_type: type, service: str, request: Any, timeout_s: float) -> Any:
        key = (srv_type.__name__, service)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, service)
        client = self._clients[key]
        if not self.spin_until(client.service_is_ready, timeout_s):
            raise TimeoutError(f"service {service} not available after {timeout_s:.0f} s")
        future = client.call_async(request)
        if not self.spin_until(future.done, timeout_s):
            raise TimeoutError(f"service {service} did not answer within {timeout_s:.0f} s")
        return future.result()

    def wait_for_sim_matched(self, timeout_s: float, check: Callable[[], None] | None = None) -> bool:
        """Wait until the sim's command subscriptions (trajectory and gripper) and the planner's
        publishers of them are in the graph, then one more second for the endpoints to match: a
        planner that commands earlier can lose its first gripper command."""
        from fowm_xarm import topics

        def ready() -> bool:
            n = self.node
            return all(
                n.count_subscribers(t.name) >= 1 and n.count_publishers(t.name) >= 1
                for t in (topics.JOINT_TRAJECTORY, topics.GRIPPER_COMMAND)
            )

        ok = self.spin_until(ready, timeout_s, check)
        self.spin_until(lambda: False, 1.0, check)
        return ok

    def trigger(self, service: str, timeout_s: float = 60.0) -> str:
        from std_srvs.srv import Trigger

        response = self._call(Trigger, service, Trigger.Request(), timeout_s)
        if not response.success:
            raise RuntimeError(f"{service} refused: {response.message}")
        return response.message

    def get_parameter(self, node: str, name: str, timeout_s: float = 60.0) -> Any:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self._call(
            GetParameters, f"/{node}/get_parameters", GetParameters.Request(names=[name]), timeout_s
        )
        return parameter_value_to_python(response.values[0])

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
