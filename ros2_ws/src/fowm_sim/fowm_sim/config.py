"""Configuration of the simulated xArm7 world."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fowm_sim.tasks import PUSH_ACTION_PENALTY
from fowm_xarm.camera import Crop, crop_in_frame
from fowm_xarm.limits import WorkspaceLimits
from fowm_xarm.observation import SIM_CAMERA_CROP

TASKS = ("reach", "push", "lift")


@dataclass
class SimConfig:
    """Everything that shapes an XArmTaskEnv episode; defaults follow FOWM's xArm setup."""

    task: str = "reach"
    """Task name: one of 'reach', 'push', 'lift'."""
    control_period: float = 0.16
    """Seconds between decisions (6.25 Hz, as in FOWM)."""
    episode_length: int = 25
    """Decisions per episode; the episode is truncated after this many."""
    max_delta_m: float = 0.05
    """End-effector displacement (m) commanded by an action component of +-1."""
    physics_timestep: float = 0.002
    """MuJoCo timestep (s); control_period must be a whole multiple of it."""
    ramp_fraction: float = 0.75
    """Fraction of the control period over which joint targets are ramped in (the rest settles)."""
    image_size: int = 84
    """Side of the square rgb observation fed to the model."""
    camera_width: int = 640
    """Width of the full colour frame (D435 colour stream)."""
    camera_height: int = 480
    """Height of the full colour frame."""
    camera_fovy_deg: float = 42.5
    """Vertical field of view of the colour camera (D435 colour at 4:3 is ~55 x 42.5 deg)."""
    camera_pos: tuple[float, float, float] = (1.15, 0.0, 1.40)
    """Camera position in the robot base frame (m): in front of the robot and high (~61 deg above the
    table), far enough that the objects' size varies little across the workspace, so that every
    cube and goal position fits in one ROI where a 5 cm cube is >= 6 px of the 84x84 input."""
    camera_lookat: tuple[float, float, float] = (0.44, 0.0, 0.10)
    """Point the camera's optical axis passes through (m)."""
    image_crop: Crop | None = SIM_CAMERA_CROP
    """Square ROI (x, y, w, h) of the full frame that becomes the rgb observation (the shared
    ObservationConfig.crop); None = the central square."""
    obs_from_full_frame: bool = True
    """True: rgb obs = preprocess_rgb of the full 640x480 frame, exactly the real robot's path.
    False: render image_size x image_size directly through a second camera whose frustum is exactly
    the ROI (faster; differs only by anti-aliasing, see tests/fowm_sim/test_camera_view.py)."""
    initial_ee_noise_m: float = 0.02
    """Half-width of the uniform noise on the TCP start position around (0.4, 0, 0.25)."""
    cube_half_size_m: float = 0.025
    """Half the edge of the manipulated cube (5 cm cube)."""
    cube_mass_kg: float = 0.1
    """Mass of the cube."""
    workspace: WorkspaceLimits = field(default_factory=WorkspaceLimits)
    """Box the TCP is kept inside."""
    push_action_penalty: float = PUSH_ACTION_PENALTY
    """c of push's reward -(||cube - goal|| + c ||a_xyz||^2). FOWM uses 0.15 (FOWM_PUSH_ACTION_PENALTY);
    here that makes standing still worth more than pushing at gamma 0.9, so the default is 0.02."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"SimConfig.task must be one of {TASKS}, got {self.task!r}")
        if self.control_period <= 0 or self.physics_timestep <= 0:
            raise ValueError("SimConfig.control_period and physics_timestep must be > 0")
        ratio = self.control_period / self.physics_timestep
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(
                f"SimConfig.control_period ({self.control_period}) must be a whole multiple of "
                f"physics_timestep ({self.physics_timestep})"
            )
        if self.episode_length < 1:
            raise ValueError(f"SimConfig.episode_length must be >= 1, got {self.episode_length}")
        if not 0 < self.max_delta_m <= 0.2:
            raise ValueError(f"SimConfig.max_delta_m must be in (0, 0.2] m, got {self.max_delta_m}")
        if not 0 < self.ramp_fraction <= 1:
            raise ValueError(f"SimConfig.ramp_fraction must be in (0, 1], got {self.ramp_fraction}")
        if self.image_size < 8:
            raise ValueError(f"SimConfig.image_size must be >= 8, got {self.image_size}")
        if min(self.camera_width, self.camera_height) < self.image_size:
            raise ValueError(
                f"camera frame {self.camera_width}x{self.camera_height} is smaller than image_size "
                f"{self.image_size}"
            )
        if self.image_crop is not None:
            try:
                crop = crop_in_frame(self.camera_width, self.camera_height, self.image_crop)
            except ValueError as exc:
                raise ValueError(f"SimConfig.image_crop: {exc}") from None
            if crop[2] < self.image_size:
                raise ValueError(
                    f"SimConfig.image_crop side {crop[2]} is smaller than image_size {self.image_size}"
                )
            self.image_crop = crop
        if not 1 < self.camera_fovy_deg < 170:
            raise ValueError(f"SimConfig.camera_fovy_deg must be in (1, 170), got {self.camera_fovy_deg}")
        if np.linalg.norm(np.subtract(self.camera_lookat, self.camera_pos)) < 1e-3:
            raise ValueError("SimConfig.camera_lookat must differ from camera_pos")
        if not (np.isfinite(self.push_action_penalty) and self.push_action_penalty >= 0):
            raise ValueError(
                f"SimConfig.push_action_penalty must be finite and >= 0, got {self.push_action_penalty!r}"
            )
        if self.initial_ee_noise_m < 0 or self.initial_ee_noise_m > 0.1:
            raise ValueError(
                f"SimConfig.initial_ee_noise_m must be in [0, 0.1] m, got {self.initial_ee_noise_m}"
            )
        if not 0.01 <= self.cube_half_size_m <= 0.035:
            raise ValueError(
                f"SimConfig.cube_half_size_m must be in [0.01, 0.035] m (the gripper opens to 0.08 m), "
                f"got {self.cube_half_size_m}"
            )
        if self.cube_mass_kg <= 0:
            raise ValueError(f"SimConfig.cube_mass_kg must be > 0, got {self.cube_mass_kg}")

    @property
    def substeps(self) -> int:
        """Physics steps per decision."""
        return round(self.control_period / self.physics_timestep)
