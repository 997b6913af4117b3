"""World model shapes, the batched Q-ensemble, EMA targets, augmentation and the weight contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fowm_core.agent import FOWMAgent
from fowm_core.augment import random_shift
from fowm_core.config import load_config
from fowm_core.specs import Batch, ObservationSpec
from fowm_core.world_model import WorldModel

SMALL = {"model": {"mlp_dim": 32, "latent_dim": 8, "state_enc_dim": 16, "num_channels": 8}}
RGB_STATE = ObservationSpec.make(rgb=(3, 84, 84), state_dim=6)


def _obs(lead: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.randint(0, 256, (*lead, 3, 84, 84), generator=g, dtype=torch.uint8),
        "state": torch.randn(*lead, 6, generator=g),
    }


def test_paper_sized_model_shapes_and_ranges() -> None:
    m = WorldModel(load_config("paper").model, RGB_STATE, action_dim=4)
    z = m.encode(_obs((3, 2)))
    assert z.shape == (3, 2, 50)
    assert ((z > 0) & (z < 1)).all()  # LayerNorm + Sigmoid
    a = torch.rand(3, 2, 4) * 2 - 1
    assert m.next(z, a).shape == (3, 2, 50) and ((m.next(z, a) > 0) & (m.next(z, a) < 1)).all()
    assert m.reward(z, a).shape == (3, 2, 1) and m.v(z).shape == (3, 2, 1)
    pi = m.pi(z)
    assert pi.shape == (3, 2, 4) and pi.abs().max() <= 1
    # zero-initialised last layers: reward and every Q start at exactly 0
    assert m.reward(z, a).abs().max() == 0 and m.q_all(z, a).abs().max() == 0


def test_both_modalities_are_averaged() -> None:
    m = WorldModel(load_config("paper", SMALL).model, RGB_STATE, action_dim=2)
    obs = _obs((4,))
    z = m.encode(obs)
    only_rgb = torch.sigmoid(m.enc_norms["rgb"](m.encoders["rgb"](obs["rgb"])))
    only_state = torch.sigmoid(m.enc_norms["state"](m.encoders["state"](obs["state"])))
    assert torch.allclose(z, (only_rgb + only_state) / 2)
    with pytest.raises(ValueError, match="too small"):
        WorldModel(load_config("paper", SMALL).model, ObservationSpec.make(rgb=(3, 20, 20)), 2)


def test_pixels_are_scaled_to_unit_range_as_in_the_official_code() -> None:
    """The official encoder divides uint8 pixels by 255 ([0, 1]); ours folds that into the first conv."""
    m = WorldModel(load_config("paper", SMALL).model, RGB_STATE, action_dim=2)
    x = _obs((3,))["rgb"]
    want = m.encoders["rgb"].head(m.encoders["rgb"].convs(x.float() / 255.0).flatten(1))
    assert torch.allclose(m.encoders["rgb"](x), want, atol=1e-5)
    shifted = m.encoders["rgb"].head(m.encoders["rgb"].convs(x.float() / 255.0 - 0.5).flatten(1))
    assert not torch.allclose(m.encoders["rgb"](x), shifted, atol=1e-3)  # [-0.5, 0.5] would differ


@pytest.mark.parametrize("amp", [False, True])
def test_online_and_target_encodings_in_one_conv_stack_equal_two_calls(amp: bool) -> None:
    m = WorldModel(load_config("paper", SMALL).model, RGB_STATE, action_dim=2)
    for p in m.target.parameters():  # a target that differs from the online encoder
        p.data.add_(0.05 * torch.randn_like(p))
    obs = _obs((3, 2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        z, zt = m.encode_online_and_target(obs)
        want, want_t = m.encode(obs), m.encode(obs, target=True)
    assert z.shape == zt.shape == (3, 2, 8) and not torch.allclose(z, zt, atol=1e-3)
    assert torch.allclose(z, want, atol=1e-6) and torch.allclose(zt, want_t, atol=1e-6)


def test_value_head_has_the_q_heads_shape() -> None:
    """Official V: Linear -> LayerNorm -> Tanh -> Linear -> ELU -> Linear(1), like each Q head."""
    m = WorldModel(load_config("paper", SMALL).model, RGB_STATE, action_dim=2)
    kinds = [type(layer).__name__ for layer in m.value]
    assert kinds == ["Linear", "LayerNorm", "Tanh", "Linear", "ELU", "Linear"]
    z = torch.rand(4, 8)
    h = torch.nn.functional.elu(m.value[3](torch.tanh(m.value[1](m.value[0](z)))))
    assert torch.allclose(m.v(z), m.value[5](h))


def test_q_ensemble_is_one_batched_call_matching_per_member_heads() -> None:
    m = WorldModel(load_config("paper", SMALL).model, RGB_STATE, action_dim=2)
    torch.nn.init.normal_(m.qs.l3.weight)  # un-zero the last layer so members can differ
    z, a = torch.rand(7, 8), torch.rand(7, 2)
    q = m.q_all(z, a)
    assert q.shape == (5, 7, 1)
    x = torch.cat([z, a], -1)
    for k in range(5):  # reference: member k computed on its own with plain ops
        h = x @ m.qs.l1.weight[k] + m.qs.l1.bias[k]
        h = torch.nn.functional.layer_norm(h, (32,)) * m.qs.ln.weight[k] + m.qs.ln.bias[k]
        h = torch.nn.functional.elu(torch.tanh(h) @ m.qs.l2.weight[k] + m.qs.l2.bias[k])
        assert torch.allclose(q[k], h @ m.qs.l3.weight[k] + m.qs.l3.bias[k], atol=1e-5)
    assert q.std(0).min() > 0  # independent inits: the ensemble disagrees
    qmin = m.q_min(z, a, generator=torch.Generator().manual_seed(0))
    assert qmin.shape == (7, 1) and (qmin >= q.min(0).values - 1e-6).all()


def test_targets_follow_ema_and_drift_from_online_weights() -> None:
    optim = {"batch_size": 4, "target_update_freq": 2, "ema_tau": 0.25}
    cfg = load_config("paper", {**SMALL, "optim": optim})
    agent = FOWMAgent(cfg, RGB_STATE, 2)
    m = agent.model
    online0 = m.qs.l3.weight.detach().clone()  # l3 gets gradient first (zero-init)
    assert torch.equal(m.target["qs"].l3.weight, online0)  # targets start as copies
    H, B = 3, 4
    batch = Batch(obs=_obs((H + 1, B)), action=torch.rand(H, B, 2) * 2 - 1, reward=torch.randn(H, B, 1),
                  terminated=torch.zeros(H, B, 1))  # fmt: skip
    agent.update(batch)
    # after 1 update (freq 2) the target has not moved although the online net has
    assert torch.equal(m.target["qs"].l3.weight, online0)
    assert not torch.equal(m.qs.l3.weight, online0)
    target_before = m.target["encoders"]["state"][0].weight.detach().clone()
    agent.update(batch)
    online = m.encoders["state"][0].weight.detach()
    want = 0.75 * target_before + 0.25 * online
    assert torch.allclose(m.target["encoders"]["state"][0].weight, want, atol=1e-6)
    assert not torch.allclose(m.target["encoders"]["state"][0].weight, online)
    assert all(not p.requires_grad for p in m.target.parameters())


def test_random_shift_keeps_uint8_and_moves_content_within_pad() -> None:
    img = torch.zeros(2, 5, 3, 84, 84, dtype=torch.uint8)
    img[..., 40, 40] = 255
    out = random_shift(img, pad=4, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == img.shape
    offsets = []
    for im in out.reshape(-1, 3, 84, 84):
        ys, xs = torch.nonzero(im[0], as_tuple=True)
        assert len(ys) == 1  # a shifted copy, not a blur
        offsets.append((int(ys[0]) - 40, int(xs[0]) - 40))
    assert all(abs(dy) <= 4 and abs(dx) <= 4 for dy, dx in offsets)
    assert len(set(offsets)) > 1  # each image gets its own shift
    assert torch.equal(random_shift(img, pad=0), img)
    # replicate padding: a constant image stays constant
    const = torch.full((4, 3, 84, 84), 7, dtype=torch.uint8)
    assert torch.equal(random_shift(const, pad=4), const)
    with pytest.raises(ValueError, match="pad"):
        random_shift(img, pad=-1)


def test_random_shift_equals_replicate_pad_and_crop() -> None:
    """Against the definition: replicate-pad by `pad`, crop at the drawn offset (same draws)."""
    img = torch.randint(0, 256, (3, 4, 3, 20, 24), dtype=torch.uint8)
    pad = 4
    out = random_shift(img, pad=pad, generator=torch.Generator().manual_seed(5))
    off = torch.randint(0, 2 * pad + 1, (12, 2), generator=torch.Generator().manual_seed(5))
    padded = torch.nn.functional.pad(img.reshape(12, 3, 20, 24).float(), (pad,) * 4, mode="replicate")
    want = torch.stack([padded[k, :, dy : dy + 20, dx : dx + 24] for k, (dy, dx) in enumerate(off.tolist())])
    assert torch.equal(out.reshape(12, 3, 20, 24), want.to(torch.uint8))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_weights_roundtrip_gives_identical_actions(dtype: str) -> None:
    cfg = load_config("paper", {**SMALL, "planner": {"num_samples": 32, "num_elites": 8, "dtype": dtype}})
    spec = ObservationSpec.make(state_dim=6)
    trained = FOWMAgent(cfg, spec, 2)
    obs = {"state": np.linspace(-1, 1, 6, dtype=np.float32)}
    fresh = FOWMAgent(load_config("paper", {**SMALL, "seed": 99, "planner": cfg.planner.__dict__}), spec, 2)
    fresh.act(obs, first_step=True, explore=False)  # builds its planner copy of the old weights
    weights = trained.get_weights()
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in weights.values())
    assert any(k.startswith("target.") for k in weights)
    fresh.load_weights(weights)
    # same weights + same planner RNG state -> the same plan
    fresh.planner.generator.set_state(trained.planner.generator.get_state())
    a1 = trained.act(obs, first_step=True, explore=False)
    a2 = fresh.act(obs, first_step=True, explore=False)
    assert a1.dtype == np.float32 and a1.shape == (2,)
    np.testing.assert_array_equal(a1, a2)
    weights["policy.0.weight"] += 1.0  # get_weights returns copies, not views of live parameters
    assert not torch.equal(trained.model.policy[0].weight, weights["policy.0.weight"])


def test_load_weights_is_strict() -> None:
    spec = ObservationSpec.make(state_dim=6)
    agent = FOWMAgent(load_config("paper", SMALL), spec, 2)
    w = agent.get_weights()
    with pytest.raises(ValueError, match="missing"):
        agent.load_weights({k: v for k, v in w.items() if k != "value.0.bias"})
    bad = dict(w, **{"qs.l1.weight": torch.zeros(5, 3, 3)})
    with pytest.raises(ValueError, match=r"qs\.l1\.weight.*shape"):
        agent.load_weights(bad)
    bad = dict(w, **{"value.0.bias": w["value.0.bias"].double()})
    with pytest.raises(ValueError, match=r"value\.0\.bias.*dtype"):
        agent.load_weights(bad)


def test_act_validates_observations() -> None:
    agent = FOWMAgent(load_config("paper", SMALL), ObservationSpec.make(state_dim=6), 2)
    with pytest.raises(ValueError, match="shape"):
        agent.act({"state": np.zeros(5, np.float32)}, first_step=True, explore=False)
    with pytest.raises(ValueError, match="NaN"):
        agent.act({"state": np.full(6, np.nan, np.float32)}, first_step=True, explore=False)


def test_q_ensemble_cost_in_ops_does_not_grow_with_members() -> None:
    def matmul_calls(num_q: int) -> int:
        cfg = load_config("paper", {**SMALL, "model": {**SMALL["model"], "num_q": num_q}})
        m = WorldModel(cfg.model, ObservationSpec.make(state_dim=6), action_dim=2)
        z, a = torch.rand(16, 8), torch.rand(16, 2)
        with torch.profiler.profile() as prof:
            assert m.q_all(z, a).shape == (num_q, 16, 1)
        counts = {e.key: e.count for e in prof.key_averages()}
        return sum(counts.get(n, 0) for n in ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm"))

    assert matmul_calls(2) == matmul_calls(7) == 3  # one batched matmul per layer, not one per member
