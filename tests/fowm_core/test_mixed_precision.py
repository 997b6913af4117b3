"""bf16 autocast of the update (`optim.amp_dtype`) learns like float32: on a fixed short pixel run
the losses end where float32's do, within float32's own seed-to-seed spread."""

from __future__ import annotations

import numpy as np

from fowm_core.agent import FOWMAgent
from fowm_core.buffer import Episode, EpisodeBuffer
from fowm_core.config import load_config
from fowm_core.specs import ObservationSpec
from fowm_core.toy_env import make_expert_dataset

SIZE = 48  # pixels per side: the smallest round size the 4-layer conv stack takes comfortably
SPEC = ObservationSpec.make(rgb=(3, SIZE, SIZE), state_dim=2)
TINY = {"model": {"mlp_dim": 64, "latent_dim": 16, "state_enc_dim": 32, "num_channels": 8},
        "optim": {"batch_size": 16, "lr": 1e-3}}  # fmt: skip
UPDATES = 150


def render(state: np.ndarray) -> np.ndarray:
    """(T+1, 4) point-mass states -> (T+1, 3, S, S) uint8: the point in red, the goal in green."""
    img = np.zeros((len(state), 3, SIZE, SIZE), np.uint8)
    px = np.clip(((state + 1.0) / 2.0 * (SIZE - 4)).round().astype(int), 0, SIZE - 4)
    for t, (x, y, gx, gy) in enumerate(px):
        img[t, 0, y : y + 4, x : x + 4] = 255
        img[t, 1, gy : gy + 4, gx : gx + 4] = 255
    return img


def pixel_buffer() -> EpisodeBuffer:
    """Point-mass episodes seen by a camera: the image holds point and goal, the state the point only."""
    buf = EpisodeBuffer(SPEC, 2, 2000, horizon=5)
    for e in make_expert_dataset(20, noise=0.5, seed=0):
        s = e.obs["state"]
        buf.add(Episode({"rgb": render(s), "state": s[:, :2].copy()}, e.action, e.reward, truncated=True))
    return buf


def final_losses(amp: str, seed: int, buf: EpisodeBuffer) -> np.ndarray:
    """Mean of (consistency, reward, q, v) over the last 30 of UPDATES updates on the same batches."""
    cfg = load_config("paper", {**TINY, "seed": seed, "optim": {**TINY["optim"], "amp_dtype": amp}})
    agent = FOWMAgent(cfg, SPEC, 2)
    rng = np.random.default_rng(0)
    rows = [agent.update(buf.sample(16, rng)) for _ in range(UPDATES)]
    keys = ("consistency_loss", "reward_loss", "q_loss", "v_loss")
    return np.array([[r[k] for k in keys] for r in rows[-30:]]).mean(0)


def test_bf16_autocast_learns_like_float32() -> None:
    buf = pixel_buffer()
    fp32_a, fp32_b = final_losses("float32", 1, buf), final_losses("float32", 2, buf)
    bf16 = final_losses("bfloat16", 1, buf)
    spread = np.abs(fp32_a - fp32_b)  # what a different seed alone changes
    assert np.all(np.isfinite(bf16))
    # each loss within float32's seed spread (plus 20 % of its value, for the noise of one seed pair)
    print(f"final losses (consistency, reward, q, v): fp32 {fp32_a}, fp32 other seed {fp32_b}, bf16 {bf16}")
    assert np.all(np.abs(bf16 - fp32_a) <= 2.0 * spread + 0.2 * fp32_a), (bf16, fp32_a, fp32_b)
    # and the run did learn: the reward loss fell well below the reward's own second moment
    reward_power = float(buf.sample(256, np.random.default_rng(1)).reward.square().mean())
    assert bf16[1] < 0.5 * reward_power and fp32_a[1] < 0.5 * reward_power
