"""The finetuning study on a (tiny) finished demo run: the run's config, weights and offline bags are
what it starts from, the chosen policy is who acts online, the overrides reach the finetuning, and a
directory that is not a demo run is refused before any work. (The study's figures are in
docs/experiments.md.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from fowm_bringup.finetune_study import RESTORABLE, main, restored
from fowm_core.agent import FOWMAgent
from fowm_core.config import config_to_dict, load_config
from fowm_core.weights import save_weights
from fowm_trainer.ingest import ACTION_DIM, observation_spec
from fowm_xarm.observation import ObservationConfig

TINY = {"model": {"mlp_dim": 32, "latent_dim": 8, "num_channels": 4, "state_enc_dim": 16},
        "optim": {"batch_size": 8, "compile": False}}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A demo run's layout with 2 recorded medium episodes and (untrained) weights of its config."""
    root = tmp_path_factory.mktemp("demo")
    subprocess.run(
        [sys.executable, "-m", "fowm_sim.collect", "--output", str(root / "bags" / "offline"),
         "--task", "reach", "--episodes", "2", "--no-progress"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    cfg = load_config("realtime-cpu", TINY)
    (root / "fowm_config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    (root / "pretrain").mkdir()
    agent = FOWMAgent(cfg, observation_spec(ObservationConfig()), ACTION_DIM)
    save_weights(root / "pretrain" / "weights.safetensors", agent)
    (root / "summary.json").write_text(json.dumps({"config": {"task": "reach"}}))
    return root


def test_expert_controlled_online_phase_trains_on_the_experts_episodes(run_dir, tmp_path):
    results = tmp_path / "results.jsonl"
    res = main(["--run", str(run_dir), "--online-policy", "expert", "--episodes", "2", "--eval-episodes", "1",
                "--results", str(results)])  # fmt: skip
    # the scripted reach expert acted (it solves reach at this noise; an untrained planner does not)
    assert res["online_successes"] == [1, 1]
    assert all(r > -3.0 for r in res["online_returns"])
    assert res["updates"] == 2 * 25  # utd 1 on 25-step episodes
    for k in ("finetuned_planner_success", "finetuned_prior_success", "finetuned_prior_return"):
        assert k in res
    assert json.loads(results.read_text().splitlines()[-1]) == json.loads(json.dumps(res))


def test_overrides_reach_the_finetuning_and_the_planner_acts_by_default(run_dir):
    res = main(["--run", str(run_dir), "--episodes", "1", "--eval-episodes", "1", "--eval-pretrained",
                "--set", "schedule.utd=2", "--restore", "qs", "encoder"])  # fmt: skip
    assert res["online_policy"] == "planner"
    assert res["updates"] == 2 * 25
    assert "pretrained_planner_success" in res and "finetuned_planner_success" in res
    for label in ("pretrained", "finetuned", "restored_qs", "restored_encoder"):
        assert 0.0 <= res[f"{label}_planner_success"] <= 1.0
    # The Q-ensemble's std along the chosen plans: the untrained members' zero output layers agree
    # exactly, training makes them differ, and putting the pretrained Qs back reaches the planner.
    assert res["pretrained_planner_uncertainty"] == 0.0
    assert res["finetuned_planner_uncertainty"] > 0.0
    assert res["restored_encoder_planner_uncertainty"] > 0.0
    assert res["restored_qs_planner_uncertainty"] == 0.0


def test_restore_groups_partition_the_model_and_put_back_only_their_tensors():
    cfg = load_config("realtime-cpu", TINY)
    spec = observation_spec(ObservationConfig())
    pre = FOWMAgent(cfg, spec, ACTION_DIM).get_weights()
    fine = {k: v + 1.0 for k, v in pre.items()}
    owners = {k: [g for g, prefixes in RESTORABLE.items() if k.startswith(prefixes)] for k in pre}
    assert all(len(gs) == 1 for gs in owners.values()), {k: gs for k, gs in owners.items() if len(gs) != 1}
    for group in RESTORABLE:
        mixed = restored(fine, pre, group)
        back = {k for k in pre if mixed[k] is pre[k]}
        assert back == {k for k, gs in owners.items() if gs == [group]} and back  # a real, non-empty group
        assert all(mixed[k] is fine[k] for k in pre.keys() - back)


def test_a_directory_that_is_not_a_demo_run_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--run", str(tmp_path)])
    assert "is not a finished `make demo` run" in capsys.readouterr().err


def test_eval_first_seed_0_scores_the_offline_episodes_own_layouts(run_dir, monkeypatch):
    import fowm_core.training

    seen: list[list[int]] = []
    real = fowm_core.training.evaluate

    def recording(agent, env, episodes, seeds=None, policy=None):
        seen.append(list(seeds))
        return real(agent, env, episodes, seeds, policy=policy)

    monkeypatch.setattr(fowm_core.training, "evaluate", recording)
    res = main(["--run", str(run_dir), "--episodes", "0", "--eval-episodes", "2", "--eval-pretrained",
                "--eval-first-seed", "0"])  # fmt: skip
    # fowm-collect reset offline episode i with seed i: these are the 2 recorded layouts, for the
    # planner and the prior, before and after the (empty) finetuning
    assert seen == [[0, 1]] * 4
    assert res["eval_first_seed"] == 0 and res["updates"] == 0
    with pytest.raises(SystemExit):
        main(["--run", str(run_dir), "--eval-first-seed", "-1"])
