"""Typed configuration of the FOWM agent: one dataclass per component.

Defaults are the `paper` preset (FOWM, xArm tasks). YAML presets and override dicts are only
transports for these dataclasses: `load_config` rejects unknown keys (naming the dotted key),
wrong types and out-of-range values with a ValueError.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS = ("paper", "realtime-cpu")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass
class ModelConfig:
    """Sizes of the TOLD world model."""

    latent_dim: int = 50
    """Size of the latent state z."""
    mlp_dim: int = 512
    """Hidden width of the dynamics, reward, policy, value and Q MLPs."""
    state_enc_dim: int = 256
    """Hidden width of the proprioceptive state encoder."""
    num_channels: int = 32
    """Channels of each of the 4 conv layers of the image encoder."""
    num_q: int = 5
    """Members of the Q-ensemble (the planner's uncertainty is their std)."""

    def __post_init__(self) -> None:
        for name in ("latent_dim", "mlp_dim", "state_enc_dim", "num_channels"):
            _check(getattr(self, name) >= 1, f"model.{name} must be >= 1, got {getattr(self, name)}")
        _check(self.num_q >= 2, f"model.num_q must be >= 2 (minQ draws two members), got {self.num_q}")


@dataclass
class PlannerConfig:
    """Uncertainty-penalised MPPI run at every control tick."""

    horizon: int = 5
    """Planning horizon H (model steps)."""
    iterations: int = 6
    """MPPI refinement iterations per plan."""
    num_samples: int = 512
    """Gaussian action sequences sampled per iteration."""
    num_pi_trajs: int = 51
    """Action sequences proposed by rolling out the policy (with min_std noise)."""
    num_elites: int = 50
    """Best sequences used to refit the sampling distribution."""
    temperature: float = 0.5
    """Inverse temperature of the exp(temperature * (G - max G)) elite weights."""
    momentum: float = 0.1
    """Weight of the previous mean when refitting (mean = m * old + (1 - m) * new)."""
    min_std: float = 0.05
    """Lower clamp of the sampling std (also the policy-proposal noise)."""
    max_std: float = 2.0
    """Upper clamp and initial value of the sampling std."""
    uncertainty_coef: float = 1.0
    """lambda: penalty on the Q-ensemble std in the planning return (0 disables; tdmpc mode forces 0)."""
    discount: float = 0.9
    """gamma used in the planning return."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the planner's copy of the model; actions are always returned as float32."""
    compile: bool = False
    """torch.compile the whole plan (CUDA graphs on a GPU), once per shape: several times faster plans
    after a first plan of 10-60 s; the planner node pays it in `warmup`, before its first tick."""
    fuse: bool = True
    """Score with the dynamics, reward and Q heads stacked into one batched matmul per layer and step
    (WorldModel only; other models always go through their methods). Same returns up to rounding."""

    def __post_init__(self) -> None:
        for name in ("horizon", "iterations", "num_samples", "num_elites"):
            _check(getattr(self, name) >= 1, f"planner.{name} must be >= 1, got {getattr(self, name)}")
        _check(self.num_pi_trajs >= 0, f"planner.num_pi_trajs must be >= 0, got {self.num_pi_trajs}")
        _check(
            self.num_elites <= self.num_samples + self.num_pi_trajs,
            f"planner.num_elites ({self.num_elites}) exceeds num_samples + num_pi_trajs "
            f"({self.num_samples + self.num_pi_trajs})",
        )
        _check(self.temperature > 0, f"planner.temperature must be > 0, got {self.temperature}")
        _check(0.0 <= self.momentum < 1.0, f"planner.momentum must be in [0, 1), got {self.momentum}")
        _check(
            0.0 < self.min_std <= self.max_std,
            f"planner needs 0 < min_std <= max_std, got min_std={self.min_std}, max_std={self.max_std}",
        )
        _check(
            self.uncertainty_coef >= 0, f"planner.uncertainty_coef must be >= 0, got {self.uncertainty_coef}"
        )
        _check(0.0 < self.discount <= 1.0, f"planner.discount must be in (0, 1], got {self.discount}")


@dataclass
class OptimConfig:
    """One gradient update on length-H subsequences."""

    batch_size: int = 256
    """Subsequences per batch."""
    horizon: int = 5
    """Subsequence length H used in the update."""
    rho: float = 0.5
    """Temporal weight rho^t of the loss at step t."""
    lr: float = 3e-4
    """Adam learning rate (model and policy optimisers)."""
    grad_clip_norm: float = 10.0
    """Global gradient-norm clip of each optimiser."""
    consistency_coef: float = 20.0
    """Weight of the latent consistency loss."""
    reward_coef: float = 0.5
    """Weight of the reward regression loss."""
    online_reward_weight: float = 1.0
    """Multiplies the reward loss of the rows drawn from the online buffer (the acting agent's own
    episodes) in batches that mix them with offline rows; offline rows keep weight 1. 1.0 is FOWM's
    (the official code fits the reward head to every row); 0.0 fits it to the offline data only. Q, V,
    dynamics and policy learn from every row either way (the Q targets use the online episodes' true
    rewards). Batches without offline rows (no offline data) are not affected."""
    q_coef: float = 0.1
    """Weight of the Q regression loss."""
    v_coef: float = 0.1
    """Weight of the expectile V loss (fowm mode only)."""
    expectile: float = 0.9
    """tau of the expectile V loss (0.9 for xArm tasks, 0.7 elsewhere)."""
    awr_beta: float = 3.0
    """Inverse temperature beta of the advantage weights exp(beta * adv)."""
    awr_max_weight: float = 100.0
    """Clip of the advantage weights."""
    discount: float = 0.9
    """gamma of the TD targets."""
    ema_tau: float = 0.01
    """Polyak rate of the target encoder and target Qs."""
    target_update_freq: int = 2
    """Updates between EMA steps."""
    image_pad: int = 4
    """Random-shift augmentation pad in pixels (0 disables)."""
    amp_dtype: Literal["float32", "bfloat16"] = "float32"
    """Autocast dtype of the update's forward pass (bfloat16: ~4x the matmul rate on CPUs with AMX or
    AVX512-BF16, and on CUDA); parameters, optimiser states and losses stay float32."""

    compile: bool = False
    """torch.compile the update's latent rollout, heads and losses (forward and backward) and the
    policy loss, once, on the first update (tens of seconds on a CPU): fewer, fused kernels instead
    of ~1400 small ops per update. The convolutions stay oneDNN's."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "horizon", "target_update_freq"):
            _check(getattr(self, name) >= 1, f"optim.{name} must be >= 1, got {getattr(self, name)}")
        _check(0.0 < self.rho <= 1.0, f"optim.rho must be in (0, 1], got {self.rho}")
        _check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        _check(self.grad_clip_norm > 0, f"optim.grad_clip_norm must be > 0, got {self.grad_clip_norm}")
        coefs = ("consistency_coef", "reward_coef", "online_reward_weight", "q_coef", "v_coef", "awr_beta")
        for name in coefs:
            _check(getattr(self, name) >= 0, f"optim.{name} must be >= 0, got {getattr(self, name)}")
        _check(0.0 < self.expectile < 1.0, f"optim.expectile must be in (0, 1), got {self.expectile}")
        _check(self.awr_max_weight > 0, f"optim.awr_max_weight must be > 0, got {self.awr_max_weight}")
        _check(0.0 < self.discount <= 1.0, f"optim.discount must be in (0, 1], got {self.discount}")
        _check(0.0 < self.ema_tau <= 1.0, f"optim.ema_tau must be in (0, 1], got {self.ema_tau}")
        _check(self.image_pad >= 0, f"optim.image_pad must be >= 0, got {self.image_pad}")


@dataclass
class ReplayConfig:
    """How training windows are drawn from each buffer (the official code's prioritised replay)."""

    prioritised: bool = True
    """Prioritised replay on every buffer: P(window) ~ priority^alpha, priority = the Q-ensemble's
    rho-weighted absolute TD error of the window's last update (new windows: the buffer's max)."""
    alpha: float = 0.6
    """Priority exponent (0: uniform)."""
    beta: float = 0.4
    """Importance-weight exponent: each window's model loss is scaled by (N P)^-beta / max over the batch."""

    def __post_init__(self) -> None:
        _check(self.alpha >= 0, f"replay.alpha must be >= 0, got {self.alpha}")
        _check(0.0 <= self.beta <= 1.0, f"replay.beta must be in [0, 1], got {self.beta}")


@dataclass
class ScheduleConfig:
    """Offline pretraining followed by online finetuning."""

    offline_updates: int = 25_000
    """Gradient updates on the offline buffer before going online."""
    online_episodes: int = 20
    """Episodes collected by planning during finetuning."""
    offline_fraction: float = 0.5
    """Share of each online-phase batch drawn from the offline buffer."""
    utd: float = 1.0
    """Updates per collected environment step (update-to-data ratio)."""
    buffer_capacity: int = 100_000
    """Transitions kept in each replay buffer."""
    episode_length: int = 25
    """Decisions per episode (0.16 s each, 6.25 Hz)."""
    seed_steps: int = 0
    """Online steps with uniform random actions before planning (0: the offline model acts at once)."""
    fresh_online_optimisers: bool = False
    """In-process runs (make eval, make demo-inprocess): start the online phase with new Adam
    optimisers, as the online trainer node does (it loads pretrained weights, not optimiser state),
    instead of the moments carried over from offline pretraining. False is the official code, which
    pretrains and finetunes in one process without resetting them."""

    def __post_init__(self) -> None:
        for name in ("offline_updates", "online_episodes", "seed_steps"):
            _check(getattr(self, name) >= 0, f"schedule.{name} must be >= 0, got {getattr(self, name)}")
        _check(
            0.0 <= self.offline_fraction <= 1.0,
            f"schedule.offline_fraction must be in [0, 1], got {self.offline_fraction}",
        )
        _check(self.utd > 0, f"schedule.utd must be > 0, got {self.utd}")
        _check(
            self.buffer_capacity >= 1, f"schedule.buffer_capacity must be >= 1, got {self.buffer_capacity}"
        )
        _check(self.episode_length >= 1, f"schedule.episode_length must be >= 1, got {self.episode_length}")


@dataclass
class FOWMConfig:
    """Everything that defines an agent."""

    mode: Literal["fowm", "tdmpc"] = "fowm"
    """fowm: IQL-style value learning + uncertainty-penalised planning; tdmpc: the TD-MPC baseline."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """World model sizes."""
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    """Planner settings."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Update settings."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    """Window sampling (prioritised replay)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Offline/online schedule."""
    device: str = "cpu"
    """torch device of the model and planner ("cpu", "cuda", "cuda:1", ...)."""
    seed: int = 1
    """Seed of the parameter init, planner sampling and augmentation."""

    def __post_init__(self) -> None:
        _check(self.mode in ("fowm", "tdmpc"), f"mode must be 'fowm' or 'tdmpc', got {self.mode!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device {self.device!r} is not a torch device: {e}") from None


def config_to_dict(cfg: FOWMConfig) -> dict[str, Any]:
    """Plain nested dict (YAML/JSON-serialisable) of a config."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: FOWMConfig) -> str:
    """sha256 hex of the fields that shape the weights (the `model` section). Two configs with the
    same hash produce interchangeable weight files (given the same observation spec and action dim)."""
    payload = json.dumps(dataclasses.asdict(cfg.model), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def parse_overrides(items: typing.Iterable[str]) -> dict[str, Any]:
    """Dotted key=value strings -> the nested dict `load_config` takes; values are parsed as YAML:
    ['optim.batch_size=128', 'planner.compile=true'] -> {'optim': {'batch_size': 128}, 'planner':
    {'compile': True}}. The one parser of every command line (--set) and node parameter (overrides)."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a preset override must look like dotted.key=value, got {item!r}")
        *parents, leaf = key.strip().split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"preset override {item!r} sets a key below {part!r}, already a value")
        node[leaf] = yaml.safe_load(value)
    return nested


def load_config(
    preset_or_path: str = "paper", overrides: dict[str, Any] | None = None, task: str | None = None
) -> FOWMConfig:
    """Build a config from a preset name ("paper", "realtime-cpu") or a YAML path, then apply the
    file's section for `task` (None or "": none), then nested `overrides` such as
    {"planner": {"dtype": "bfloat16"}}.

    A config file may hold a top-level `tasks:` mapping, task name -> nested settings (as FOWM's
    cfgs/tasks/*.yaml over its config.yaml). Every section is validated on every load, so a typo in
    one task's section fails for all; a file with a `tasks:` mapping refuses a task it does not
    list (a misspelt task would otherwise silently get the base settings); a file without one
    takes any task. The built config does not keep the mapping."""
    if preset_or_path in PRESETS:
        path = PRESET_DIR / f"{preset_or_path}.yaml"
    else:
        path = Path(preset_or_path)
        if not path.is_file():
            raise ValueError(f"config {preset_or_path!r} is neither a preset {list(PRESETS)} nor a YAML file")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    tasks = data.pop("tasks", None) or {}
    if not isinstance(tasks, dict) or not all(isinstance(v, dict) for v in tasks.values()):
        raise ValueError(f"config file {path}: 'tasks' must map task names to settings, got {tasks!r}")
    if tasks:
        _build(FOWMConfig, data, prefix="")  # the base first, so its errors are not named after a task
    for name, section in tasks.items():
        _build(FOWMConfig, _deep_merge(data, section, prefix=""), prefix=f"tasks.{name}.")
    if task and tasks:
        if task not in tasks:
            raise ValueError(
                f"config {preset_or_path!r} has no section for task {task!r} (its tasks: "
                f"{', '.join(sorted(tasks))}); add one (an empty mapping keeps the base settings) or "
                "name no task"
            )
        data = _deep_merge(data, tasks[task], prefix="")
    if overrides:
        data = _deep_merge(data, overrides, prefix="")
    return _build(FOWMConfig, data, prefix="")


def _deep_merge(base: dict, over: dict, prefix: str) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v, f"{prefix}{k}.")
        else:
            out[k] = v
    return out


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key '{prefix}{unknown[0]}' (valid keys: {sorted(names)})")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{key}.")
        else:
            kwargs[name] = _coerce(hint, value, key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ValueError(f"config key '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    # bool is an int subclass: reject it explicitly so `horizon: true` is an error.
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key '{key}' must be an int, got {value!r}")
        return value
    if hint is float:
        # PyYAML (YAML 1.1) reads "3e-4" without a dot as a string; accept such numeric strings.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint} for '{key}'")
