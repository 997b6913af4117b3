"""Weights files and blobs: round trips are exact; every kind of damage is rejected by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from fowm_core import weights as W
from fowm_core.config import config_hash, load_config
from fowm_core.specs import ObservationSpec
from fowm_core.weights import WeightsError, WeightsMetadata

SPEC = ObservationSpec.make(state_dim=4)



def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "encoder.0.weight": torch.randn(16, 4, generator=g),
        "encoder.0.bias": torch.randn(16, generator=g),
        "q.weight": torch.randn(5, 16, 8, generator=g).to(torch.bfloat16),
        "steps": torch.tensor(7, dtype=torch.int64),
    }


def meta() -> WeightsMetadata:
    cfg = load_config("paper")
    return WeightsMetadata(config_hash=config_hash(cfg), observation_spec=SPEC.to_dict(), action_dim=2)


def test_round_trip_is_bit_exact_and_metadata_survives(tmp_path) -> None:
    path = tmp_path / "w.safetensors"
    digest = W.save_weights(path, tensors(), meta())
    assert digest == W.weights_sha256(path.read_bytes())
    loaded = W.load_weights(path, reference=tensors(), expected_spec=SPEC, expected_action_dim=2,
                            expected_config_hash=meta().config_hash)
    for name, t in tensors().items():
        assert loaded.tensors[name].dtype == t.dtype and torch.equal(loaded.tensors[name], t)
    assert loaded.metadata.action_dim == 2 and loaded.metadata.observation_spec == SPEC.to_dict()
    assert loaded.metadata.created.endswith("Z")
    blob = W.weights_to_bytes(tensors(), meta())
    assert torch.equal(W.weights_from_bytes(blob).tensors["q.weight"], tensors()["q.weight"])


def test_not_safetensors_and_truncated_files_are_rejected(tmp_path) -> None:
    with pytest.raises(WeightsError, match="too short"):
        W.weights_from_bytes(b"abc")
    with pytest.raises(WeightsError, match="not a safetensors file or truncated"):
        W.weights_from_bytes(b"PK\x03\x04 this is a zip file, not weights at all")
    blob = W.weights_to_bytes(tensors(), meta())
    for cut in (len(blob) - 1, len(blob) // 2, 40):
        with pytest.raises(WeightsError, match="truncated"):
            W.weights_from_bytes(blob[:cut])
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(WeightsError, match="cannot read"):
        W.load_weights(missing)
    plain = st_save({"a": torch.zeros(2)})
    with pytest.raises(WeightsError, match="without FOWM metadata"):
        W.weights_from_bytes(plain)


def test_flipped_bytes_anywhere_are_rejected() -> None:
    blob = W.weights_to_bytes(tensors(), meta())
    rng = np.random.default_rng(0)
    header_len = int.from_bytes(blob[:8], "little")
    # positions in the data region, in the metadata JSON and in the tensor table of the header
    positions = [*rng.integers(8 + header_len, len(blob), size=20).tolist(), 8 + header_len // 2,
                 blob.index(b'"action_dim') + 16, blob.index(b"shape") + 9]
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 0x10
        with pytest.raises(WeightsError, match="corrupted|checksum|truncated"):
            W.weights_from_bytes(bytes(bad))


def test_shape_dtype_name_mismatches_name_the_tensor() -> None:
    ref = tensors()
    wrong_shape = {**ref, "encoder.0.weight": torch.zeros(32, 4)}
    with pytest.raises(WeightsError, match=r"'encoder.0.weight' has shape \(32, 4\).*expects \(16, 4\)"):
        W.weights_from_bytes(W.weights_to_bytes(wrong_shape, meta()), reference=ref)
    wrong_dtype = {**ref, "q.weight": ref["q.weight"].float()}
    with pytest.raises(WeightsError, match="'q.weight' has dtype torch.float32.*torch.bfloat16"):
        W.weights_from_bytes(W.weights_to_bytes(wrong_dtype, meta()), reference=ref)
    missing = {k: v for k, v in ref.items() if k != "encoder.0.bias"}
    with pytest.raises(WeightsError, match="missing tensors 'encoder.0.bias'"):
        W.weights_from_bytes(W.weights_to_bytes(missing, meta()), reference=ref)
    extra = {**ref, "head.extra": torch.zeros(1)}
    with pytest.raises(WeightsError, match="unexpected tensors 'head.extra'"):
        W.weights_from_bytes(W.weights_to_bytes(extra, meta()), reference=ref)


def test_non_finite_values_are_rejected_on_save_and_load() -> None:
    bad = {**tensors(), "encoder.0.bias": torch.full((16,), float("nan"))}
    with pytest.raises(WeightsError, match="'encoder.0.bias'.*NaN or Inf"):
        W.weights_to_bytes(bad, meta())
    # A producer that skipped the check (valid checksum, NaN inside) is still refused on load.
    meta_json = json.dumps({**meta().__dict__, "created": "2026-11-21T00:00:00Z"}, sort_keys=True)
    blob = st_save(bad, metadata={"fowm": meta_json, "fowm_sha256": W._checksum(meta_json, bad)})
    with pytest.raises(WeightsError, match="tensor 'encoder.0.bias' contains NaN or Inf"):
        W.weights_from_bytes(blob)


def test_config_spec_and_action_dim_mismatches_are_rejected() -> None:
    blob = W.weights_to_bytes(tensors(), meta())
    other = load_config("paper", {"model": {"mlp_dim": 64}})
    with pytest.raises(WeightsError, match="config hash mismatch"):
        W.weights_from_bytes(blob, expected_config_hash=config_hash(other))
    with pytest.raises(WeightsError, match="observation spec mismatch"):
        W.weights_from_bytes(blob, expected_spec=ObservationSpec.make(rgb=(3, 84, 84), state_dim=4))
    with pytest.raises(WeightsError, match="action dim mismatch: weights have 2, expected 4"):
        W.weights_from_bytes(blob, expected_action_dim=4)
    with pytest.raises(WeightsError, match="metadata is required"):
        W.weights_to_bytes(tensors())


def test_agent_weights_round_trip_reproduces_actions_bit_for_bit(tmp_path) -> None:
    from fowm_core.agent import FOWMAgent
    from fowm_core.buffer import EpisodeBuffer
    from fowm_core.toy_env import POINT_MASS_OVERRIDES, PointMassEnv, make_expert_dataset

    env = PointMassEnv()
    cfg = load_config("paper", {**POINT_MASS_OVERRIDES, "optim": {"batch_size": 16}})
    trained = FOWMAgent(cfg, env.obs_spec, env.action_dim)
    buf = EpisodeBuffer(env.obs_spec, env.action_dim, 500, horizon=5)
    for e in make_expert_dataset(3, noise=0.3, seed=0):
        buf.add(e)
    rng = np.random.default_rng(0)
    for _ in range(5):
        trained.update(buf.sample(16, rng))
    path = tmp_path / "agent.safetensors"
    W.save_weights(path, trained)

    consumer = FOWMAgent(cfg, env.obs_spec, env.action_dim)  # same seed: same planner noise stream
    observations = [env.reset(seed=s)[0] for s in range(4)]
    before = [consumer.act(o, first_step=True, explore=False) for o in observations]
    consumer = FOWMAgent(cfg, env.obs_spec, env.action_dim)
    meta = W.load_weights_into(consumer, path)
    assert meta.num_updates == 5 and meta.config_hash == config_hash(cfg)
    expected = [trained.act(o, first_step=True, explore=False) for o in observations]
    got = [consumer.act(o, first_step=True, explore=False) for o in observations]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    assert not all(np.array_equal(a, b) for a, b in zip(before, got))  # the load changed behaviour

    # A consumer built with another model size rejects the file, naming the config mismatch.
    other = FOWMAgent(load_config("paper", {**POINT_MASS_OVERRIDES, "model": {"mlp_dim": 32}}),
                      env.obs_spec, env.action_dim)
    with pytest.raises(WeightsError, match="has shape|config hash mismatch"):
        W.load_weights_into(other, path)
    with pytest.raises(WeightsError, match="has shape"):
        W.load_weights_into(other, path, check_config=False)
