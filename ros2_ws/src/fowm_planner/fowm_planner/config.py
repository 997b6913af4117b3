"""The planner node's one typed config: every field is a ROS parameter (its doc is the description),
values come from fowm_bringup/config/planner.yaml, and __post_init__ validates them."""

from __future__ import annotations

from dataclasses import dataclass, field

from fowm_core.config import FOWMConfig, load_config, parse_overrides
from fowm_xarm.command import ActionMapper, SafetyLimits
from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.limits import WorkspaceLimits
from fowm_xarm.observation import SIM_CAMERA_CROP, ObservationConfig
from fowm_xarm.ros_node import param

CLOCK_MODES = ("realtime", "lockstep")
FALLBACKS = ("policy", "hold")
POLICIES = ("plan", "prior", "random")
OBSERVATIONS = ("rgb+state", "rgb", "state")



@dataclass
class PlannerNodeConfig:
    """Parameters of the planner node (read once at startup)."""

    # -- model -----------------------------------------------------------------------------------
    preset: str = param("realtime-cpu", "fowm_core preset (paper, realtime-cpu) or a config YAML path")
    observations: str = param("rgb+state", "model inputs: rgb+state, rgb or state (must match the weights)")
    weights_file: str = param("", "weights file to start from; empty: the preset's seeded random init")
    device: str = param("", "torch device (cpu, cuda); empty: the preset's. cuda without a GPU: cpu")
    torch_threads: int = param(1, "torch.set_num_threads (1 leaves cores to the sim and the trainer)")
    task: str = param(
        "", "task whose section of the preset (its tasks: mapping) applies before the overrides; '': none"
    )
    overrides: list[str] = field(
        default_factory=list,
        metadata={
            "doc": "fowm_core preset overrides dotted.key=value ('' entries ignored), e.g."
            " planner.compile=true; model.* must match the trainer's"
        },
    )
    policy: str = param(
        "plan",
        "plan (FOWM planning), prior (the policy network alone, no planning) or random (uniform actions); "
        "all go through the same safety layer",
    )
    explore: bool = param(False, "add the planner's exploration noise (online data); false: evaluation")
    # -- weights ---------------------------------------------------------------------------------
    key_file: str = param("", "HMAC key file (fowm-keygen) that weight updates must be signed with")
    require_signature: bool = param(True, "reject unsigned weight updates; false only for the sim (warns)")
    # -- control loop ----------------------------------------------------------------------------
    clock_mode: str = param(
        "realtime", "realtime (a timer every control_period) or lockstep (one plan per new observation stamp)"
    )
    control_period: float = param(0.16, "seconds between commands; also each trajectory's time_from_start")
    plan_budget: float = param(
        0.12, "realtime deadline for one plan (s); a plan predicted or measured slower counts as a miss"
    )
    deadline_fallback: str = param("policy", "on a deadline miss: policy (the policy net's action) or hold")
    plan_in_thread: bool = param(
        True, "realtime: plan on a worker thread against a real deadline; false: in the timer callback"
    )
    lockstep_settle: float = param(
        0.03, "lockstep: wall seconds to wait after a new observation for episode events sent with it"
    )
    autostart: bool = param(True, "command from the start; false: wait for ~/start")
    pause_after_episode: bool = param(
        False, "stop at each episode's end until ~/start (an orchestrator swaps weights between episodes)"
    )
    # -- watchdog --------------------------------------------------------------------------------
    stale_periods: float = param(3.0, "inputs older than this many control periods are stale: hold")
    log_throttle: float = param(2.0, "seconds between repeated watchdog log lines")
    diagnostics_period: float = param(1.0, "seconds between /diagnostics messages")
    # -- observation and action path (fowm_xarm) -------------------------------------------------
    image_size: int = param(84, "side of the square rgb observation (ObservationConfig.image_size)")
    image_crop: list[int] = field(
        default_factory=lambda: list(SIM_CAMERA_CROP),
        metadata={"doc": "square ROI x, y, w, h of the camera frame shrunk to image_size; []: centre square"},
    )
    max_delta_m: float = param(0.05, "TCP displacement (m) of an action component of +-1")
    # -- safety layer (fowm_xarm.command.SafetyLimits) -------------------------------------------
    max_joint_step_rad: float = param(0.3, "largest joint target change per tick from the measurement (rad)")
    joint_margin_rad: float = param(0.0, "targets stay this far inside the joint position limits (rad)")
    workspace_min: list[float] = field(
        default_factory=lambda: [0.25, -0.30, 0.015], metadata={"doc": "TCP box low corner x, y, z (m)"}
    )
    workspace_max: list[float] = field(
        default_factory=lambda: [0.65, 0.30, 0.45], metadata={"doc": "TCP box high corner x, y, z (m)"}
    )
    workspace_tol_m: float = param(0.01, "slack on the workspace box for IK residuals (m)")
    gripper_min: float = param(0.0, "smallest gripper opening command (0 closed)")
    gripper_max: float = param(1.0, "largest gripper opening command (1 open)")

    def __post_init__(self) -> None:
        if self.observations not in OBSERVATIONS:
            raise ValueError(f"observations must be one of {OBSERVATIONS}, got {self.observations!r}")
        if self.clock_mode not in CLOCK_MODES:
            raise ValueError(f"clock_mode must be one of {CLOCK_MODES}, got {self.clock_mode!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if self.deadline_fallback not in FALLBACKS:
            raise ValueError(f"deadline_fallback must be one of {FALLBACKS}, got {self.deadline_fallback!r}")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        self.overrides = [o for o in self.overrides if o]
        self.fowm_config()  # the preset and the overrides resolve to a valid fowm_core config
        if not self.control_period > 0:
            raise ValueError(f"control_period must be > 0 s, got {self.control_period}")
        if self.plan_budget < 0:
            raise ValueError(f"plan_budget must be >= 0 s (0 disables the deadline), got {self.plan_budget}")
        if not 0 <= self.lockstep_settle <= 1.0:
            raise ValueError(f"lockstep_settle must be in [0, 1] s, got {self.lockstep_settle}")
        if not self.stale_periods >= 1:
            raise ValueError(f"stale_periods must be >= 1, got {self.stale_periods}")
        if not self.diagnostics_period > 0 or self.log_throttle < 0:
            raise ValueError("diagnostics_period must be > 0 and log_throttle >= 0")
        for name in ("workspace_min", "workspace_max"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must hold x, y, z, got {getattr(self, name)}")
        self.safety_limits()  # validates the safety values (SafetyLimits/WorkspaceLimits raise)
        self.observation_config()  # and the crop

    def fowm_config(self) -> FOWMConfig:
        """The agent's fowm_core config: the preset, its section for `task`, then `overrides` (the
        device is applied later, when the agent is built, since it depends on what torch sees)."""
        return load_config(self.preset, parse_overrides(self.overrides), task=self.task)

    def observation_config(self) -> ObservationConfig:
        return ObservationConfig(image_size=self.image_size, crop=tuple(self.image_crop) or None)

    def min_frame_hw(self) -> tuple[int, int]:
        """Smallest (height, width) of a camera frame the observation path accepts."""
        crop = self.observation_config().crop
        if crop is None:
            return self.image_size, self.image_size
        x, y, w, h = crop
        return y + h, x + w

    def workspace(self) -> WorkspaceLimits:
        (x0, y0, z0), (x1, y1, z1) = self.workspace_min, self.workspace_max
        return WorkspaceLimits(x_min=x0, x_max=x1, y_min=y0, y_max=y1, z_min=z0, z_max=z1)

    def safety_limits(self) -> SafetyLimits:
        return SafetyLimits(
            max_joint_step_rad=self.max_joint_step_rad,
            joint_margin_rad=self.joint_margin_rad,
            workspace=self.workspace(),
            workspace_tol_m=self.workspace_tol_m,
            gripper_min=self.gripper_min,
            gripper_max=self.gripper_max,
        )

    def action_mapper(self) -> ActionMapper:
        """fowm_xarm's action path with this config's safety limits (and kinematics for its workspace)."""
        kinematics = XArm7Kinematics(workspace=self.workspace())
        return ActionMapper(kinematics, self.max_delta_m, self.safety_limits())

    @property
    def observation_keys(self) -> tuple[str, ...]:
        return tuple(self.observations.split("+"))

    @property
    def deadline_enabled(self) -> bool:
        """Lockstep sim time stands still while the node plans, so only realtime has a deadline."""
        return self.clock_mode == "realtime" and self.plan_budget > 0
