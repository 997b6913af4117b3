"""Loss pieces against hand computations, and the update step's masking and learning."""

from __future__ import annotations

import math

import pytest
import torch

from fowm_core.agent import (
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


def test_policy_nll_is_mean_squared_error_over_action_dims() -> None:
    pred, act = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, -1.0]])
    assert torch.allclose(policy_nll(pred, act), torch.tensor([[(1 + 4) / 2]]))


def _batch(H: int = 4, B: int = 4, A: int = 2, S: int = 3, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs={"state": torch.randn(H + 1, B, S, generator=g)},
        action=torch.rand(H, B, A, generator=g) * 2 - 1,
        reward=torch.randn(H, B, 1, generator=g),
        terminated=torch.zeros(H, B, 1),
    )


@pytest.mark.parametrize("mode", ["fowm", "tdmpc"])
def test_data_after_a_terminal_does_not_change_the_update(mode: str) -> None:
    spec = ObservationSpec.make(state_dim=3)
    cfg = load_config("paper", {**SMALL, "mode": mode})
    clean = _batch()
    clean.terminated[1] = 1.0  # every sequence ends on its transition 1 -> 2
    dirty = Batch(obs={"state": clean.obs["state"].clone()}, action=clean.action.clone(),
                  reward=clean.reward.clone(), terminated=clean.terminated.clone())  # fmt: skip
    dirty.obs["state"][3:] += 100.0  # observations after the terminal one
    dirty.action[2:] = -dirty.action[2:]
    dirty.reward[2:] += 50.0
    a, b = FOWMAgent(cfg, spec, 2), FOWMAgent(cfg, spec, 2)
    stats_a, stats_b = a.update(clean), b.update(dirty)
    for k in ("consistency_loss", "reward_loss", "q_loss", "pi_loss"):
        assert stats_a[k] == pytest.approx(stats_b[k], rel=1e-5, abs=1e-7), k
    # control: the same corruption without the terminal does change the losses
    c = FOWMAgent(cfg, spec, 2)
    dirty.terminated.zero_()
    assert c.update(dirty)["reward_loss"] > stats_a["reward_loss"] + 1.0


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
