"""Loss pieces against hand computations, and the update step's masking and learning."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from fowm_core.agent import (
    DATA_ACTION_LIMIT,
    FOWMAgent,
    alive_mask,
    awr_weights,
    expectile_loss,
    policy_nll,
    time_weights,
    weighted_loss,
)
from fowm_core.config import load_config
from fowm_core.specs import Batch, ObservationSpec

SMALL = {"model": {"mlp_dim": 32, "latent_dim": 8, "state_enc_dim": 16}, "optim": {"batch_size": 4}}


def test_expectile_is_asymmetric() -> None:
    diff = torch.tensor([2.0, -2.0, 0.5, 0.0])
    got = expectile_loss(diff, tau=0.9)
    # tau * d^2 above the prediction, (1 - tau) * d^2 below it
    assert torch.allclose(got, torch.tensor([0.9 * 4, 0.1 * 4, 0.9 * 0.25, 0.0]))
    assert torch.allclose(expectile_loss(diff, tau=0.5), 0.5 * diff.square())


def test_awr_weights_are_exponential_and_clipped_at_max() -> None:
    adv = torch.tensor([-1.0, 0.0, 1.0, 2.0, 1000.0])
    got = awr_weights(adv, beta=3.0, max_weight=100.0)
    want = torch.tensor([math.exp(-3), 1.0, math.exp(3), 100.0, 100.0])  # exp(6) = 403 -> 100
    assert torch.allclose(got, want, rtol=1e-5)
    assert torch.isfinite(got).all()  # a huge advantage must not overflow to inf


def test_rho_weighting_and_horizon_normalisation() -> None:
    per_step = torch.tensor([[[1.0], [2.0]], [[3.0], [4.0]], [[5.0], [6.0]]])  # (H=3, B=2, 1)
    w = time_weights(torch.zeros(3, 2, 1), rho=0.5)
    assert torch.allclose(w[:, 0, 0], torch.tensor([1.0, 0.5, 0.25]))
    # batch 0: 1 + 1.5 + 1.25 = 3.75; batch 1: 2 + 2 + 1.5 = 5.5; mean 4.625; / H
    assert torch.isclose(weighted_loss(per_step, w), torch.tensor(4.625 / 3))


def test_everything_after_a_terminal_is_masked() -> None:
    term = torch.tensor([0.0, 1.0, 0.0, 0.0])[:, None, None]  # episode ends on transition 1 -> 2
    assert alive_mask(term)[:, 0, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    term_first = torch.tensor([1.0, 0.0, 1.0])[:, None, None]
    assert alive_mask(term_first)[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    w = time_weights(term, rho=0.5)
    assert w[:, 0, 0].tolist() == [1.0, 0.5, 0.0, 0.0]


def test_policy_nll_is_half_the_squared_error_summed_over_action_dims() -> None:
    """Official: -gaussian_logprob(pi(z) - a, log_std=0) = 0.5 * sum_A (pi - a)^2 + constant."""
    pred, act = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, -1.0]])
    assert torch.allclose(policy_nll(pred, act), torch.tensor([[0.5 * (1 + 4)]]))


def _batch(H: int = 4, B: int = 4, A: int = 2, S: int = 3, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs={"state": torch.randn(H + 1, B, S, generator=g)},
        action=torch.rand(H, B, A, generator=g) * 2 - 1,
        reward=torch.randn(H, B, 1, generator=g),
        terminated=torch.zeros(H, B, 1),
    )


@pytest.mark.parametrize("end", ["terminal", "time_limit"])
@pytest.mark.parametrize("mode", ["fowm", "tdmpc"])
def test_data_after_an_episode_end_does_not_change_the_update(mode: str, end: str) -> None:
    """A window that runs past its episode's end (a terminal, or the time limit: `ended` without
    `terminated`) learns nothing from the padding after it, whatever it holds."""
    spec = ObservationSpec.make(state_dim=3)
    cfg = load_config("paper", {**SMALL, "mode": mode})
    clean = _batch()
    clean.ended = torch.zeros_like(clean.terminated)
    clean.ended[1] = 1.0  # every sequence ends on its transition 1 -> 2
    if end == "terminal":
        clean.terminated[1] = 1.0
    dirty = Batch(obs={"state": clean.obs["state"].clone()}, action=clean.action.clone(),
                  reward=clean.reward.clone(), terminated=clean.terminated.clone(),
                  ended=clean.ended.clone())  # fmt: skip
    dirty.obs["state"][3:] += 100.0  # observations after the terminal one
    dirty.action[2:] = -dirty.action[2:]
    dirty.reward[2:] += 50.0
    a, b = FOWMAgent(cfg, spec, 2), FOWMAgent(cfg, spec, 2)
    stats_a, stats_b = a.update(clean), b.update(dirty)
    for k in ("consistency_loss", "reward_loss", "q_loss", "pi_loss"):
        assert stats_a[k] == pytest.approx(stats_b[k], rel=1e-5, abs=1e-7), k
    # control: the same corruption without the episode end does change the losses
    c = FOWMAgent(cfg, spec, 2)
    dirty.terminated.zero_()
    dirty.ended.zero_()
    assert c.update(dirty)["reward_loss"] > stats_a["reward_loss"] + 1.0


def test_a_time_limit_masks_but_still_bootstraps_a_terminal_does_not() -> None:
    spec = ObservationSpec.make(state_dim=3)
    cfg = load_config("paper", {**SMALL, "optim": {"batch_size": 4, "discount": 0.9}})
    trunc = _batch()
    trunc.ended = torch.zeros_like(trunc.terminated)
    trunc.ended[1] = 1.0
    term = Batch(obs=trunc.obs, action=trunc.action, reward=trunc.reward,
                 terminated=trunc.ended.clone(), ended=trunc.ended)  # fmt: skip
    a, b = FOWMAgent(cfg, spec, 2), FOWMAgent(cfg, spec, 2)
    torch.nn.init.constant_(a.model.value[-1].bias, 5.0)  # V = 5 + ...: bootstrapping shows
    torch.nn.init.constant_(b.model.value[-1].bias, 5.0)
    # the terminal transition's target is r alone; the time-limited one's is r + gamma V(s')
    assert a.update(trunc)["td_target_mean"] > b.update(term)["td_target_mean"] + 0.9 * 5.0 / 4 * 0.5


@pytest.mark.parametrize("mode", ["fowm", "tdmpc"])
def test_updates_fit_a_fixed_batch_and_report_every_term(mode: str) -> None:
    spec = ObservationSpec.make(state_dim=3)
    agent = FOWMAgent(load_config("paper", {**SMALL, "mode": mode, "optim": {"lr": 3e-3}}), spec, 2)
    batch = _batch()
    first = agent.update(batch)
    for _ in range(60):
        last = agent.update(batch)
    assert agent.num_updates == 61
    expected = {"consistency_loss", "reward_loss", "q_loss", "pi_loss", "grad_norm", "q_mean"}
    if mode == "fowm":
        expected |= {"v_loss", "v_mean", "advantage_mean", "awr_weight_mean"}
    else:
        assert "v_loss" not in last
    assert expected <= set(last)
    assert all(math.isfinite(v) for v in last.values())
    assert last["reward_loss"] < 0.3 * first["reward_loss"]
    assert last["q_loss"] < first["q_loss"]


def test_bad_batches_are_rejected() -> None:
    agent = FOWMAgent(load_config("paper", SMALL), ObservationSpec.make(state_dim=3), 2)
    b = _batch(A=3)
    with pytest.raises(ValueError, match="batch.action"):
        agent.update(b)
    b = _batch()
    b.reward = b.reward[:, :, 0]
    with pytest.raises(ValueError, match="batch.reward"):
        agent.update(b)
    b = _batch(S=5)
    with pytest.raises(ValueError, match=r"batch.obs\['state'\]"):
        agent.update(b)
    b = _batch()
    b.reward[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        agent.update(b)


def _model_params(agent: FOWMAgent, prefix: str) -> torch.Tensor:
    return torch.cat(
        [p.detach().flatten().clone() for n, p in agent.model.named_parameters() if n.startswith(prefix)]
    )


def test_v_loss_gradients_reach_the_encoder_and_dynamics() -> None:
    """Official: V(zs) is not detached, so the expectile loss alone trains encoder and dynamics."""
    spec = ObservationSpec.make(state_dim=3)
    only_v = {"consistency_coef": 0.0, "reward_coef": 0.0, "q_coef": 0.0, "v_coef": 1.0, "batch_size": 4}
    agent = FOWMAgent(load_config("paper", {**SMALL, "optim": only_v}), spec, 2)
    torch.nn.init.normal_(agent.model.qs.l3.weight)  # nonzero Q targets so V has something to fit
    agent.model.target["qs"].load_state_dict(agent.model.qs.state_dict())
    before = {k: _model_params(agent, k) for k in ("encoders", "dynamics", "value", "qs", "reward_head")}
    agent.update(_batch())
    moved = {k: not torch.equal(before[k], _model_params(agent, k)) for k in before}
    assert moved == {"encoders": True, "dynamics": True, "value": True, "qs": False, "reward_head": False}


def test_awr_advantage_uses_the_value_after_the_model_step() -> None:
    spec = ObservationSpec.make(state_dim=3)
    over = {**SMALL, "model": {**SMALL["model"], "num_q": 2}, "optim": {"batch_size": 4, "lr": 0.05}}
    agent = FOWMAgent(load_config("paper", over), spec, 2)  # num_q 2: minQ is the min of both
    torch.nn.init.normal_(agent.model.qs.l3.weight)
    agent.model.target["qs"].load_state_dict(agent.model.qs.state_dict())
    batch = _batch()
    before = copy.deepcopy(agent.model)
    stats = agent.update(batch)
    with torch.no_grad():  # the latents of the update come from the model before its step
        z = before.encode({"state": batch.obs["state"][0]})
        zs = []
        for t in range(batch.horizon):
            zs.append(z)
            z = before.next(z, batch.action[t])
        zs = torch.stack(zs)
        q = before.q_all(zs, batch.action, target=True).min(0).values  # targets do not move in a step
        after = (q - agent.model.v(zs)).mean().item()
        stale = (q - before.v(zs)).mean().item()
    assert stats["advantage_mean"] == pytest.approx(after, abs=1e-5)
    assert abs(after - stale) > 1e-3  # the step moved V, so the order is visible


def test_importance_weights_scale_each_windows_model_loss() -> None:
    """Windows with importance weight 0 cannot change the world model; the policy loss is unweighted."""
    spec = ObservationSpec.make(state_dim=3)
    cfg = load_config("paper", SMALL)
    clean = _batch()
    clean.weight = torch.tensor([1.0, 0.5, 0.0, 0.0])
    dirty = Batch(obs={"state": clean.obs["state"].clone()}, action=clean.action.clone(),
                  reward=clean.reward.clone(), terminated=clean.terminated, weight=clean.weight)  # fmt: skip
    dirty.reward[:, 2:] += 50.0
    dirty.obs["state"][:, 2:] += 10.0
    a, b = FOWMAgent(cfg, spec, 2), FOWMAgent(cfg, spec, 2)
    a.update(clean)
    b.update(dirty)
    for prefix in ("encoders", "dynamics", "reward_head", "qs", "value"):
        assert torch.allclose(_model_params(a, prefix), _model_params(b, prefix), atol=1e-6), prefix
    assert not torch.allclose(_model_params(a, "policy"), _model_params(b, "policy"))
    assert a.td_priority.shape == (4,) and np.all(a.td_priority >= 0)


def test_online_reward_weight_keeps_the_reward_head_off_the_online_rows() -> None:
    """optim.online_reward_weight = 0: the reward head learns nothing from the rows the sampler marked
    online, while their rewards still reach the Qs through the TD targets. At FOWM's 1 (paper) the
    reward head learns from them like from any other row."""
    spec = ObservationSpec.make(state_dim=3)
    clean = _batch()
    clean.online = torch.tensor([0.0, 0.0, 1.0, 1.0])
    dirty = Batch(obs=clean.obs, action=clean.action, reward=clean.reward.clone(),
                  terminated=clean.terminated, online=clean.online)  # fmt: skip
    dirty.reward[:, 2:] += 50.0  # the online rows' rewards
    moved = {}
    for weight in (0.0, 1.0):
        cfg = load_config("paper", {**SMALL, "optim": {"batch_size": 4, "online_reward_weight": weight}})
        a, b = FOWMAgent(cfg, spec, 2), FOWMAgent(cfg, spec, 2)
        a.update(clean)
        b.update(dirty)
        moved[weight] = {
            k: not torch.allclose(_model_params(a, k), _model_params(b, k), atol=1e-6)
            for k in ("reward_head", "qs")
        }
    assert moved[0.0] == {"reward_head": False, "qs": True}
    assert moved[1.0] == {"reward_head": True, "qs": True}
    assert load_config("paper").optim.online_reward_weight == 1.0  # the official behaviour
    bad = Batch(obs=clean.obs, action=clean.action, reward=clean.reward, terminated=clean.terminated,
                online=torch.ones(3))  # fmt: skip
    with pytest.raises(ValueError, match="batch.online"):
        FOWMAgent(load_config("paper", SMALL), spec, 2).update(bad)
    with pytest.raises(ValueError, match="online_reward_weight"):
        load_config("paper", {"optim": {"online_reward_weight": -1.0}})


def test_dataset_actions_are_clipped_inside_the_box_as_in_the_official_code() -> None:
    spec = ObservationSpec.make(state_dim=3)
    cfg = load_config("paper", SMALL)
    edge = _batch()
    edge.action = edge.action.sign()  # exactly +-1
    inside = Batch(obs=edge.obs, action=edge.action * (1 - 1e-5), reward=edge.reward,
                   terminated=edge.terminated)  # fmt: skip
    a, b = FOWMAgent(cfg, spec, 2), FOWMAgent(cfg, spec, 2)
    sa, sb = a.update(edge), b.update(inside)
    assert sa["pi_loss"] == sb["pi_loss"] and sa["reward_loss"] == sb["reward_loss"]
    assert DATA_ACTION_LIMIT == 1 - 1e-5


def test_tdmpc_policy_step_leaves_no_gradient_in_the_qs_and_maximises_q() -> None:
    spec = ObservationSpec.make(state_dim=3)
    agent = FOWMAgent(load_config("paper", {**SMALL, "mode": "tdmpc"}), spec, 2)
    torch.nn.init.normal_(agent.model.qs.l3.weight)
    stats = agent.update(_batch())
    assert all(p.grad is None for p in agent.model.qs.parameters())
    assert all(p.requires_grad for p in agent.model.qs.parameters())
    assert stats["pi_grad_norm"] > 0
