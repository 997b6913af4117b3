"""Training procedures shared by the ROS trainer node, demos and benchmarks.

- `pretrain_offline`: gradient updates on the offline buffer only.
- `collect_episode`: run one episode in a gymnasium-style env by planning with the agent.
- `evaluate`: noise-free episodes on fixed seeds -> mean return and success rate.
- `finetune_online`: FOWM's loop: collect one episode with exploration noise, store it in the
  online buffer, then do round(len(episode) * utd) updates on balanced offline/online batches.

Any env works whose reset(seed) returns (obs, info) and step(a) returns (obs, reward,
terminated, truncated, info), with dict observations matching the agent's obs_spec. An episode
succeeds if info["success"] is true at any step, as in the official FOWM evaluation and everywhere
else in this stack (the sim node's episode events, fowm-collect, teleop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from fowm_core.buffer import BalancedSampler, Episode, EpisodeBuffer
from fowm_core.metrics import MetricsLogger

Obs = dict[str, np.ndarray]


class Env(Protocol):
    """The gymnasium-style environment interface these procedures use."""

    def reset(self, seed: int | None = None) -> tuple[Obs, dict]: ...

    def step(self, action: np.ndarray) -> tuple[Obs, float, bool, bool, dict]: ...


# (obs, first_step) -> action (A,) float32; used instead of the agent, e.g. a scripted expert.
Policy = Callable[[Obs, bool], np.ndarray]


def _mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0]}


def _per(agent: Any) -> tuple[float, float]:
    """(alpha, beta) of the agent's prioritised replay; (0, 0) draws uniformly."""
    replay = agent.cfg.replay
    return (replay.alpha, replay.beta) if replay.prioritised else (0.0, 0.0)


def _update(agent: Any, batch: Any, source: EpisodeBuffer | BalancedSampler) -> dict[str, float]:
    """One agent update on `batch`, then its windows' new priorities back to `source`."""
    device = getattr(agent.cfg, "device", "cpu")
    metrics = agent.update(batch if device == "cpu" else batch.to(device))
    if agent.cfg.replay.prioritised and getattr(agent, "td_priority", None) is not None:
        if isinstance(source, BalancedSampler):
            source.update_priorities(batch, agent.td_priority)
        else:
            source.update_priorities(batch.index, agent.td_priority)
    return metrics


def pretrain_offline(
    agent: Any,
    buffer: EpisodeBuffer,
    num_updates: int,
    logger: MetricsLogger | None = None,
    progress: bool = True,
    rng: np.random.Generator | None = None,
    log_every: int = 100,
) -> list[dict[str, float]]:
    """`num_updates` updates on batches of cfg.optim.batch_size windows drawn from `buffer`
    (prioritised as cfg.replay says). Returns every update's metrics; logs their mean every
    `log_every` updates under "offline/". Pass `rng` (and checkpoint its state) to make a resumed
    run draw the same batches."""
    if num_updates < 0:
        raise ValueError(f"num_updates must be >= 0, got {num_updates}")
    if buffer.num_windows == 0:
        raise ValueError("the offline buffer holds no training windows; add episodes first")
    if buffer.horizon != agent.cfg.optim.horizon:
        raise ValueError(f"buffer horizon {buffer.horizon} != cfg.optim.horizon {agent.cfg.optim.horizon}")
    rng = rng if rng is not None else np.random.default_rng(agent.cfg.seed)
    history: list[dict[str, float]] = []
    alpha, beta = _per(agent)
    for i in tqdm(range(num_updates), desc="offline", disable=not progress, leave=False):
        history.append(_update(agent, buffer.sample(agent.cfg.optim.batch_size, rng, alpha, beta), buffer))
        if logger is not None and ((i + 1) % log_every == 0 or i + 1 == num_updates):
            logger.log(agent.num_updates, _mean_metrics(history[-log_every:]), prefix="offline/")
    return history


def collect_episode(
    agent: Any,
    env: Env,
    explore: bool,
    seed: int | None = None,
    policy: Policy | None = None,
    max_steps: int = 10_000,
) -> Episode:
    """Run one episode; actions come from agent.act (planning; `explore` adds the planner's
    exploration noise) or from `policy` when given. Observations are checked against
    agent.obs_spec (or skipped when agent is None). episode.info["success"]: at any step."""
    spec = agent.obs_spec if agent is not None else None
    if agent is None and policy is None:
        raise ValueError("collect_episode needs an agent or a policy")

    def checked(obs: Obs) -> Obs:
        if spec is not None:
            spec.validate(obs)
        return {k: np.array(v, copy=True) for k, v in obs.items()}  # envs may reuse their arrays

    obs, _ = env.reset(seed=seed)
    observations, actions, rewards = [checked(obs)], [], []
    terminated = truncated = success = False
    while not (terminated or truncated):
        first = not actions
        if policy is not None:
            action = np.asarray(policy(observations[-1], first))
        else:
            action = np.asarray(agent.act(observations[-1], first_step=first, explore=explore))
        action = action.astype(np.float32, copy=False)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(checked(obs))
        actions.append(action)
        rewards.append(float(reward))
        success = success or bool(info.get("success", False))
        if len(actions) >= max_steps:
            truncated = True
    return Episode(
        obs={k: np.stack([o[k] for o in observations]) for k in observations[0]},  # (T+1, ...)
        action=np.stack(actions),  # (T, A)
        reward=np.asarray(rewards, dtype=np.float32),  # (T,)
        terminated=bool(terminated),
        truncated=not terminated,
        info={"success": success},
    )


def evaluate(
    agent: Any, env: Env, episodes: int = 10, seeds: Sequence[int] | None = None, policy: Policy | None = None
) -> dict[str, float]:
    """Mean return and success rate of noise-free episodes on `seeds` (default 10_000, 10_001, ...:
    fixed so evaluations during training are comparable)."""
    seeds = list(seeds) if seeds is not None else [10_000 + i for i in range(episodes)]
    if len(seeds) != episodes or episodes < 1:
        raise ValueError(f"evaluate needs episodes >= 1 and one seed each, got {episodes} and {len(seeds)}")
    runs = [collect_episode(agent, env, explore=False, seed=s, policy=policy) for s in seeds]
    return {
        "return": float(np.mean([e.episode_return for e in runs])),
        "success_rate": float(np.mean([e.info["success"] for e in runs])),
        "episodes": float(episodes),
    }


def finetune_online(
    agent: Any,
    env: Env,
    offline_buffer: EpisodeBuffer,
    online_buffer: EpisodeBuffer,
    episodes: int,
    utd: float | None = None,
    logger: MetricsLogger | None = None,
    progress: bool = True,
    sampler: BalancedSampler | None = None,
    seed: int = 0,
    eval_every: int = 0,
    eval_episodes: int = 10,
    eval_env: Env | None = None,
    on_episode: Callable[[int, dict[str, float]], None] | None = None,
    collect_policy: Policy | None = None,
) -> list[dict[str, float]]:
    """FOWM online finetuning for `episodes` episodes. Per episode: plan with exploration noise
    (uniform random actions for the first cfg.schedule.seed_steps online steps; `collect_policy`,
    e.g. a scripted expert for a controlled experiment, acts instead of the planner), add the
    episode to `online_buffer`, then round(len * utd) updates on batches with
    cfg.schedule.offline_fraction offline rows (utd defaults to cfg.schedule.utd).

    Every `eval_every` episodes (0: never) runs `evaluate` on `eval_env` (default `env`).
    `on_episode(i, row)` is called after each episode (e.g. to checkpoint or publish weights).
    Returns one row per episode: return, success, length, updates and mean losses."""
    cfg = agent.cfg
    utd = cfg.schedule.utd if utd is None else utd
    if episodes < 0 or utd <= 0:
        raise ValueError(f"need episodes >= 0 and utd > 0, got episodes={episodes}, utd={utd}")
    if sampler is None:
        sampler = BalancedSampler(offline_buffer, online_buffer, cfg.schedule.offline_fraction, seed=seed)
    action_rng = np.random.default_rng(seed + 1)
    action_dim = online_buffer.action_dim

    def random_policy(_obs: Obs, _first: bool) -> np.ndarray:
        return action_rng.uniform(-1.0, 1.0, action_dim).astype(np.float32)

    history: list[dict[str, float]] = []
    bar = tqdm(range(episodes), desc="online", disable=not progress, leave=False)
    for i in bar:
        seeding = online_buffer.num_transitions < cfg.schedule.seed_steps
        policy = random_policy if seeding else collect_policy
        episode = collect_episode(
            agent, env, explore=True, seed=seed + online_buffer.episodes_added, policy=policy
        )
        online_buffer.add(episode)
        alpha, beta = _per(agent)
        updates = [
            _update(agent, sampler.sample(cfg.optim.batch_size, alpha, beta), sampler)
            for _ in range(round(len(episode) * utd))
        ]
        row = {
            "episode": float(i),
            "return": episode.episode_return,
            "success": float(episode.info["success"]),
            "length": float(len(episode)),
            "updates": float(len(updates)),
            **_mean_metrics(updates),
        }
        if eval_every and (i + 1) % eval_every == 0:
            ev = evaluate(agent, eval_env or env, eval_episodes)
            row.update({f"eval_{k}": v for k, v in ev.items() if k != "episodes"})
        if logger is not None:
            logger.log(agent.num_updates, row, prefix="online/")
        bar.set_postfix(ret=f"{row['return']:.2f}", succ=int(row["success"]))
        history.append(row)
        if on_episode is not None:
            on_episode(i, row)
    return history
