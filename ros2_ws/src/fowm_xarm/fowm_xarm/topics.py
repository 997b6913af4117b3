"""The topic contract of the xArm7 (real, sim and recorded), as constants and small helpers.

Every node that talks to the robot (sim node, SDK driver, planner, recorder) and every bag we
write uses these names, stock message types and QoS profiles, so the real robot, the sim and the
offline data agree by construction. Names are defaults: every node lets them be remapped.

Messages are built here with the rosbags typestore (ROS 2 Jazzy definitions) and serialised to CDR
bytes. Both the live sim node (rclpy publishes raw bytes) and the bag writer use these bytes, so a
live topic and a recorded bag hold byte-identical messages. Importing this module needs no rclpy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.typesys import Stores, get_typestore

from fowm_xarm.limits import JOINT_NAMES

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)

# The gripper rides along in /joint_states after the seven arm joints. Its position is the opening
# fraction in [0, 1] (0 closed, 1 open), the same unit as the gripper command, not radians.
GRIPPER_JOINT_NAME = "gripper"
JOINT_STATE_NAMES: tuple[str, ...] = (*JOINT_NAMES, GRIPPER_JOINT_NAME)


class QosKind(StrEnum):
    """How a topic is delivered."""

    SENSOR = "sensor"  # best effort, keep last 5: a late camera frame is worse than a lost one
    RELIABLE = "reliable"  # reliable, keep last 10: commands, rewards, events must all arrive
    LATCHED = "latched"  # reliable + transient local, depth 1: late joiners get the last value


@dataclass(frozen=True)
class TopicSpec:
    """One topic of the contract."""

    name: str  # default topic name (remappable)
    msgtype: str  # ROS 2 type name, e.g. "sensor_msgs/msg/Image"
    qos: QosKind  # delivery profile
    doc: str  # what flows on it


IMAGE = TopicSpec(
    "/camera/color/image_raw",
    "sensor_msgs/msg/Image",
    QosKind.SENSOR,
    "colour frame, rgb8, 640x480 like the RealSense D435 (sim renders the same)",
)
CAMERA_INFO = TopicSpec(
    "/camera/color/camera_info",
    "sensor_msgs/msg/CameraInfo",
    QosKind.SENSOR,
    "pinhole intrinsics of the colour frame, one per image",
)
JOINT_STATES = TopicSpec(
    "/joint_states",
    "sensor_msgs/msg/JointState",
    QosKind.SENSOR,
    "joint1..joint7 (rad, rad/s) then 'gripper' (opening in [0, 1])",
)
JOINT_TRAJECTORY = TopicSpec(
    "/xarm7_traj_controller/joint_trajectory",
    "trajectory_msgs/msg/JointTrajectory",
    QosKind.RELIABLE,
    "arm command as joint_trajectory_controller expects; the last point is the target",
)
GRIPPER_COMMAND = TopicSpec(
    "/xarm_gripper/command",
    "std_msgs/msg/Float32",
    QosKind.RELIABLE,
    "gripper opening target in [0, 1] (0 closed, 1 open)",
)
ACTION = TopicSpec(
    "/fowm/action",
    "std_msgs/msg/Float32MultiArray",
    QosKind.RELIABLE,
    "the policy action in [-1, 1]^4 (ee xyz delta, gripper) behind each command",
)
REWARD = TopicSpec(
    "/fowm/reward", "std_msgs/msg/Float32", QosKind.RELIABLE, "task reward of the last decision"
)
EPISODE = TopicSpec(
    "/fowm/episode",
    "std_msgs/msg/String",
    QosKind.LATCHED,
    'episode events, JSON {"event": "start"|"end", "episode", "task", "seed", "success", ...}',
)
WEIGHTS = TopicSpec(
    "/fowm/weights",
    "std_msgs/msg/UInt8MultiArray",
    QosKind.LATCHED,
    "model weights (fowm_core safetensors blob) from the trainer; committed via the planner's parameters",
)
CLOCK = TopicSpec(
    "/clock",
    "rosgraph_msgs/msg/Clock",
    QosKind.SENSOR,
    "sim time in lockstep mode (other nodes set use_sim_time)",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    IMAGE,
    CAMERA_INFO,
    JOINT_STATES,
    JOINT_TRAJECTORY,
    GRIPPER_COMMAND,
    ACTION,
    REWARD,
    EPISODE,
    WEIGHTS,
    CLOCK,
)
TOPICS_BY_NAME: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}

_DEPTH = {QosKind.SENSOR: 5, QosKind.RELIABLE: 10, QosKind.LATCHED: 1}


def rclpy_qos(kind: QosKind) -> Any:
    """The rclpy QoSProfile for a delivery kind (rclpy imported here so the module stays ROS-free)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability = ReliabilityPolicy.BEST_EFFORT if kind is QosKind.SENSOR else ReliabilityPolicy.RELIABLE
    durability = DurabilityPolicy.TRANSIENT_LOCAL if kind is QosKind.LATCHED else DurabilityPolicy.VOLATILE
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=_DEPTH[kind], reliability=reliability, durability=durability
    )


def bag_qos(kind: QosKind) -> Qos:
    """The offered QoS stored in a bag's metadata, so `ros2 bag play` republishes with the same profile."""
    never = QosTime(0, 0)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=_DEPTH[kind],
        reliability=QosReliability.BEST_EFFORT if kind is QosKind.SENSOR else QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if kind is QosKind.LATCHED else QosDurability.VOLATILE,
        deadline=never,
        lifespan=never,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=never,
        avoid_ros_namespace_conventions=False,
    )


# ---------------------------------------------------------------------------------------------
# Episode events (std_msgs/String carrying JSON)

EPISODE_EVENTS = ("start", "end")


@dataclass(frozen=True)
class EpisodeEvent:
    """One episode event. `success` and `episode_return` are only meaningful at "end"."""

    event: str  # "start" or "end"
    episode: int  # episode index within the run
    task: str  # task name, e.g. "reach"
    seed: int | None = None  # reset seed of the episode
    success: bool | None = None  # set at "end"
    episode_return: float | None = None  # sum of rewards, set at "end"
    steps: int | None = None  # decisions taken, set at "end"
    terminated: bool | None = None  # at "end": True = the task ended it (true terminal, no bootstrapping);
    # False or None = a time limit or an operator cut it (the value after the last step still counts)
    first_obs_stamp_ns: int | None = None  # at "start", when known: stamp of the episode's first
    # observation, so a consumer that hears the event late (a latched event reaching a planner that
    # joined after it) can tell whether it already acted in this episode

    def __post_init__(self) -> None:
        if self.event not in EPISODE_EVENTS:
            raise ValueError(f"episode event must be one of {EPISODE_EVENTS}, got {self.event!r}")
        if not isinstance(self.episode, int) or isinstance(self.episode, bool) or self.episode < 0:
            raise ValueError(f"episode index must be a non-negative int, got {self.episode!r}")
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"episode task must be a non-empty string, got {self.task!r}")
        stamp = self.first_obs_stamp_ns
        if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 0):
            raise ValueError(f"first_obs_stamp_ns must be non-negative integer nanoseconds, got {stamp!r}")

    def to_json(self) -> str:
        payload = {"event": self.event, "episode": self.episode, "task": self.task, "seed": self.seed}
        if self.event == "start" and self.first_obs_stamp_ns is not None:
            payload["first_obs_stamp_ns"] = self.first_obs_stamp_ns
        if self.event == "end":
            payload.update(success=self.success, episode_return=self.episode_return, steps=self.steps)
            if self.terminated is not None:
                payload["terminated"] = self.terminated
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EpisodeEvent:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"episode event is not JSON: {text[:80]!r} ({exc})") from exc
        if not isinstance(payload, dict):
            raise ValueError(f"episode event must be a JSON object, got {text[:80]!r}")
        missing = {"event", "episode", "task"} - set(payload)
        if missing:
            raise ValueError(f"episode event lacks keys {sorted(missing)}: {text[:80]!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


# ---------------------------------------------------------------------------------------------
# Message builders: numpy in, CDR bytes out (rosbags typestore, ROS 2 Jazzy definitions)

_T = TYPESTORE.types


def _stamp(stamp_ns: int) -> Any:
    if stamp_ns < 0:
        raise ValueError(f"timestamps must be non-negative nanoseconds, got {stamp_ns}")
    return _T["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9))


def _header(stamp_ns: int, frame_id: str) -> Any:
    return _T["std_msgs/msg/Header"](stamp=_stamp(stamp_ns), frame_id=frame_id)


def serialize(msg: Any) -> bytes:
    """CDR bytes (with encapsulation header, as rosbag2 stores and rclpy publish_raw expects)."""
    return bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes | memoryview, msgtype: str) -> Any:
    """A rosbags message object from CDR bytes."""
    return TYPESTORE.deserialize_cdr(data, msgtype)


def image_msg(stamp_ns: int, rgb_hwc: np.ndarray, frame_id: str = "camera_color_optical_frame") -> bytes:
    """sensor_msgs/Image, rgb8, from an (H, W, 3) uint8 array."""
    rgb = np.asarray(rgb_hwc)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    msg = _T["sensor_msgs/msg/Image"](
        header=_header(stamp_ns, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * w,
        data=np.ascontiguousarray(rgb).reshape(-1),
    )
    return serialize(msg)


def camera_info_msg(
    stamp_ns: int, intrinsics: dict[str, float], frame_id: str = "camera_color_optical_frame"
) -> bytes:
    """sensor_msgs/CameraInfo (plumb_bob, no distortion) from dict(width, height, fx, fy, cx, cy)."""
    missing = {"width", "height", "fx", "fy", "cx", "cy"} - set(intrinsics)
    if missing:
        raise ValueError(f"camera intrinsics lack {sorted(missing)}")
    fx, fy, cx, cy = (float(intrinsics[k]) for k in ("fx", "fy", "cx", "cy"))
    roi = _T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    msg = _T["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns, frame_id),
        height=int(intrinsics["height"]),
        width=int(intrinsics["width"]),
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3).reshape(-1),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
    return serialize(msg)


def joint_state_msg(stamp_ns: int, q: np.ndarray, qd: np.ndarray, gripper: float) -> bytes:
    """sensor_msgs/JointState: joint1..joint7 (q, qd each (7,)) then the gripper opening."""
    q, qd = np.asarray(q, dtype=np.float64), np.asarray(qd, dtype=np.float64)
    if q.shape != (len(JOINT_NAMES),) or qd.shape != (len(JOINT_NAMES),):
        raise ValueError(
            f"joint positions/velocities must be ({len(JOINT_NAMES)},), got {q.shape}, {qd.shape}"
        )
    msg = _T["sensor_msgs/msg/JointState"](
        header=_header(stamp_ns, ""),
        name=list(JOINT_STATE_NAMES),
        position=np.append(q, float(gripper)),
        velocity=np.append(qd, 0.0),
        effort=np.zeros(0),
    )
    return serialize(msg)


def joint_trajectory_msg(stamp_ns: int, q_target: np.ndarray, duration_s: float) -> bytes:
    """trajectory_msgs/JointTrajectory with one point: reach q_target (7,) after duration_s."""
    q_target = np.asarray(q_target, dtype=np.float64)
    if q_target.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(q_target)):
        raise ValueError(f"joint targets must be finite ({len(JOINT_NAMES)},), got {q_target}")
    ns = round(duration_s * 1e9)
    point = _T["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=q_target,
        velocities=np.zeros(0),
        accelerations=np.zeros(0),
        effort=np.zeros(0),
        time_from_start=_T["builtin_interfaces/msg/Duration"](sec=ns // 10**9, nanosec=ns % 10**9),
    )
    msg = _T["trajectory_msgs/msg/JointTrajectory"](
        header=_header(stamp_ns, ""), joint_names=list(JOINT_NAMES), points=[point]
    )
    return serialize(msg)


def float32_msg(value: float) -> bytes:
    """std_msgs/Float32 (reward, gripper command)."""
    return serialize(_T["std_msgs/msg/Float32"](data=float(value)))


ACTION_STAMP_LABEL = "obs_stamp_ns:"


def action_msg(action: np.ndarray, obs_stamp_ns: int | None = None) -> bytes:
    """std_msgs/Float32MultiArray holding one (4,) action.

    The action names the stamp of the observation it was computed from in its one layout dimension,
    label "obs_stamp_ns:<int>" (stock types only, so the stamp rides in the label): ingestion pairs
    each action with exactly that observation, whatever order a recorder received the topics in.
    Without a stamp the layout has no dims (a flat vector)."""
    data = np.asarray(action, dtype=np.float32).reshape(-1)
    dims = []
    if obs_stamp_ns is not None:
        if int(obs_stamp_ns) < 0:
            raise ValueError(f"obs_stamp_ns must be non-negative, got {obs_stamp_ns}")
        label = f"{ACTION_STAMP_LABEL}{int(obs_stamp_ns)}"
        dims = [_T["std_msgs/msg/MultiArrayDimension"](label=label, size=data.size, stride=data.size)]
    layout = _T["std_msgs/msg/MultiArrayLayout"](dim=dims, data_offset=0)
    return serialize(_T["std_msgs/msg/Float32MultiArray"](layout=layout, data=data))


def action_obs_stamp(msg: Any) -> int | None:
    """The observation stamp (ns) an action message names, or None (rclpy or rosbags message).
    Raises ValueError for a malformed label."""
    dims = list(msg.layout.dim)
    if not dims or not dims[0].label.startswith(ACTION_STAMP_LABEL):
        return None
    text = dims[0].label[len(ACTION_STAMP_LABEL) :]
    if not text.isdigit():
        raise ValueError(f"action layout label {dims[0].label!r} does not hold an integer stamp")
    return int(text)


def episode_event_msg(event: EpisodeEvent) -> bytes:
    """std_msgs/String carrying the event's JSON."""
    return serialize(_T["std_msgs/msg/String"](data=event.to_json()))


def weights_msg(blob: bytes) -> bytes:
    """std_msgs/UInt8MultiArray carrying a weights blob (no layout dims), ready for publish(bytes):
    serialised with one memcpy, where filling an rclpy message's uint8[] field costs seconds at 20 MB."""
    layout = _T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    data = np.frombuffer(blob, dtype=np.uint8)
    return serialize(_T["std_msgs/msg/UInt8MultiArray"](layout=layout, data=data))


def clock_msg(stamp_ns: int) -> bytes:
    """rosgraph_msgs/Clock."""
    return serialize(_T["rosgraph_msgs/msg/Clock"](clock=_stamp(stamp_ns)))


# ---------------------------------------------------------------------------------------------
# Command validation shared by every consumer of the trajectory topic (sim node, SDK driver)


def trajectory_targets(
    joint_names: list[str], points: list[Any], lower: np.ndarray, upper: np.ndarray, tol: float = 1e-6
) -> np.ndarray:
    """The (7,) joint targets, in JOINT_NAMES order, of a JointTrajectory's last point.

    Works on rclpy and rosbags messages alike (`joint_names`, `points[i].positions`). Raises
    ValueError naming the problem: wrong or duplicate joint names, no points, a length mismatch,
    NaN/Inf, or a target outside [lower - tol, upper + tol].
    """
    names = list(joint_names)
    if sorted(names) != sorted(JOINT_NAMES) or len(set(names)) != len(names):
        raise ValueError(f"trajectory joint names must be {list(JOINT_NAMES)} (any order), got {names}")
    if not points:
        raise ValueError("trajectory has no points")
    positions = np.asarray(points[-1].positions, dtype=np.float64)
    if positions.shape != (len(names),):
        raise ValueError(f"last trajectory point has {positions.size} positions for {len(names)} joints")
    if not np.all(np.isfinite(positions)):
        raise ValueError(f"trajectory target contains NaN or Inf: {positions}")
    q = positions[[names.index(n) for n in JOINT_NAMES]]
    bad = np.flatnonzero((q < lower - tol) | (q > upper + tol))
    if bad.size:
        detail = ", ".join(
            f"{JOINT_NAMES[i]}={q[i]:.4f} not in [{lower[i]:.4f}, {upper[i]:.4f}]" for i in bad
        )
        raise ValueError(f"trajectory target outside joint limits: {detail}")
    return q
