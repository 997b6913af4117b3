"""EpisodeBuffer / BalancedSampler: windows start anywhere and are masked past the end, prioritised
replay follows its priorities, ratios hold, memory is bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fowm_core.buffer import BalancedSampler, Episode, EpisodeBuffer
from fowm_core.specs import ObservationSpec

SPEC = ObservationSpec.make(rgb=(3, 8, 8), state_dim=3)
H = 5


def make_episode(ep_id: int, steps: int, terminated: bool = False) -> Episode:
    """Every stored value encodes (episode id, step) so a sampled window reveals where it came from."""
    t = np.arange(steps + 1, dtype=np.float32)
    state = np.stack([np.full_like(t, ep_id), t, t * 0.5], axis=1)  # (T+1, 3)
    rgb = np.full((steps + 1, 3, 8, 8), ep_id % 256, dtype=np.uint8)
    action = np.stack([np.full(steps, ep_id, np.float32), np.arange(steps, dtype=np.float32)], axis=1)
    reward = np.arange(steps, dtype=np.float32) + 1000.0 * ep_id
    obs = {"rgb": rgb, "state": state}
    return Episode(obs, action, reward, terminated=terminated, truncated=not terminated)


def test_windows_start_anywhere_and_are_masked_past_the_episode_end() -> None:
    """As in the official code, a window may start at any step, also in the last H-1 steps of a
    time-limited episode; what lies past the end is padding, flagged by `ended`."""
    buf = EpisodeBuffer(SPEC, action_dim=2, capacity_steps=400, horizon=H)
    lengths = [int(6 + 3 * (i % 4)) for i in range(12)]
    for i, n in enumerate(lengths):
        buf.add(make_episode(i, steps=n))
    assert buf.num_windows == sum(lengths)  # one window per transition
    batch = buf.sample(4096, np.random.default_rng(0))
    assert batch.obs["state"].shape == (H + 1, 4096, 3)
    assert batch.obs["rgb"].shape == (H + 1, 4096, 3, 8, 8) and batch.obs["rgb"].dtype == torch.uint8
    assert batch.action.shape == (H, 4096, 2) and batch.reward.shape == (H, 4096, 1)
    assert batch.ended.shape == (H, 4096, 1) and torch.all(batch.terminated == 0)
    ep_ids = batch.obs["state"][..., 0]
    assert torch.all(ep_ids == ep_ids[0:1])  # one episode per window, never the next one's data
    assert torch.all(batch.obs["rgb"][:, :, 0, 0, 0].float() == ep_ids)
    start, steps = batch.obs["state"][0, :, 1], batch.obs["state"][..., 1]
    n = torch.tensor(lengths, dtype=torch.float32)[ep_ids[0].long()]  # (B,) episode lengths
    t = torch.arange(H + 1, dtype=torch.float32)[:, None]
    assert torch.equal(steps, torch.minimum(start + t, n))  # past the end: the final observation again
    inside = start + t[:-1] < n  # (H, B)
    assert torch.equal(batch.ended[..., 0], (start + t[:-1] == n - 1).float())  # the last transition
    assert torch.all(batch.action[~inside] == 0) and torch.all(batch.reward[~inside] == 0)
    assert torch.all(batch.action[..., 1][inside] == steps[:-1][inside])
    # Every step of every episode starts some window, the last H-1 steps included.
    starts = {(int(e), int(s)) for e, s in zip(ep_ids[0], start)}
    assert starts == {(i, s) for i, n in enumerate(lengths) for s in range(n)}
    late = start >= n - H + 1  # windows the old sampler never drew
    assert late.float().mean() > 0.3
    assert torch.equal(batch.index, torch.as_tensor(buf._index()[0])[ep_ids[0].long()] + start.long())


def test_prioritised_sampling_follows_priorities_and_weights_correct_for_them() -> None:
    buf = EpisodeBuffer(SPEC, action_dim=2, capacity_steps=100, horizon=H)
    buf.add(make_episode(0, steps=10))
    buf.add(make_episode(1, steps=10))
    probe = buf.sample(20, np.random.default_rng(0))
    assert buf._priority[probe.index.numpy()].tolist() == [1.0] * 20  # new windows: max priority (1)
    slots = buf._index()[4]  # (20,) slot of each window
    priority = np.arange(1.0, 21.0)  # window k gets TD error k + 1
    buf.update_priorities(slots, priority)
    draws = 200_000
    batch = buf.sample(draws, np.random.default_rng(1), alpha=0.6, beta=0.4)
    counts = np.bincount(np.searchsorted(slots, batch.index.numpy()), minlength=20) / draws
    want = priority**0.6 / (priority**0.6).sum()
    np.testing.assert_allclose(counts, want, rtol=0.05)
    # importance weights (N P)^-beta, normalised by the batch max: the rarest window weighs 1
    w = batch.weight.numpy()
    raw = (20 * want[np.searchsorted(slots, batch.index.numpy())]) ** -0.4
    np.testing.assert_allclose(w, raw / raw.max(), rtol=1e-5)
    assert w.max() == pytest.approx(1.0) and w.min() == pytest.approx(
        (want.min() / want.max()) ** 0.4, rel=1e-5
    )
    # alpha 0 is uniform and unweighted; a new episode's windows enter at the current max priority
    uniform = np.bincount(np.searchsorted(slots, buf.sample(draws, np.random.default_rng(2)).index.numpy()))
    np.testing.assert_allclose(uniform / draws, 1 / 20, rtol=0.05)
    buf.add(make_episode(2, steps=6))
    assert np.all(buf._priority[buf._index()[4][-6:]] == pytest.approx(20.0 + 1e-6))


def test_balanced_sampler_sends_priorities_back_to_the_right_buffer() -> None:
    offline, online = EpisodeBuffer(SPEC, 2, 200, H), EpisodeBuffer(SPEC, 2, 200, H)
    for i in range(3):
        offline.add(make_episode(i, 12))
        online.add(make_episode(100 + i, 12))
    sampler = BalancedSampler(offline, online, 0.5, seed=0)
    batch = sampler.sample(16, alpha=0.6, beta=0.4)
    assert batch.weight.shape == (16,) and batch.index.shape == (16,)
    from_offline = batch.obs["state"][0, :, 0] < 100
    assert from_offline[:8].all() and not from_offline[8:].any()
    assert torch.equal(batch.online, (~from_offline).float())  # the rows' source, for the update
    sampler.update_priorities(batch, np.where(from_offline.numpy(), 7.0, 9.0))
    assert set(offline._priority[batch.index[:8].numpy()].round(3)) == {7.0}
    assert set(online._priority[batch.index[8:].numpy()].round(3)) == {9.0}


def test_terminated_episode_windows_stop_at_the_terminal() -> None:
    buf = EpisodeBuffer(SPEC, action_dim=2, capacity_steps=100, horizon=H)
    buf.add(make_episode(7, steps=3, terminated=True))  # shorter than H: still usable
    buf.add(make_episode(8, steps=10))
    batch = buf.sample(400, np.random.default_rng(1))
    from7 = batch.obs["state"][0, :, 0] == 7
    assert from7.any()
    term = batch.terminated[:, from7, 0]  # (H, n)
    action = batch.action[:, from7]  # (H, n, A)
    step = batch.obs["state"][:, from7, 1]  # (H+1, n)
    # The terminal flag sits exactly at transition 2 -> 3 of episode 7; nothing after it is real data.
    for col in range(term.shape[1]):
        k = 2 - int(step[0, col])
        assert term[k, col] == 1 and term[:, col].sum() == 1
        assert batch.ended[k, from7.nonzero()[col, 0], 0] == 1  # a terminal also ends the episode
        assert torch.all(action[k + 1 :, col] == 0)
        assert torch.all(step[k + 1 :, col] == 3)  # the final observation is repeated
    assert torch.all(batch.terminated[:, ~from7] == 0)


def test_capacity_evicts_oldest_and_memory_is_bounded() -> None:
    buf = EpisodeBuffer(SPEC, action_dim=2, capacity_steps=60, horizon=H)
    nbytes = sum(a.nbytes for a in buf._obs.values())
    for i in range(40):
        buf.add(make_episode(i, steps=10 + (i % 3)))
        assert buf.num_transitions + buf.num_episodes <= 60
    assert sum(a.nbytes for a in buf._obs.values()) == nbytes
    kept = [int(buf.episode(i).obs["state"][0, 0]) for i in range(buf.num_episodes)]
    assert kept == list(range(40 - len(kept), 40))  # the newest episodes, oldest first
    assert buf.episodes_added == 40 and len(kept) >= 4
    ids = buf.sample(512, np.random.default_rng(2)).obs["state"][..., 0]
    assert set(ids.unique().tolist()) == set(kept)


def test_holding_keeps_every_episode_with_no_spare_slots() -> None:
    episodes = [make_episode(i, steps=10 + i) for i in range(5)]
    buf = EpisodeBuffer.holding(SPEC, 2, episodes, H)
    assert buf.capacity_steps == sum(len(e) + 1 for e in episodes)  # observation slots, not transitions
    assert [int(buf.episode(i).obs["state"][0, 0]) for i in range(buf.num_episodes)] == list(range(5))
    assert buf.num_transitions == sum(len(e) for e in episodes)
    assert EpisodeBuffer.holding(SPEC, 2, [], H).capacity_steps == H + 1  # still one window's worth


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reward": np.zeros(9, np.float32)}, "reward"),
        ({"action": np.full((10, 2), np.nan, np.float32)}, "action contains NaN"),
        ({"state": np.zeros((10, 3), np.float32)}, r"T\+1=11"),
        ({"state": np.full((11, 3), np.inf, np.float32)}, "'state'.* NaN or Inf"),
        ({"state": np.zeros((11, 4), np.float32)}, "step shape"),
        ({"rgb": np.zeros((11, 3, 8, 8), np.float32)}, "dtype"),
        ({"action": np.zeros((10, 3), np.float32)}, "3 dims, expected 2"),
    ],
)
def test_bad_episodes_are_rejected(kwargs: dict, message: str) -> None:
    buf = EpisodeBuffer(SPEC, action_dim=2, capacity_steps=100, horizon=H)
    good = make_episode(0, 10)
    obs = {"rgb": kwargs.get("rgb", good.obs["rgb"]), "state": kwargs.get("state", good.obs["state"])}
    with pytest.raises(ValueError, match=message):
        buf.add(Episode(obs, kwargs.get("action", good.action), kwargs.get("reward", good.reward)))
    assert buf.num_episodes == 0


def test_short_episodes_are_usable_and_too_long_ones_rejected() -> None:
    buf = EpisodeBuffer(SPEC, action_dim=2, capacity_steps=30, horizon=H)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4, np.random.default_rng(0))
    buf.add(make_episode(0, steps=3))  # shorter than H: its windows are masked after step 2
    assert buf.num_windows == 3
    with pytest.raises(ValueError, match="needs 41 slots > capacity 30"):
        buf.add(make_episode(0, steps=40))


def test_balanced_sampler_ratio_holds_and_falls_back_to_offline() -> None:
    offline = EpisodeBuffer(SPEC, 2, 500, H)
    online = EpisodeBuffer(SPEC, 2, 500, H)
    for i in range(10):
        offline.add(make_episode(i, 12))  # ids 0..9 are offline
    sampler = BalancedSampler(offline, online, offline_fraction=0.5, seed=3)
    assert torch.all(sampler.sample(64).obs["state"][0, :, 0] < 100)  # online empty: offline only
    assert sampler.sample(8).online is None  # nothing to mark
    pure_online = BalancedSampler(EpisodeBuffer(SPEC, 2, 500, H), offline, offline_fraction=0.5, seed=3)
    assert pure_online.sample(8).online is None  # no offline data: its rows are all there is to learn from
    for i in range(3):
        online.add(make_episode(100 + i, 12))  # ids >= 100 are online
    for batch_size, frac in [(64, 0.5), (33, 0.5), (50, 0.25), (7, 0.0)]:
        sampler.offline_fraction = frac
        for _ in range(20):
            ids = sampler.sample(batch_size).obs["state"][0, :, 0]
            assert int((ids < 100).sum()) == round(batch_size * frac)
            assert len(ids) == batch_size


def test_state_dict_and_npz_round_trip(tmp_path) -> None:
    buf = EpisodeBuffer(SPEC, 2, 80, H)
    for i in range(9):
        buf.add(make_episode(i, 10 + i % 2, terminated=i == 8))
    other = EpisodeBuffer(SPEC, 2, 80, H)
    buf.update_priorities(np.arange(5), np.arange(5.0))
    other.load_state_dict(buf.state_dict())
    assert np.array_equal(other._priority[:5], buf._priority[:5])
    a = buf.sample(100, np.random.default_rng(5))
    b = other.sample(100, np.random.default_rng(5))
    for k in a.obs:
        assert torch.equal(a.obs[k], b.obs[k])
    assert torch.equal(a.action, b.action) and torch.equal(a.terminated, b.terminated)
    # After the restore both buffers evict and place the next episode identically.
    buf.add(make_episode(50, 10))
    other.add(make_episode(50, 10))
    assert buf.state_dict()["starts"] == other.state_dict()["starts"]

    path = tmp_path / "data.npz"
    buf.save_npz(path)
    loaded = EpisodeBuffer.load_npz(path, action_dim=2, horizon=H)
    assert loaded.num_episodes == buf.num_episodes
    for i in range(buf.num_episodes):
        e1, e2 = buf.episode(i), loaded.episode(i)
        assert np.array_equal(e1.obs["rgb"], e2.obs["rgb"]) and np.array_equal(e1.reward, e2.reward)
        assert e1.terminated == e2.terminated
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        EpisodeBuffer.read_npz(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="capacity_steps=80"):
        EpisodeBuffer(SPEC, 2, 90, H).load_state_dict(buf.state_dict())
