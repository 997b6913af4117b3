"""Config presets, overrides and validation."""

from __future__ import annotations

import pytest

from fowm_core.config import FOWMConfig, PlannerConfig, config_hash, config_to_dict, load_config


def test_paper_preset_equals_defaults_and_has_the_published_numbers() -> None:
    cfg = load_config("paper")
    assert cfg == FOWMConfig()
    assert (cfg.planner.num_samples, cfg.planner.num_pi_trajs, cfg.planner.num_elites) == (512, 51, 50)
    assert (cfg.planner.horizon, cfg.planner.iterations, cfg.planner.temperature) == (5, 6, 0.5)
    assert (cfg.optim.consistency_coef, cfg.optim.reward_coef, cfg.optim.q_coef, cfg.optim.v_coef) == (
        20.0,
        0.5,
        0.1,
        0.1,
    )
    o = cfg.optim
    assert (o.lr, o.expectile, o.awr_beta, o.discount) == (3e-4, 0.9, 3.0, 0.9)
    assert cfg.model.num_q == 5 and cfg.schedule.offline_updates == 25_000


def test_realtime_preset_is_smaller_but_keeps_the_ensemble() -> None:
    rt, paper = load_config("realtime-cpu"), load_config("paper")
    assert rt.planner.dtype == "bfloat16"
    assert rt.model.num_q == paper.model.num_q
    assert rt.planner.num_samples < paper.planner.num_samples
    assert config_hash(rt) != config_hash(paper)  # different mlp_dim: weights not interchangeable


def test_nested_overrides_apply_and_yaml_roundtrip(tmp_path) -> None:
    import yaml

    cfg = load_config("paper", {"planner": {"dtype": "bfloat16", "num_samples": 64}, "seed": 7})
    assert cfg.planner.dtype == "bfloat16" and cfg.planner.num_samples == 64 and cfg.seed == 7
    assert cfg.planner.horizon == 5  # untouched siblings keep the preset value
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert load_config(str(path)) == cfg


def test_config_hash_tracks_model_fields_only() -> None:
    base = load_config("paper")
    other_planner = load_config("paper", {"planner": {"num_samples": 8, "num_elites": 4}})
    assert config_hash(base) == config_hash(other_planner)
    assert config_hash(base) != config_hash(load_config("paper", {"model": {"latent_dim": 64}}))
    assert len(config_hash(base)) == 64


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"planner": {"horizn": 3}}, "planner.horizn"),
        ({"optimm": {}}, "optimm"),
        ({"model": {"mlp_dim": 128, "extra": {"deep": 1}}}, "model.extra"),
    ],
)
def test_unknown_key_error_names_the_dotted_key(overrides: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        load_config("paper", overrides)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"planner": {"horizon": 0}}, "planner.horizon"),
        ({"planner": {"horizon": 2.5}}, "planner.horizon"),
        ({"planner": {"horizon": True}}, "planner.horizon"),
        ({"planner": {"dtype": "float16"}}, "planner.dtype"),
        ({"planner": {"compile": "yes"}}, "planner.compile"),
        ({"planner": {"num_elites": 1000}}, "num_elites"),
        ({"planner": {"min_std": 3.0}}, "min_std"),
        ({"optim": {"expectile": 1.5}}, "optim.expectile"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"model": {"num_q": 1}}, "model.num_q"),
        ({"mode": "sac"}, "mode"),
        ({"device": "tpu:x"}, "device"),
        ({"schedule": {"offline_fraction": 2.0}}, "offline_fraction"),
        ({"planner": 5}, "planner"),
    ],
)
def test_bad_values_are_rejected_with_clear_messages(overrides: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        load_config("paper", overrides)


def test_unknown_preset_or_missing_file_is_an_error() -> None:
    with pytest.raises(ValueError, match="neither a preset"):
        load_config("no-such-preset")


def test_dataclasses_validate_when_built_directly() -> None:
    with pytest.raises(ValueError, match="temperature"):
        PlannerConfig(temperature=0.0)


def test_a_preset_can_set_values_per_task_under_the_overrides(tmp_path) -> None:
    """realtime-cpu keeps the reward head off the online rows for reach only (its `tasks` section);
    --set overrides still win; no task gets the preset's own values, and a task the file's `tasks`
    do not list (a misspelt one) is refused, naming the tasks it has."""
    import yaml

    tasks = (None, "reach", "push", "lift")
    weight = {t: load_config("realtime-cpu", task=t).optim.online_reward_weight for t in tasks}
    assert weight == {None: 0.0, "reach": 0.0, "push": 1.0, "lift": 1.0}
    overridden = load_config("realtime-cpu", {"optim": {"online_reward_weight": 0.5}}, task="lift")
    assert overridden.optim.online_reward_weight == 0.5
    assert "tasks" not in config_to_dict(load_config("realtime-cpu", task="lift"))

    data = {"planner": {"num_samples": 32}, "tasks": {"push": {"planner": {"num_samples": 16}}}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(str(path), task="push").planner.num_samples == 16
    assert load_config(str(path), task="").planner.num_samples == 32
    with pytest.raises(ValueError, match="no section for task 'reach' \\(its tasks: push\\)"):
        load_config(str(path), task="reach")
    with pytest.raises(ValueError, match="no section for task 'pussh'"):
        load_config("realtime-cpu", task="pussh")
    path.write_text(yaml.safe_dump({"planner": {"num_samples": 32}}))  # no tasks: any task, base values
    assert load_config(str(path), task="stack").planner.num_samples == 32
    path.write_text(yaml.safe_dump(data))
    # A typo in any task's section fails every load, named with its task.
    data["tasks"]["lift"] = {"optim": {"online_reward_wieght": 1.0}}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="tasks.lift.optim.online_reward_wieght"):
        load_config(str(path), task="reach")
    path.write_text(yaml.safe_dump({"tasks": ["push"]}))
    with pytest.raises(ValueError, match="'tasks' must map task names"):
        load_config(str(path))
