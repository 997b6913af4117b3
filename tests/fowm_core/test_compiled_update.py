"""`optim.compile` (the realtime-cpu preset's default) compiles the update's latent part and the
policy loss: it must compute the same update as eager code, in both modes and with prioritised
replay's importance weights, so that it is a speed option and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fowm_core.agent import FOWMAgent
from fowm_core.config import load_config
from fowm_core.specs import Batch, ObservationSpec

SPEC = ObservationSpec.make(rgb=(3, 48, 48), state_dim=3)
TINY = {"model": {"mlp_dim": 32, "latent_dim": 8, "state_enc_dim": 16, "num_channels": 4},
        "optim": {"batch_size": 8}}  # fmt: skip


def batch(seed: int, cfg_horizon: int, size: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    H, B = cfg_horizon, size
    return Batch(
        obs={"rgb": torch.randint(0, 256, (H + 1, B, 3, 48, 48), generator=g, dtype=torch.uint8),
             "state": torch.randn(H + 1, B, 3, generator=g)},
        action=torch.rand(H, B, 4, generator=g) * 2 - 1,
        reward=torch.randn(H, B, 1, generator=g) * 0.1,
        terminated=torch.zeros(H, B, 1),
        weight=torch.rand(B, generator=g) + 0.5 if seed % 2 else None,  # PER's importance weights
    )  # fmt: skip


def run(mode: str, amp: str, compiled: bool, updates: int = 3) -> tuple[list[dict], dict[str, torch.Tensor]]:
    over = {**TINY, "mode": mode, "optim": {**TINY["optim"], "amp_dtype": amp, "compile": compiled}}
    agent = FOWMAgent(load_config("realtime-cpu", over), SPEC, 4)
    assert agent.cfg.optim.compile is compiled
    rows = [agent.update(batch(i, agent.cfg.optim.horizon, 8)) for i in range(updates)]
    return rows, agent.get_weights()


def test_realtime_cpu_compiles_its_update_and_paper_does_not() -> None:
    assert load_config("realtime-cpu").optim.compile and not load_config("paper").optim.compile


@pytest.mark.parametrize("mode", ["fowm", "tdmpc"])
def test_compiled_update_is_the_eager_update_in_float32(mode: str) -> None:
    eager_rows, eager_w = run(mode, "float32", compiled=False)
    comp_rows, comp_w = run(mode, "float32", compiled=True)
    for e, c in zip(eager_rows, comp_rows, strict=True):
        assert e.keys() == c.keys()
        for k in e:
            assert c[k] == pytest.approx(e[k], rel=1e-4, abs=1e-6), k
    # three optimiser steps later every parameter (and EMA target) is still the same to float rounding
    worst = max((eager_w[k] - comp_w[k]).abs().max().item() for k in eager_w)
    assert worst < 1e-5, worst


def test_compiled_bf16_update_matches_eager_within_rounding() -> None:
    eager_rows, _ = run("fowm", "bfloat16", compiled=False)
    comp_rows, _ = run("fowm", "bfloat16", compiled=True)
    keys = ("consistency_loss", "reward_loss", "q_loss", "v_loss", "pi_loss", "total_loss")
    e = np.array([[r[k] for k in keys] for r in eager_rows])
    c = np.array([[r[k] for k in keys] for r in comp_rows])
    # bf16 keeps 8 bits: a fused kernel rounds at other places than eager ops do, nothing more
    assert np.all(np.abs(c - e) <= 0.05 * np.abs(e) + 1e-4), (e, c)


def test_compiled_update_does_not_recompile_per_batch() -> None:
    over = {**TINY, "optim": {**TINY["optim"], "amp_dtype": "float32", "compile": True}}
    agent = FOWMAgent(load_config("realtime-cpu", over), SPEC, 4)
    agent.update(batch(0, agent.cfg.optim.horizon, 8))
    agent.update(batch(1, agent.cfg.optim.horizon, 8))
    # new contents, with and without importance weights, and new weights: the same graphs
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(2, 6):
            agent.update(batch(i, agent.cfg.optim.horizon, 8))


def test_warm_up_compiles_ahead_and_leaves_the_agent_as_it_was() -> None:
    from torch._dynamo.utils import counters

    # batch 6: shapes no other test compiles, so the graphs counted here are this test's own
    over = {**TINY, "optim": {**TINY["optim"], "batch_size": 6, "amp_dtype": "float32", "compile": True}}
    cfg = load_config("realtime-cpu", over)
    warm, cold = FOWMAgent(cfg, SPEC, 4), FOWMAgent(cfg, SPEC, 4)
    before, optim_state = warm.get_weights(), warm.model_optim.state_dict()
    graphs = counters["stats"]["unique_graphs"]
    assert warm.warm_up_update() > 0.0
    assert counters["stats"]["unique_graphs"] > graphs, "the warm-up compiled nothing"
    after = warm.get_weights()
    assert all(torch.equal(before[k], after[k]) for k in before), "the warm-up changed the weights"
    assert warm.num_updates == 0 and not warm.model_optim.state_dict()["state"] and not optim_state["state"]

    graphs = counters["stats"]["unique_graphs"]
    b = batch(3, cfg.optim.horizon, 6)
    warm_row = warm.update(b)
    assert counters["stats"]["unique_graphs"] == graphs, "the first real update compiled again"
    assert cold.update(b) == warm_row  # the same update as an agent that never warmed up
    assert all(torch.equal(v, cold.get_weights()[k]) for k, v in warm.get_weights().items())
    assert FOWMAgent(load_config("paper", TINY), SPEC, 4).warm_up_update() == 0.0  # nothing to compile


def test_a_failing_compile_falls_back_to_the_eager_update(monkeypatch) -> None:
    """A machine where inductor cannot build kernels (e.g. no C++ compiler) must still train: the
    warm-up warns and the agent updates eagerly, exactly as an agent without optim.compile."""
    import torch._inductor.compile_fx as compile_fx

    def broken(*_args, **_kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(compile_fx, "compile_fx", broken)
    # batch 5: shapes no other test compiles, so no cached graph can hide the failure
    optim = {**TINY["optim"], "batch_size": 5, "amp_dtype": "float32"}
    agent = FOWMAgent(load_config("realtime-cpu", {**TINY, "optim": {**optim, "compile": True}}), SPEC, 4)
    eager = FOWMAgent(load_config("realtime-cpu", {**TINY, "optim": {**optim, "compile": False}}), SPEC, 4)
    with pytest.warns(RuntimeWarning, match="(?s)compiling the update failed.*no C\\+\\+ compiler"):
        assert agent.warm_up_update() == 0.0
    assert agent.warm_up_update() == 0.0  # eager from now on: nothing more to compile
    b = batch(1, agent.cfg.optim.horizon, 5)
    assert agent.update(b) == eager.update(b)
    assert all(torch.equal(v, eager.get_weights()[k]) for k, v in agent.get_weights().items())
