"""`make demo`'s entry point, short, in two runs on the MuJoCo sim:

- from the camera (the product's observations): every stage runs for real (rendered observations,
  offline pretraining, evaluation, online finetuning, evaluation), leaves its artefacts, and the
  world model fits the data (its losses fall). At a test-sized budget (600 pixel updates) success
  rates are still near zero on a 2-core CPU, so they are not asserted from this run;
- from sim-state observations (positions read from the simulator), where a test-sized budget is
  enough to learn reach: the finetuned agent succeeds on held-out seeds, above the pretrained one or
  already at 80 %, and well above a uniformly random policy."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from fowm_core.metrics import read_jsonl
from fowm_core.weights import load_weights

UPDATES, ONLINE_EPISODES, EVAL_EPISODES = 600, 2, 4


@pytest.mark.slow
def test_short_demo_runs_every_stage_and_writes_its_artefacts(tmp_path):
    args = (
        f"--task reach --offline-episodes 20 --offline-updates {UPDATES} --online-episodes {ONLINE_EPISODES}"
    )
    args = [*args.split(), "--eval-episodes", str(EVAL_EPISODES), "--no-progress", "--out", str(tmp_path)]
    args += ["--set", "optim.compile=false"]  # 600 updates do not repay a compile
    run = subprocess.run(
        [sys.executable, "-m", "fowm_bringup.demo", *args], capture_output=True, text=True, timeout=1200
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "after offline pretraining" in run.stdout and "after online finetuning" in run.stdout

    (result,) = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert result["task"] == "reach"
    assert result["updates"] == UPDATES + ONLINE_EPISODES * 25  # one update per online step (utd 1)
    for stage in ("random_policy", "pretrained", "finetuned", "pretrained_prior", "finetuned_prior"):
        assert result[stage]["episodes"] == EVAL_EPISODES
        assert 0.0 <= result[stage]["success_rate"] <= 1.0

    frames = imageio.mimread(tmp_path / "reach_eval.gif")
    assert len(frames) == 26 and frames[0].shape[:2] == (240, 320)  # reset + 25 decisions
    assert imageio.imread(tmp_path / "learning_curves.png").shape[0] > 100

    rows = read_jsonl(tmp_path / "tensorboard" / "reach" / "metrics.jsonl")
    tags = {tag for row in rows for tag in row}
    assert {"offline/consistency_loss", "online/return", "eval/success_rate"} <= tags
    # The world model fits the offline data: latent consistency and Q regression fall several-fold
    # from the first logged 100 updates to the last (a broken update leaves them flat or diverging).
    for tag in ("offline/consistency_loss", "offline/q_loss"):
        values = [row[tag] for row in rows if row.get(tag) is not None]
        assert values[-1] < 0.5 * values[0], (tag, values)
    assert list((tmp_path / "tensorboard" / "reach").glob("events.out.tfevents.*"))

    loaded = load_weights(tmp_path / "reach_weights.safetensors")
    assert loaded.metadata.num_updates == result["updates"]


@pytest.mark.slow
def test_short_demo_learns_reach_from_sim_state(tmp_path):
    # 2000 updates: at 800, one seed in four dipped from 80 % to 60 % over the 4 online episodes.
    args = "--task reach --obs sim-state --offline-episodes 20 --offline-updates 2000 --online-episodes 4"
    args = [*args.split(), "--eval-episodes", "10", "--no-progress", "--out", str(tmp_path)]
    run = subprocess.run(
        [sys.executable, "-m", "fowm_bringup.demo", *args], capture_output=True, text=True, timeout=1200
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (r,) = json.loads((tmp_path / "summary.json").read_text())["results"]
    random_rate, pretrained, finetuned = (
        r[k]["success_rate"] for k in ("random_policy", "pretrained", "finetuned")
    )
    assert finetuned > pretrained or finetuned >= 0.8, run.stdout[-2000:]
    assert finetuned >= random_rate + 0.3, run.stdout[-2000:]  # learnt, not luck


def test_demo_rejects_a_bad_option(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "fowm_bringup.demo", "--task", "wipe", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "--task must be among" in run.stderr
    assert not (tmp_path / "summary.json").exists()


def test_sim_state_observation_holds_positions_and_the_differences_rewards_depend_on():
    from fowm_bringup.demo import ObservationFilter
    from fowm_sim.env import XArmTaskEnv

    env = XArmTaskEnv("push")
    try:
        view = ObservationFilter(env, "sim-state")
        obs, _ = view.reset(seed=3)
        view.spec().validate(obs)
        s, truth = obs["state"], env.task_state()
        tcp, cube, goal = s[0:3], s[4:7], s[7:10]
        np.testing.assert_allclose(tcp, [truth["tcp_x"], truth["tcp_y"], truth["tcp_z"]], atol=1e-6)
        np.testing.assert_allclose(goal, [truth["goal_x"], truth["goal_y"], truth["goal_z"]], atol=1e-6)
        np.testing.assert_allclose(s[10:], np.concatenate([goal - tcp, goal - cube, cube - tcp]), atol=1e-6)
        obs, *_ = view.step(np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32))
        assert obs["state"][0] > tcp[0] + 0.02  # it follows the sim: the TCP moved +x
    finally:
        env.close()


@pytest.fixture
def one_torch_thread():
    """In-process training: two OpenMP threads on a loaded 2-core machine crawl (see fowm_core README)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("mode", ["tdmpc", "fowm"])
def test_policy_prior_stays_alive_when_pretrained_on_sim_push_data(mode, one_torch_thread):
    """The policy must not die at the action bounds: an earlier tdmpc baseline drove its tanh policy
    into the corner within ~150 updates on this data and its gradient was exactly 0 from then on
    (tanh'(x) = 1 - tanh(x)^2 rounds to 0 once tanh rounds to 1, after 3 pre-activation units in
    bf16). Offline TD-MPC may sit at a bound (it maximises a Q that extrapolates), but it must keep
    a gradient to come back with."""
    from fowm_bringup.demo import ObservationFilter
    from fowm_core.agent import FOWMAgent
    from fowm_core.buffer import EpisodeBuffer
    from fowm_core.config import load_config
    from fowm_core.training import collect_episode, pretrain_offline
    from fowm_sim.collect import medium_noise
    from fowm_sim.config import SimConfig
    from fowm_sim.env import XArmTaskEnv
    from fowm_sim.experts import scripted_expert

    sim = XArmTaskEnv("push", SimConfig(task="push", obs_from_full_frame=False))
    env = ObservationFilter(sim, "sim-state")
    expert, rng = scripted_expert("push"), np.random.default_rng(0)
    buf = EpisodeBuffer(env.spec(), 4, 21 * 26, 5)
    for i in range(20):
        noisy_expert = lambda _o, _f: expert(sim, rng, medium_noise("push"))  # noqa: E731
        buf.add(collect_episode(None, env, False, seed=i, policy=noisy_expert))
    sim.close()
    agent = FOWMAgent(load_config("realtime-cpu", {"mode": mode, "optim": {"compile": False}}), env.spec(), 4)
    probe = buf.sample(256, np.random.default_rng(1)).obs["state"][0]
    dead_at = []
    for chunk in range(6):  # 300 updates; the earlier baseline was dead from ~150 on
        rows = pretrain_offline(agent, buf, 50, progress=False, rng=np.random.default_rng(chunk))
        with torch.no_grad():
            a = agent.model.pi(agent.model.encode({"state": probe}))
        at_bound = float((a.abs() > 0.99).float().mean())
        grad = max(r["pi_grad_norm"] for r in rows[-10:])
        if at_bound > 0.5 and grad < 1e-8:
            dead_at.append((agent.num_updates, at_bound, grad))
    assert not dead_at, f"{mode}: policy at the bounds with no gradient (updates, share, grad): {dead_at}"


@pytest.mark.parametrize("fresh", [False, True])
def test_online_phase_resumes_or_restarts_the_optimisers_as_configured(fresh, tmp_path, monkeypatch):
    """schedule.fresh_online_optimisers: run_task's online phase starts with new Adam optimisers (as
    the trainer node, which loads weights only) or keeps pretraining's (the official code, one
    process). Seen in Adam's step count after the run: online updates only, or all of them."""
    from fowm_bringup.demo import DemoConfig, run_task
    from fowm_core.agent import FOWMAgent

    agents = []
    init = FOWMAgent.__init__

    def kept(self, *args, **kwargs):
        init(self, *args, **kwargs)
        agents.append(self)

    monkeypatch.setattr(FOWMAgent, "__init__", kept)
    cfg = DemoConfig(
        tasks=("reach",), observations="sim-state", offline_episodes=2, offline_updates=3, online_episodes=1,
        eval_episodes=1, overrides=("optim.compile=false", f"schedule.fresh_online_optimisers={fresh}"),
        out=str(tmp_path), progress=False,
    )  # fmt: skip
    result = run_task("reach", cfg, tmp_path)
    (agent,) = agents
    assert result["updates"] == agent.num_updates == 3 + 25  # one online episode, one update per step
    for optim in (agent.model_optim, agent.pi_optim):
        assert {int(s["step"]) for s in optim.state.values()} == {25 if fresh else 28}
