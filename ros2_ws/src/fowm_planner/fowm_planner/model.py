"""Building the planner's FOWMAgent, warmup and the value estimate for diagnostics (the deadline fallback is
FOWMAgent.act_prior, the policy network's action).

The agent is built here once, so the node and the in-process reference (tests, benchmarks) act
with exactly the same agent for the same config and weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fowm_core.agent import FOWMAgent
from fowm_core.config import load_config, parse_overrides
from fowm_core.runtime import configure_process
from fowm_core.specs import ObservationSpec
from fowm_core.weights import WeightsMetadata, load_weights_into, weights_sha256
from fowm_xarm.command import ACTION_DIM
from fowm_xarm.observation import RGB_KEY, STATE_DIM, STATE_KEY

log = logging.getLogger(__name__)


def observation_spec(keys: tuple[str, ...], image_size: int) -> ObservationSpec:
    """The model's observation spec for the fowm_xarm observation modalities `keys`."""
    return ObservationSpec.make(
        rgb=(3, image_size, image_size) if RGB_KEY in keys else None,
        state_dim=STATE_DIM if STATE_KEY in keys else None,
    )


def resolve_device(requested: str) -> str:
    """`requested` if usable; cuda without a GPU falls back to cpu (with a warning)."""
    if requested.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %r requested but CUDA is not available: planning on cpu", requested)
        return "cpu"
    return requested


def build_agent(
    preset: str,
    keys: tuple[str, ...],
    image_size: int,
    weights_file: str = "",
    device: str = "",
    torch_threads: int = 1,
    overrides: Sequence[str] = (),
    task: str | None = None,
) -> tuple[FOWMAgent, WeightsMetadata | None, str]:
    """The agent of a preset (with its section for `task`, if any) and dotted `overrides` (key=value)
    for observations `keys`, with `weights_file` loaded (validated) if given; a non-empty `device`
    wins over the config's.
    Returns (agent, weights metadata or None, sha256 of the weights file or "")."""
    configure_process(torch_threads)
    nested: dict[str, Any] = parse_overrides(overrides)
    if device:
        nested["device"] = resolve_device(device)
    cfg = load_config(preset, nested, task=task)
    if cfg.device != "cpu":
        cfg.device = resolve_device(cfg.device)
    agent = FOWMAgent(cfg, observation_spec(keys, image_size), ACTION_DIM)
    meta, sha = None, ""
    if weights_file:
        meta = load_weights_into(agent, weights_file)
        with open(weights_file, "rb") as f:
            sha = weights_sha256(f.read())
    return agent, meta, sha


def obs_tensors(agent: FOWMAgent, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """One observation as unbatched tensors on the agent's device."""
    return {k: torch.as_tensor(np.asarray(obs[k])).to(agent.device) for k in agent.obs_spec.modalities}


@torch.inference_mode()
def value_estimate(agent: FOWMAgent, obs: dict[str, np.ndarray], action: np.ndarray) -> dict[str, float]:
    """Q-ensemble mean and std at (h(obs), action): the predicted return and uncertainty of the
    executed action, for diagnostics when the planner does not report its own."""
    x = {k: v[None] for k, v in obs_tensors(agent, obs).items()}
    z = agent.model.encode(x)
    a = torch.as_tensor(np.asarray(action, np.float32))[None].to(z.device, z.dtype)
    q = agent.model.q_all(z, a).float()  # (E, 1, 1)
    return {"predicted_return": float(q.mean()), "uncertainty": float(q.std(0).mean())}


def plan_info(agent: FOWMAgent) -> dict[str, float]:
    """The planner's report of its last plan: predicted return, uncertainty and latency (empty
    before the first plan)."""
    return dict(agent.planner.last_plan_info)


def warmup(agent: FOWMAgent, obs: dict[str, np.ndarray]) -> float:
    """Compile/warm the planner ahead of the first tick (and after a weight swap); seconds taken.
    The planner's warmup restores its RNG and warm start, so it changes no later plan."""
    # act() would hand the planner the model, but it consumes the planner's RNG: do it directly.
    agent.planner.set_model(agent.model)
    agent._planner_stale = False
    return float(agent.planner.warmup(obs_tensors(agent, obs)))
