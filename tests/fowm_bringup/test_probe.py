"""The latent probe: its ridge fit scores what features carry on held-out layouts (and nothing for
features that only memorise their layouts), and the command runs the real sim and model on a demo
run's layout, comparing its weights with a fresh model of the same config. (Its figures on make
demo's weights are in docs/experiments.md, "What the camera model knows, and what it does on push".)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from fowm_bringup.probe import POSITIONS, Rollouts, main, progress_steps, ridge_probe
from fowm_core.agent import FOWMAgent
from fowm_core.config import config_to_dict, load_config
from fowm_core.weights import save_weights
from fowm_trainer.ingest import ACTION_DIM, observation_spec
from fowm_xarm.observation import ObservationConfig

TINY = {"model": {"mlp_dim": 32, "latent_dim": 8, "num_channels": 4, "state_enc_dim": 16},
        "optim": {"compile": False}}  # fmt: skip


def _layouts(n_groups: int = 40, steps: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), steps)
    per_group = rng.normal(size=(n_groups, 2))[groups]  # e.g. cube and goal: fixed within a layout
    per_step = rng.normal(size=(len(groups), 1))  # e.g. the TCP: moves within a layout
    return np.c_[per_group, per_step], groups, rng


def test_ridge_probe_scores_linear_content_on_held_out_layouts():
    targets, groups, rng = _layouts()
    mixed = targets @ rng.normal(size=(3, 6)) + 0.01 * rng.normal(size=(len(targets), 6))
    r2, rmse = ridge_probe(mixed, targets, groups)
    assert (r2 > 0.99).all() and (rmse < 0.05).all()
    r2, _ = ridge_probe(rng.normal(size=(len(targets), 6)), targets, groups)
    assert (r2 < 0.2).all()


def test_ridge_probe_gives_memorised_layouts_no_credit():
    """A one-hot layout id fits every training layout's targets exactly, and knows nothing about a
    new layout: split by layout, the probe scores it at or below zero on what is fixed per layout."""
    targets, groups, _ = _layouts()
    one_hot = np.eye(groups.max() + 1)[groups]
    r2, _ = ridge_probe(one_hot, targets, groups)
    assert (r2[:2] <= 0.05).all()
    constant = np.c_[targets, np.full(len(targets), 0.3)]
    r2, _ = ridge_probe(targets, constant, groups)
    assert np.isnan(r2[-1]) and (r2[:-1] > 0.99).all()


def test_ridge_probe_needs_layouts_on_both_sides():
    targets, groups, _ = _layouts(n_groups=1)
    with pytest.raises(ValueError, match="both sides"):
        ridge_probe(targets, targets, groups)


def test_progress_steps_are_where_the_task_comes_closer_within_a_layout():
    """Push: steps after which the cube is >= 1 cm nearer the goal; the TCP's moves do not count, and
    an episode's last step (no next state) is never one."""
    cube_x = np.array([0.30, 0.28, 0.28, 0.20, 0.40, 0.35])  # goal at x = 0.1, y = 0
    layout = np.array([0, 0, 0, 0, 1, 1])
    positions = np.zeros((6, len(POSITIONS)))
    positions[:, POSITIONS.index("cube_x")] = cube_x
    positions[:, POSITIONS.index("goal_x")] = 0.1
    positions[:, POSITIONS.index("tcp_x")] = np.arange(6)  # the TCP moves a lot: irrelevant for push
    empty = np.zeros((6, 0))
    data = Rollouts(rgb=empty, state=empty, positions=positions, layout=layout, reward=empty, action=empty)
    assert progress_steps("push", data).tolist() == [True, False, True, False, True, False]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A make demo output's layout: its config and (untrained) weights."""
    root = tmp_path_factory.mktemp("demo")
    cfg = load_config("realtime-cpu", TINY)
    (root / "fowm_config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    (root / "pretrain").mkdir()
    save_weights(
        root / "pretrain" / "weights.safetensors",
        FOWMAgent(cfg, observation_spec(ObservationConfig()), ACTION_DIM),
    )
    return root


def test_probe_of_a_demo_run_on_the_sim(run_dir, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert (
        main(["--run", str(run_dir), "--task", "push", "--layouts", "8", "--out", str(out), "--no-progress"])
        == 0
    )
    res = json.loads(out.read_text())["results"]
    assert list(res) == ["random init", "pretrained"]  # the run has no finetuned weights
    for scores in res.values():
        assert set(scores["r2"]) == set(POSITIONS)
        # the cube and the goal move from layout to layout, so they are scored
        assert all(np.isfinite(scores["r2"][n]) for n in ("cube_x", "cube_y", "goal_x", "goal_y"))
        assert scores["r2"]["cube_z"] is None  # the cube rests on the table: not scored
        assert np.isfinite(scores["reward"]["r2"])
        every = scores["values_all_steps"]
        assert every["steps"] == 8 * 25  # every step of the 8 expert episodes
        assert all(np.isfinite(every[k]) for k in ("v", "q_expert", "q_policy", "q_still"))
        assert 0 <= scores["values_progress_steps"]["steps"] < every["steps"]
    # the untrained weights are the fresh model of the same config and seed: the same scores
    assert res["pretrained"]["r2"] == res["random init"]["r2"]
    table = capsys.readouterr().out
    assert "| pretrained |" in table and "goal_y" in table and "Q(still)" in table


def test_probe_refuses_a_directory_without_weights(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--run", str(tmp_path), "--task", "push"])
    assert exc.value.code == 2
    assert "make demo output directory" in capsys.readouterr().err
