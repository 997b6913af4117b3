"""`make demo` through the ROS 2 stack (fowm_bringup.ros_demo), short, with a tiny model.

- The ROS path and the in-process path agree: the weights fowm-pretrain learns from the bags equal
  (bit for bit) those of fowm_core's training loop on the episodes ingested from the same bags, and
  the evaluation through the planner node (pretrained weights and the random baseline) gets the
  returns of fowm_core.training.evaluate on the same seeds, within 1e-4.
- The whole pipeline with online finetuning: every stage leaves its artefacts, weights move from the
  trainer to the planner at least twice (the planner's committed versions), every online bag is
  ingested once, and killing the trainer leaves the planner commanding on its last weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

# A tiny model and planner so that a 2-core CPU runs every stage in seconds (the point is the
# plumbing and the equalities, not skill).
TINY = (
    "model.latent_dim=16 model.mlp_dim=32 model.state_enc_dim=32 model.num_channels=4 "
    "planner.num_samples=16 planner.iterations=2 planner.num_elites=4 planner.num_pi_trajs=4 "
    "optim.batch_size=8 optim.compile=false"
).split()
UPDATES, EVAL_EPISODES = 30, 2


def run_demo(out: Path, *args: str, timeout: float = 900) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "fowm_bringup.ros_demo",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ]
    run = subprocess.run([*cmd, *args, "--set", *TINY], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-5000:])
    return json.loads((out / "summary.json").read_text())


def in_process_pretrain(out: Path, updates: int, threads: int):
    """fowm_core's training loop on the episodes ingested from the demo's offline bags, configured
    as the demo configured fowm-pretrain (its model config file, the default observation path, its
    torch thread count)."""
    from fowm_core.agent import FOWMAgent
    from fowm_core.buffer import EpisodeBuffer
    from fowm_core.config import load_config
    from fowm_core.training import pretrain_offline
    from fowm_trainer.ingest import ACTION_DIM, BagIngestor, observation_spec
    from fowm_xarm.observation import ObservationConfig

    torch.set_num_threads(threads)
    cfg = load_config(str(out / "fowm_config.yaml"))
    obs_cfg = ObservationConfig()
    episodes = BagIngestor(obs_cfg).scan([out / "bags" / "offline"]).episodes
    capacity = max(sum(len(e) + 1 for e in episodes), cfg.optim.horizon + 1)
    buffer = EpisodeBuffer(observation_spec(obs_cfg), ACTION_DIM, capacity, cfg.optim.horizon)
    for episode in episodes:
        buffer.add(episode)
    agent = FOWMAgent(cfg, observation_spec(obs_cfg), ACTION_DIM)
    pretrain_offline(agent, buffer, updates, progress=False, rng=np.random.default_rng(cfg.seed))
    torch.set_num_threads(1)  # the evaluation below compares with the planner node: one thread
    return agent, len(episodes)


@pytest.mark.slow
def test_ros_path_equals_in_process_path(tmp_path):
    from fowm_bringup.demo import prior_policy
    from fowm_core.training import evaluate
    from fowm_core.weights import load_weights
    from fowm_sim.env import XArmTaskEnv

    out = tmp_path / "demo"
    summary = run_demo(
        out, "--offline-episodes", "3", "--offline-updates", str(UPDATES),
        "--online-episodes", "0", "--eval-episodes", str(EVAL_EPISODES),
    )  # fmt: skip
    assert summary["pretrain"]["updates"] == UPDATES

    # Pretraining: same bags, same batches, same CPU arithmetic (the demo's pretraining thread count,
    # 2 on a 2-core machine) -> identical weights.
    agent, n_episodes = in_process_pretrain(out, UPDATES, summary["config"]["pretrain_threads"])
    assert n_episodes == summary["data"]["episodes"] == 3
    ros_weights = load_weights(out / "pretrain" / "weights.safetensors").tensors
    mine = agent.get_weights()
    assert ros_weights.keys() == mine.keys()
    differing = [k for k in mine if not torch.equal(mine[k], ros_weights[k])]
    assert not differing, differing

    # Evaluation: the planner node in lockstep against the sim node vs evaluate() in process, on the
    # same held-out seeds. Observations and commands take the same fowm_xarm functions both ways;
    # what differs is float32 rounding (evaluate keeps rewards as float32; std_msgs/Float32 carries
    # the gripper command), hence 1e-4 on returns summed over 25 steps rather than exact equality.
    evaluation = summary["evaluation"]
    seeds = [e["seed"] for e in evaluation["pretrained"]["episodes"]]
    assert seeds == [10_000 + i for i in range(EVAL_EPISODES)]
    env = XArmTaskEnv("reach")
    try:
        runs = [evaluate(agent, env, 1, seeds=[s]) for s in seeds]
        in_process = [r["return"] for r in runs]
        rng = np.random.default_rng(agent.cfg.seed)  # the planner's policy:=random draws

        def uniform(_obs, _first):
            return rng.uniform(-1.0, 1.0, 4).astype(np.float32)

        random_in_process = [evaluate(None, env, 1, seeds=[s], policy=uniform)["return"] for s in seeds]
        prior = [evaluate(None, env, 1, seeds=[s], policy=prior_policy(agent))["return"] for s in seeds]
    finally:
        env.close()
    ros = [e["episode_return"] for e in evaluation["pretrained"]["episodes"]]
    np.testing.assert_allclose(ros, in_process, rtol=0, atol=1e-4)
    # One success definition on both paths (any step within the task's success test).
    ros_success = [e["success"] for e in evaluation["pretrained"]["episodes"]]
    assert ros_success == [r["success_rate"] == 1.0 for r in runs]
    ros_random = [e["episode_return"] for e in evaluation["random"]["episodes"]]
    np.testing.assert_allclose(ros_random, random_in_process, rtol=0, atol=1e-4)
    ros_prior = [e["episode_return"] for e in evaluation["pretrained_prior"]["episodes"]]
    np.testing.assert_allclose(ros_prior, prior, rtol=0, atol=1e-4)  # policy:=prior, the network alone
    assert not np.allclose(ros, ros_random)  # different policies really ran
    assert not np.allclose(ros, ros_prior)

    # Artefacts of the stages that ran.
    frames = imageio.mimread(out / "eval.gif")
    assert len(frames) >= 20 and frames[0].shape == (240, 320, 3)  # one evaluation episode (25 decisions)
    assert imageio.imread(out / "learning_curves.png").shape[0] > 100
    assert list((out / "pretrain" / "tensorboard").glob("events.out.tfevents.*"))
    assert load_weights(out / "weights.safetensors").metadata.num_updates == UPDATES


@pytest.mark.slow
def test_short_ros_pipeline_finetunes_through_the_nodes_and_survives_the_trainer(tmp_path):
    from fowm_bringup.ros_demo import POLICIES
    from fowm_core.weights import load_weights, weights_sha256
    from fowm_trainer.ingest import stored_digest
    from fowm_trainer.online import checkpoint_extra

    out = tmp_path / "demo"
    online, kill_after = 4, 3  # the trainer is SIGKILLed as the third online episode ends
    summary = run_demo(
        out, "--offline-episodes", "3", "--offline-updates", "20", "--online-episodes", str(online),
        "--eval-episodes", str(EVAL_EPISODES), "--kill-trainer-after", str(kill_after), "--resume-optimisers",
    )  # fmt: skip

    # Every stage left its artefacts.
    assert len(list((out / "bags" / "offline").glob("episode_*"))) == 3
    assert (out / "pretrain" / "weights.safetensors").is_file()
    assert tuple(summary["evaluation"]) == POLICIES  # random, then planner and prior per weights
    for result in summary["evaluation"].values():
        assert [e["seed"] for e in result["episodes"]] == [10_000 + i for i in range(EVAL_EPISODES)]
    assert len(imageio.mimread(out / "eval.gif")) >= 20
    assert imageio.imread(out / "learning_curves.png").shape[0] > 100
    assert list((out / "tensorboard" / "online").glob("events.out.tfevents.*"))

    # Online: every episode ran to its end, one bag each.
    rows = summary["online"]["episodes"]
    assert [r["episode"] for r in rows] == list(range(online))
    assert all(r["steps"] == 25 for r in rows), rows
    bags = sorted((out / "bags" / "online").glob("episode_*"))
    assert len(bags) == online

    # Weights moved trainer -> planner between episodes: the version the planner had committed
    # (read from the planner) when each episode started rose 0, 1, 2 while the trainer lived.
    versions = [r["model_version"] for r in rows]
    assert versions[:kill_after] == list(range(kill_after)), versions
    assert int(summary["online"]["planner_diagnostics"]["weights_accepted"]) >= 2

    # The trainer was killed while it ingested and trained on episode `kill_after`'s bag; the planner
    # went on commanding on its last weights (all 25 steps of the episode after the kill, on the
    # version it had), and the run says so.
    assert summary["online"]["trainer_killed_after"] == kill_after
    assert summary["online"]["episodes_after_kill"] == online - kill_after
    after = rows[kill_after:]
    last = summary["online"]["final_model_version"]
    assert last >= kill_after - 1
    assert all(not r["trainer_alive"] and r["model_version"] == last for r in after), after
    assert int(summary["online"]["planner_diagnostics"]["decisions_plan"]) == online * 25
    # The finetuned evaluation ran the weights the planner ended with, as the trainer pushed them.
    final = out / "weights.safetensors"
    assert weights_sha256(final.read_bytes()) == summary["online"]["final_model_sha256"]
    # The trainer went on from fowm-pretrain's checkpoint (--resume-optimisers): its 20 updates, then 25
    # online updates per episode, with the pretraining's Adam state.
    assert load_weights(final).metadata.num_updates == 20 + last * 25
    assert "(update 20), its Adam state resumed" in (out / "logs" / "online" / "fowm_trainer.log").read_text()

    # No bag was ingested twice, only recorded bags were, and every bag whose weights reached the
    # planner is in the trainer's checkpoint ledger (content identities).
    ingested = list(checkpoint_extra(out / "trainer" / "checkpoint.pt")["ingested"])
    digests = [stored_digest(b) for b in bags]
    assert len(set(ingested)) == len(ingested) and set(ingested) <= set(digests), (ingested, digests)
    assert set(digests[:last]) <= set(ingested)
    ledger = summary["online"]["ingestion"]
    assert ledger["ingested"] == ledger["distinct"] == len(ingested)


def test_a_run_that_would_not_fit_on_disk_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from collections import namedtuple

    from fowm_bringup import ros_demo

    usage = namedtuple("usage", "total used free")
    free = 15 * 10**8
    monkeypatch.setattr(ros_demo.shutil, "disk_usage", lambda _path: usage(10**12, 10**12 - free, free))
    out = tmp_path / "demo"
    rc = ros_demo.main(["--out", str(out), "--no-progress"])  # defaults: 200 + 10 episodes, ~1.8 GB
    assert rc == 1
    err = capsys.readouterr().err
    assert "1.5 GB free" in err and "needs ~1.8 GB" in err and "--offline-episodes" in err
    assert not list((out / "bags").rglob("episode_*")) and not (out / "pretrain").exists()
    # a small run passes the same check
    monkeypatch.setattr(ros_demo, "run", lambda cfg: ros_demo.check_disk_space(cfg, out))
    assert ros_demo.main(["--out", str(out), "--offline-episodes", "3", "--online-episodes", "1"]) == 0


def test_every_path_trains_with_the_presets_section_for_its_task(tmp_path):
    """make demo writes the task's preset section into the config every node reads, and the
    in-process runs (make eval, make demo-inprocess) resolve the same config: realtime-cpu fits the
    reward head to the online rows on lift, not on reach; --set still wins."""
    from fowm_bringup.demo import DemoConfig, resolved_config
    from fowm_bringup.ros_demo import (
        Layout,
        RosDemoConfig,
        planner_parameters,
        trainer_parameters,
        write_model_config,
    )
    from fowm_core.config import load_config
    from fowm_planner.config import PlannerNodeConfig
    from fowm_trainer.trainer_node import TrainerNodeConfig

    for task, weight in (("reach", 0.0), ("lift", 1.0)):
        path = tmp_path / f"{task}.yaml"
        write_model_config(RosDemoConfig(task=task, device="cpu"), path)
        assert load_config(str(path)).optim.online_reward_weight == weight
        assert resolved_config(DemoConfig(tasks=("reach", "lift")), task).optim.online_reward_weight == weight
    # The planner and trainer make demo starts are told the run's task (their logs name it) and
    # build the run file's config from it.
    layout = Layout(tmp_path)
    write_model_config(RosDemoConfig(task="lift", device="cpu"), layout.config)
    weights = tmp_path / "w.safetensors"
    params = planner_parameters(layout, weights, "lift", explore=False)
    params.pop("use_sim_time")  # rclpy's own parameter, not the node's config
    planner = PlannerNodeConfig(**params)
    trainer = TrainerNodeConfig(**trainer_parameters(layout, weights, "lift"))
    assert planner.task == trainer.task == "lift"
    assert planner.fowm_config() == trainer.fowm_config() == load_config(str(layout.config))
    forced = RosDemoConfig(task="lift", device="cpu", overrides=("optim.online_reward_weight=0",))
    write_model_config(forced, tmp_path / "forced.yaml")
    assert load_config(str(tmp_path / "forced.yaml")).optim.online_reward_weight == 0.0


def test_nodes_given_a_task_resolve_the_presets_section_and_the_graphs_pass_it():
    """Started on a preset name (not make demo's resolved file), the planner, the trainer and
    fowm-pretrain apply the preset's section for their `task` parameter, which each graph's task:=
    argument sets for both nodes alike."""
    from fowm_bringup.graph import GRAPHS
    from fowm_planner.config import PlannerNodeConfig
    from fowm_trainer.pretrain import PretrainConfig
    from fowm_trainer.trainer_node import TrainerNodeConfig

    for task, weight in (("", 0.0), ("reach", 0.0), ("lift", 1.0)):
        assert PlannerNodeConfig(task=task).fowm_config().optim.online_reward_weight == weight
        assert PretrainConfig(bags=["x"], task=task).fowm_config().optim.online_reward_weight == weight
        assert TrainerNodeConfig(task=task).fowm_config().optim.online_reward_weight == weight
    for name in ("sim", "planner", "real"):
        (task_arg,) = [a for a in GRAPHS[name].arguments if a.name == "task"]
        targets = set(task_arg.targets())
        assert ("fowm_planner", "task") in targets, name
        assert name == "planner" or ("fowm_trainer", "task") in targets, name
