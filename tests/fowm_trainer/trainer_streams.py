"""Synthetic contract streams with known, jittered timing, and what the assembler must make of them.

Each observation k has header stamp s_k = T0 + k * PERIOD; its frame has every pixel equal to
10 + k and its joint vector is distinct per k, so a wrong pairing shows up in the observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fowm_xarm import topics
from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.limits import JOINT_LOWER, JOINT_UPPER
from fowm_xarm.observation import ObservationConfig, make_observation
from fowm_xarm.topics import EpisodeEvent

T0 = 5 * 10**9
PERIOD = 160_000_000
MS = 1_000_000
H, W = 48, 64
OBS_CONFIG = (
    ObservationConfig(image_size=16, crop=None)
    if "crop" in ObservationConfig.__dataclass_fields__
    else (ObservationConfig(image_size=16))
)


def frame(k: int) -> np.ndarray:
    f = np.full((H, W, 3), 10 + k, np.uint8)
    f[0, :, 0] = 200  # a channel-order marker
    return f


def joints(k: int) -> np.ndarray:
    mid = (JOINT_LOWER + JOINT_UPPER) / 2
    return mid + 0.02 * k * np.linspace(-1, 1, 7)


def gripper(k: int) -> float:
    return float(np.clip(1.0 - 0.05 * k, 0.0, 1.0))


def stamp(k: int) -> int:
    return T0 + k * PERIOD


def expected_obs(image_k: int, joint_k: int, kin: XArm7Kinematics) -> dict[str, np.ndarray]:
    return make_observation(frame(image_k), joints(joint_k), gripper(joint_k), kin, OBS_CONFIG)


@dataclass
class Stream:
    """Messages (topic, log time, CDR bytes), and the pairing the assembler must find per step:
    (image k, joint-state k) of every observation, actions and rewards."""

    messages: list[tuple[str, int, bytes]] = field(default_factory=list)
    expected_obs: list[tuple[int, int]] = field(default_factory=list)  # (image k, joint k), T+1 of them
    actions: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: bool = False
    success: bool = True

    def add(self, topic: str, log_ns: int, data: bytes) -> None:
        self.messages.append((topic, log_ns, data))

    def sorted(self) -> list[tuple[str, int, bytes]]:
        return sorted(self.messages, key=lambda m: m[1])  # stable: equal times keep insertion order


def action_vec(k: int) -> np.ndarray:
    return np.array([0.1 * k, -0.05 * k, 0.5, 1.0 if k % 2 else -1.0], np.float32)


def jittered_episode(
    episode: int = 0,
    steps: int = 6,
    stamped: bool = True,
    terminated: bool = False,
    start_ns: int | None = None,
) -> Stream:
    """One episode with the kinds of timing a recorder sees:
    - frame 2 arrives late, 40 ms after the action that used it;
    - the joint state of observation 3 is dropped (its action falls back to joint state 2);
    - observation 1 is republished with the same stamp (duplicated stamps);
    - reward 4 arrives after action 5 (it still belongs to action 4);
    - a stray reward before the first action is not anyone's."""
    s = Stream(terminated=terminated)
    base = start_ns if start_ns is not None else T0
    offset = base - T0

    def st(k: int) -> int:
        return stamp(k) + offset

    s.add(
        topics.EPISODE.name,
        st(0) - 10 * MS,
        topics.episode_event_msg(EpisodeEvent("start", episode, "reach", 7)),
    )
    s.add(topics.REWARD.name, st(0) - 5 * MS, topics.float32_msg(99.0))  # stray: before any action
    for k in range(steps + 1):
        img_log = st(k) + (40 * MS + 20 * MS if k == 2 else 2 * MS)
        s.add(topics.IMAGE.name, img_log, topics.image_msg(st(k), frame(k)))
        if k != 3:
            s.add(
                topics.JOINT_STATES.name,
                st(k) + 1 * MS,
                topics.joint_state_msg(st(k), joints(k), np.zeros(7), gripper(k)),
            )
        if k == 1:
            s.add(topics.IMAGE.name, st(k) + 30 * MS, topics.image_msg(st(k), frame(k)))
            s.add(
                topics.JOINT_STATES.name,
                st(k) + 31 * MS,
                topics.joint_state_msg(st(k), joints(k), np.zeros(7), gripper(k)),
            )
        if k < steps:
            a = action_vec(k)
            s.add(
                topics.ACTION.name,
                st(k) + 20 * MS,
                topics.action_msg(a, obs_stamp_ns=st(k) if stamped else None),
            )
            r = -0.25 * k
            reward_log = st(k + 1) + 25 * MS if k == 4 else st(k + 1) - 10 * MS
            s.add(topics.REWARD.name, reward_log, topics.float32_msg(r))
            s.actions.append(a)
            s.rewards.append(r)
            s.expected_obs.append((k, 2 if k == 3 else k))
    # Observation after the last step (its joint state is there unless it is the dropped one).
    s.expected_obs.append((steps, steps if steps != 3 else 2))
    end = EpisodeEvent(
        "end",
        episode,
        "reach",
        7,
        success=True,
        episode_return=float(sum(s.rewards)),
        steps=steps,
        terminated=terminated,
    )
    s.add(topics.EPISODE.name, st(steps) + 5 * MS, topics.episode_event_msg(end))
    return s


def records(stream: Stream) -> list[tuple[str, int, object]]:
    """The stream as (topic, log time, rosbags message), sorted by log time."""
    return [
        (t, log, topics.deserialize(data, topics.TOPICS_BY_NAME[t].msgtype))
        for t, log, data in stream.sorted()
    ]
