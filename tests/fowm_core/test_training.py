"""Training procedures on the point-mass task: collection, balanced finetuning bookkeeping,
exact resumption from a checkpoint, and the metrics logger."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fowm_core.agent import FOWMAgent
from fowm_core.buffer import BalancedSampler, EpisodeBuffer
from fowm_core.config import load_config
from fowm_core.metrics import MetricsLogger, plot_learning_curves, read_jsonl
from fowm_core.toy_env import POINT_MASS_OVERRIDES, PointMassEnv, make_expert_dataset
from fowm_core.training import collect_episode, evaluate, finetune_online, pretrain_offline
from fowm_core.weights import WeightsError, load_checkpoint, save_checkpoint

TINY = {**POINT_MASS_OVERRIDES, "optim": {"batch_size": 16}, "planner": {
    "num_samples": 16, "num_pi_trajs": 4, "num_elites": 4, "iterations": 2}}  # fmt: skip



def build(seed: int = 0) -> tuple[FOWMAgent, EpisodeBuffer, EpisodeBuffer, BalancedSampler]:
    env = PointMassEnv()
    agent = FOWMAgent(load_config("paper", {**TINY, "seed": seed}), env.obs_spec, env.action_dim)
    offline = EpisodeBuffer(env.obs_spec, env.action_dim, 1000, horizon=5)
    online = EpisodeBuffer(env.obs_spec, env.action_dim, 1000, horizon=5)
    return agent, offline, online, BalancedSampler(offline, online, 0.5, seed=seed)


def test_collect_episode_and_evaluate_follow_the_env() -> None:
    env = PointMassEnv()
    agent = build()[0]
    ep = collect_episode(agent, env, explore=True, seed=3)
    assert len(ep) == 25 and ep.obs["state"].shape == (26, 4) and ep.action.shape == (25, 2)
    assert ep.truncated and not ep.terminated
    assert np.all(np.abs(ep.action) <= 1.0)
    # The recorded rewards are the env's: -distance between the stored next position and goal.
    dist = np.linalg.norm(ep.obs["state"][1:, :2] - ep.obs["state"][1:, 2:], axis=1)
    np.testing.assert_allclose(ep.reward, -dist, atol=1e-5)
    assert np.array_equal(ep.obs["state"][0], env.reset(seed=3)[0]["state"])
    expert = make_expert_dataset(5, noise=0.0, seed=1)
    assert all(e.info["success"] for e in expert)  # the noise-free expert always reaches
    ev = evaluate(None, env, 5, policy=lambda o, f: np.zeros(2, np.float32))
    assert ev["success_rate"] == 0.0 and ev["return"] < -10  # standing still never reaches
    with pytest.raises(ValueError, match="one seed each"):
        evaluate(agent, env, 3, seeds=[1, 2])


def test_an_episode_succeeds_if_any_step_succeeds() -> None:
    """As in the official FOWM evaluation and the sim node: reaching the goal and then drifting off
    it still counts (the last step alone would say failure)."""
    env = PointMassEnv()
    decisions = []

    def reach_then_leave(o, first):
        if first:
            decisions.clear()
        decisions.append(None)
        to_goal = o["state"][2:] - o["state"][:2]
        if len(decisions) <= 12:  # go to the goal (the policy's step is clipped, so it settles on it)
            return np.clip(to_goal / env.config.step_size, -1, 1).astype(np.float32)
        return -np.sign(to_goal + 1e-6).astype(np.float32)  # then walk away from it

    ep = collect_episode(None, env, explore=False, seed=3, policy=reach_then_leave)
    dist = np.linalg.norm(ep.obs["state"][:, :2] - ep.obs["state"][:, 2:], axis=1)
    assert dist.min() < env.config.success_radius < dist[-1], dist  # reached the goal, ended off it
    assert ep.info["success"]
    assert evaluate(None, env, 1, seeds=[3], policy=reach_then_leave)["success_rate"] == 1.0


class WrongObsEnv(PointMassEnv):
    def reset(self, seed=None, options=None):
        obs, info = super().reset(seed)
        return {"state": obs["state"].astype(np.float64)}, info


def test_collect_rejects_observations_that_do_not_match_the_spec() -> None:
    with pytest.raises(ValueError, match="dtype float64"):
        collect_episode(build()[0], WrongObsEnv(), explore=False, seed=0)


def test_finetune_online_does_utd_updates_per_step_and_balances_batches() -> None:
    agent, offline, online, _ = build()
    for e in make_expert_dataset(4, noise=0.5, seed=0):
        offline.add(e)
    pretrain_offline(agent, offline, 3, progress=False)
    assert agent.num_updates == 3
    rows = finetune_online(agent, PointMassEnv(), offline, online, episodes=2, utd=0.4, progress=False,
                           eval_every=2, eval_episodes=2)
    assert [r["updates"] for r in rows] == [10.0, 10.0]  # round(25 * 0.4)
    assert agent.num_updates == 23 and online.num_episodes == 2 and offline.num_episodes == 4
    assert "eval_success_rate" in rows[1] and "eval_success_rate" not in rows[0]
    assert all(np.isfinite(r["consistency_loss"]) for r in rows)


def test_checkpoint_resumes_training_exactly(tmp_path) -> None:
    env = PointMassEnv()
    agent, offline, online, sampler = build()
    for e in make_expert_dataset(4, noise=0.5, seed=0):
        offline.add(e)
    finetune_online(agent, env, offline, online, episodes=1, utd=0.2, sampler=sampler, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, agent, {"offline": offline, "online": online}, sampler, extra={"episode": 1})
    finetune_online(agent, env, offline, online, episodes=2, utd=0.2, sampler=sampler, progress=False)

    fresh, off2, on2, sampler2 = build()
    assert load_checkpoint(ckpt, fresh, {"offline": off2, "online": on2}, sampler2) == {"episode": 1}
    assert fresh.num_updates == 5 and on2.num_episodes == 1
    finetune_online(fresh, env, off2, on2, episodes=2, utd=0.2, sampler=sampler2, progress=False)
    a, b = agent.get_weights(), fresh.get_weights()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical after M more episodes
    init = build()[0].get_weights()
    assert any(not torch.equal(a[k], init[k]) for k in a)  # and training did change them

    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="corrupted or not a checkpoint"):
        load_checkpoint(ckpt, fresh)


def test_metrics_logger_writes_jsonl_tensorboard_and_plots(tmp_path) -> None:
    with MetricsLogger(tmp_path / "run") as log:
        for step in range(5):
            log.log(step * 10, {"loss": 1.0 / (step + 1), "nan_metric": float("nan")}, prefix="train/")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    assert rows[1]["train/loss"] == 0.5 and rows[1]["train/nan_metric"] is None
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 0
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    png = tmp_path / "curves.png"
    jsonl = tmp_path / "run" / "metrics.jsonl"
    assert plot_learning_curves(jsonl, png, tags=["train/loss"]) == ["train/loss"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no data"):
        plot_learning_curves(tmp_path / "run" / "metrics.jsonl", png, tags=["missing"])


def test_fresh_online_optimisers_update_as_a_fresh_process_from_the_same_weights() -> None:
    """schedule.fresh_online_optimisers: after pretraining, reset_optimisers() makes the next update
    exactly the one a new process (the trainer node) makes from the saved weights; resumed moments
    give a different one."""
    agent, offline, _, _ = build()
    for e in make_expert_dataset(4, noise=0.5, seed=0):
        offline.add(e)
    pretrain_offline(agent, offline, 20, progress=False)
    batch = offline.sample(16, np.random.default_rng(3))

    def step_from_pretrained(reset: bool) -> dict[str, torch.Tensor]:
        a = build()[0]
        a.load_weights(agent.get_weights())
        a.load_training_state(agent.training_state())  # moments, RNG streams, update count
        if reset:
            a.reset_optimisers()
        a.update(batch)
        return a.get_weights()

    fresh_process = build()[0]
    fresh_process.load_weights(agent.get_weights())
    state = agent.training_state()
    fresh_process._aug_gen.set_state(state["rng"]["aug"])
    fresh_process._draw_gen.set_state(state["rng"]["draw"])
    fresh_process.num_updates = agent.num_updates  # same EMA schedule
    fresh_process.update(batch)
    want = fresh_process.get_weights()

    reset, resumed = step_from_pretrained(True), step_from_pretrained(False)
    assert all(torch.equal(reset[k], want[k]) for k in want)
    assert any(not torch.equal(resumed[k], want[k]) for k in want)
    assert all(s["step"] == 1 for s in fresh_process.model_optim.state.values())
