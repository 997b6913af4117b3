"""The episode assembler on synthetic streams with known, jittered timing, asserted step by step."""

from __future__ import annotations

import numpy as np
import pytest
from trainer_streams import (
    MS,
    OBS_CONFIG,
    PERIOD,
    T0,
    action_vec,
    expected_obs,
    frame,
    gripper,
    jittered_episode,
    joints,
    records,
    stamp,
)

from fowm_trainer.assembler import AssemblerConfig, AssemblyError, EpisodeAssembler
from fowm_xarm import topics
from fowm_xarm.kinematics import XArm7Kinematics

KIN = XArm7Kinematics()


def _assemble(stream_records, config: AssemblerConfig | None = None):
    asm = EpisodeAssembler(OBS_CONFIG, KIN, config)
    episodes = []
    for topic, log, msg in stream_records:
        episodes += asm.feed(topic, log, msg)
    return episodes + asm.flush(), asm


def _assert_matches(episode, stream) -> None:
    assert len(episode) == len(stream.actions)
    for t, (img_k, js_k) in enumerate(stream.expected_obs):
        want = expected_obs(img_k, js_k, KIN)
        np.testing.assert_array_equal(episode.obs["rgb"][t], want["rgb"], err_msg=f"rgb of step {t}")
        np.testing.assert_array_equal(episode.obs["state"][t], want["state"], err_msg=f"state of step {t}")
    np.testing.assert_array_equal(episode.action, np.stack(stream.actions))
    np.testing.assert_array_equal(episode.reward, np.asarray(stream.rewards, np.float32))
    assert episode.terminated == stream.terminated and episode.truncated == (not stream.terminated)


@pytest.mark.parametrize("stamped", [True, False], ids=["actions-name-their-stamp", "log-time-fallback"])
def test_jittered_stream_pairs_every_step(stamped):
    stream = jittered_episode(steps=6, stamped=stamped)
    episodes, _ = _assemble(records(stream))
    assert len(episodes) == 1
    ep = episodes[0]
    _assert_matches(ep, stream)
    # Observation stamps used, step by step: the late frame 2 still pairs with action 2.
    assert ep.info["obs_stamps_ns"] == [stamp(k) for k in range(7)]
    # Step 3 lost its joint state; with stamped actions it is the only fallback.
    assert ep.info["fallback_steps"] == (1 if stamped else 6)
    assert ep.info["orphan_rewards"] == 1  # the stray reward before the first action
    assert ep.info["success"] is True and ep.info["task"] == "reach" and ep.info["seed"] == 7


def test_a_true_terminal_is_not_a_time_limit():
    (ep,), _ = _assemble(records(jittered_episode(terminated=True)))
    assert ep.terminated and not ep.truncated
    (ep,), _ = _assemble(records(jittered_episode(terminated=False)))
    assert ep.truncated and not ep.terminated


def test_back_to_back_episodes_in_one_stream():
    first = jittered_episode(episode=0, steps=5)
    second = jittered_episode(episode=1, steps=4, start_ns=stamp(5) + 30 * MS)
    stream = records(first) + records(second)
    stream.sort(key=lambda r: r[1])
    episodes, _ = _assemble(stream)
    assert [e.info["episode"] for e in episodes] == [0, 1]
    np.testing.assert_array_equal(episodes[0].action, np.stack(first.actions))
    np.testing.assert_array_equal(episodes[1].reward, np.asarray(second.rewards, np.float32))
    # The first episode's final observation is its own last frame, not the next episode's first.
    assert episodes[0].info["obs_stamps_ns"][-1] == stamp(5)


def test_episodes_are_returned_only_after_the_lag():
    asm = EpisodeAssembler(OBS_CONFIG, KIN, AssemblerConfig(lag_s=0.2))
    out = []
    recs = records(jittered_episode(steps=3))
    for topic, log, msg in recs:
        out += asm.feed(topic, log, msg)
    assert out == []  # the end event was the last message: a late frame could still come
    last = recs[-1][1]
    tick = topics.deserialize(topics.float32_msg(0.0), "std_msgs/msg/Float32")
    assert asm.feed("/unrelated", last + 100 * MS, tick) == []
    assert len(asm.feed("/unrelated", last + 300 * MS, tick)) == 1


def test_missing_rewards_and_events_are_named():
    stream = jittered_episode(steps=4)
    no_reward = [r for r in records(stream) if r[0] != topics.REWARD.name]
    with pytest.raises(AssemblyError, match="none of its 4 actions has a reward"):
        _assemble(no_reward)
    # Two starts without an end: the first episode is reported, the second still assembles.
    first = [
        r for r in records(jittered_episode(episode=0, steps=3)) if r[0] != topics.EPISODE.name or r[1] < T0
    ]
    second = records(jittered_episode(episode=1, steps=3, start_ns=stamp(4)))
    asm = EpisodeAssembler(OBS_CONFIG, KIN)
    with pytest.raises(AssemblyError, match="episode 0 .* no 'end' event"):
        for topic, log, msg in sorted(first + second, key=lambda r: r[1]):
            asm.feed(topic, log, msg)
    assert asm.open_steps == 0  # the new episode is open and the rest of its stream follows


def test_raw_frames_stay_bounded_without_actions():
    asm = EpisodeAssembler(OBS_CONFIG, KIN, AssemblerConfig(max_frames=8, lag_s=10.0))
    for k in range(100):
        asm.feed(
            topics.IMAGE.name,
            stamp(k),
            topics.deserialize(topics.image_msg(stamp(k), frame(k % 50)), topics.IMAGE.msgtype),
        )
    assert len(asm._images.stamps) <= 8
    assert T0 + 99 * PERIOD in asm._images.msgs


@pytest.mark.parametrize("delay", [3, 45], ids=["fast-planner", "planner-slower-than-the-lag"])
def test_stamps_on_another_clock_than_receive_times(delay):
    """Lockstep sim: stamps are sim time (1 s + ...), receive times wall time. A 30 Hz camera delivers
    `delay` newer frames between the frame an action was planned on and the action (45 frames: 1.5 s,
    longer than the assembler's lag): the action still gets its own frame, and the final observation
    is the newest frame received by "end"."""
    from fowm_xarm.topics import EpisodeEvent

    wall, sim, frame_ns = 1_790_000_000 * 10**9, 10**9, 33 * MS
    planned = (2, 2 + delay + 4)
    last_frame = planned[1] + delay + 2

    def msg(data: bytes, spec) -> object:
        return topics.deserialize(data, spec.msgtype)

    start = EpisodeEvent("start", 0, "reach", 1)
    recs = [(topics.EPISODE.name, wall, msg(topics.episode_event_msg(start), topics.EPISODE))]
    for k in range(last_frame + 1):
        s, t = sim + k * frame_ns, wall + (k + 1) * frame_ns
        recs.append((topics.IMAGE.name, t, msg(topics.image_msg(s, frame(k % 200)), topics.IMAGE)))
        js = topics.joint_state_msg(s, joints(k), np.zeros(7), gripper(k))
        recs.append((topics.JOINT_STATES.name, t + 1, msg(js, topics.JOINT_STATES)))
        if k - delay in planned:
            action = topics.action_msg(action_vec(k), obs_stamp_ns=sim + (k - delay) * frame_ns)
            recs.append((topics.ACTION.name, t + 2, msg(action, topics.ACTION)))
            recs.append((topics.REWARD.name, t + 3 * MS, msg(topics.float32_msg(-k), topics.REWARD)))
    end = EpisodeEvent("end", 0, "reach", 1, success=False, episode_return=0.0, steps=2)
    end_log = wall + last_frame * frame_ns + 5 * MS  # after frame last_frame - 1, before the last one
    recs.append((topics.EPISODE.name, end_log, msg(topics.episode_event_msg(end), topics.EPISODE)))
    (ep,), _ = _assemble(sorted(recs, key=lambda r: r[1]))
    want = [sim + planned[0] * frame_ns, sim + planned[1] * frame_ns, sim + (last_frame - 1) * frame_ns]
    assert ep.info["obs_stamps_ns"] == want
    assert ep.info["fallback_steps"] == 0
    np.testing.assert_array_equal(ep.obs["rgb"][0], expected_obs(2, 2, KIN)["rgb"])
    np.testing.assert_array_equal(ep.reward, [-(planned[0] + delay), -(planned[1] + delay)])
