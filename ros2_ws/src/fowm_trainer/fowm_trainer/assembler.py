"""The one episode assembler: a time-ordered stream of contract messages -> fowm_core Episodes.

Pure Python (no rclpy): bag ingestion feeds it the records of a bag, the trainer node feeds it
live subscriptions, so both sources give the same episodes. Messages may be rclpy or rosbags
objects (their field names are the same).

Pairing rules (the planner's view of the world is what the model must learn from):
- Each message on the action topic is one step.
- Its observation is the camera image and joint state whose header stamp is the one the action
  names (`topics.action_obs_stamp`): exactly what the planner computed it from. An action without a
  stamp, or whose stamped messages never arrive (dropped), falls back to the latest image and the
  latest joint state stamped at or before that time (for an action without a stamp, its log time:
  this assumes the stamps and the log times share a clock). Observations go through
  `fowm_xarm.observation.make_observation`, the planner's own function.
- Its reward is the next reward message received after it: rewards are matched to actions first
  in, first out, so a reward that arrives after the next action still lands on its own step.
- Episode boundaries and success come from the episode-events topic. The observation after the last
  step is the newest image stamped after the last step's (with the joint state of its stamp)
  received by the "end" event (if none, within `final_obs_slack_s` after it) and before the next
  "start"; receive times bound it because stamps may be on another clock (lockstep sim time).
  "end" with terminated=true is a true terminal; otherwise the episode was cut by a time limit
  (truncated: the value after it still counts).

Late messages: a message may arrive up to `lag_s` after the ones it belongs with (sensor topics are
best effort and recorders log receive times). Steps are resolved and episodes closed only once the
stream has moved `lag_s` past them, or on `flush()` (end of a bag).

Memory stays bounded: raw frames are kept only while some step may still need them, i.e. from the
newest observation stamp an action named (never more than `max_frames`); each step keeps only its
preprocessed observation.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fowm_core.buffer import Episode
from fowm_xarm import topics
from fowm_xarm.kinematics import XArm7Kinematics
from fowm_xarm.observation import (
    Observation,
    ObservationConfig,
    image_to_rgb,
    joint_state_to_arrays,
    make_observation,
)
from fowm_xarm.topics import EpisodeEvent


class AssemblyError(ValueError):
    """An episode in the stream that cannot become training data; the message says why."""


@dataclass(frozen=True)
class AssemblerConfig:
    """Which topics carry what, and how long to wait for late messages."""

    image_topic: str = topics.IMAGE.name
    """Camera frames (sensor_msgs/Image, rgb8 or bgr8)."""
    joint_states_topic: str = topics.JOINT_STATES.name
    """Joint states (joint1..joint7 and the gripper)."""
    action_topic: str = topics.ACTION.name
    """Executed actions (std_msgs/Float32MultiArray naming their observation stamp)."""
    reward_topic: str = topics.REWARD.name
    """Reward of the last decision (std_msgs/Float32)."""
    episode_topic: str = topics.EPISODE.name
    """Episode start/end events (std_msgs/String JSON)."""
    lag_s: float = 0.5
    """Seconds a late message (e.g. a frame logged after the action that used it) is still awaited."""
    final_obs_slack_s: float = 0.1
    """A final observation received up to this long after "end" still counts (it may be overtaken)."""
    max_frames: int = 128
    """Most raw camera frames (and joint states) held at once (~120 MB at 640x480; 4 s at 30 Hz, which
    covers the slowest planner's latency between a frame and the action planned on it)."""

    def __post_init__(self) -> None:
        if not self.lag_s >= 0:
            raise ValueError(f"AssemblerConfig.lag_s must be >= 0, got {self.lag_s}")
        if not 0 <= self.final_obs_slack_s <= self.lag_s:
            raise ValueError(
                f"AssemblerConfig.final_obs_slack_s must be in [0, lag_s], got {self.final_obs_slack_s}"
            )
        if self.max_frames < 2:
            raise ValueError(f"AssemblerConfig.max_frames must be >= 2, got {self.max_frames}")

    @property
    def required_topics(self) -> tuple[str, ...]:
        """Topics without which no episode can be assembled."""
        return (
            self.image_topic,
            self.joint_states_topic,
            self.action_topic,
            self.reward_topic,
            self.episode_topic,
        )


def header_stamp_ns(msg: Any) -> int:
    """Nanoseconds of a message's header stamp (rclpy or rosbags)."""
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


class _Frames:
    """Messages of one sensor topic keyed by header stamp (the first of duplicated stamps wins)."""

    def __init__(self) -> None:
        self.stamps: list[int] = []  # sorted
        self.msgs: dict[int, Any] = {}
        self.logged: dict[int, int] = {}  # stamp -> log (receive) time

    def add(self, stamp: int, log_ns: int, msg: Any) -> bool:
        if stamp in self.msgs:
            return False
        bisect.insort(self.stamps, stamp)
        self.msgs[stamp] = msg
        self.logged[stamp] = log_ns
        return True

    def latest_at_or_before(self, t: int, after: int | None = None) -> int | None:
        i = bisect.bisect_right(self.stamps, t) - 1
        if i < 0 or (after is not None and self.stamps[i] <= after):
            return None
        return self.stamps[i]

    def prune(self, stamp_from: int | None, max_frames: int) -> None:
        """Drop what no step can need: frames stamped before `stamp_from` (the oldest stamp a waiting
        or future step can name), except the newest of those (fallbacks); then the oldest beyond
        `max_frames`. Without `stamp_from` (no action seen yet) only the cap applies."""
        if not self.stamps:
            return
        drop: set[int] = set()
        if stamp_from is not None:
            i = bisect.bisect_right(self.stamps, stamp_from) - 1  # newest at or before: kept
            drop = set(self.stamps[: max(i, 0)])
        survivors = [s for s in self.stamps if s not in drop]
        drop.update(survivors[: max(0, len(survivors) - max_frames)])
        for s in drop:
            del self.msgs[s], self.logged[s]
        self.stamps = [s for s in self.stamps if s not in drop]


@dataclass
class _Step:
    action: np.ndarray  # (A,) float32
    log_ns: int  # when the action was logged/received
    obs_stamp: int | None  # the observation stamp the action names
    obs: Observation | None = None
    image_stamp: int | None = None
    fallback: bool = False
    reward: float | None = None

    @property
    def ref_ns(self) -> int:
        """The time whose observation this step needs."""
        return self.obs_stamp if self.obs_stamp is not None else self.log_ns


@dataclass
class _OpenEpisode:
    start: EpisodeEvent
    start_ns: int
    steps: list[_Step] = field(default_factory=list)
    rewarded: int = 0  # steps[:rewarded] have their reward
    orphan_rewards: int = 0
    end: EpisodeEvent | None = None
    end_ns: int = 0
    next_start_ns: int | None = None  # log time of the next episode's "start", once seen


class EpisodeAssembler:
    """Feed `(topic, log_time_ns, message)` in log-time order; get finished Episodes back.

    `feed` and `flush` return the episodes completed by that call; an episode that cannot be used
    raises AssemblyError (after the assembler has moved on, so feeding may continue).
    """

    def __init__(
        self,
        observation_config: ObservationConfig | None = None,
        kinematics: XArm7Kinematics | None = None,
        config: AssemblerConfig | None = None,
    ) -> None:
        self.obs_config = observation_config or ObservationConfig()
        self.kinematics = kinematics or XArm7Kinematics()
        self.config = config or AssemblerConfig()
        self._lag_ns = round(self.config.lag_s * 1e9)
        self._final_slack_ns = round(self.config.final_obs_slack_s * 1e9)
        self._images = _Frames()
        self._joints = _Frames()
        # Episodes not yet returned, oldest first: ended ones wait out the lag (a late reward or frame
        # may still come); only the last may still be open (no "end" yet).
        self._episodes: list[_OpenEpisode] = []
        self._now = 0
        self._anchor: int | None = None  # newest observation stamp an action has named or used
        self._obs_cache: dict[tuple[int, int], Observation] = {}
        self.ignored_messages = 0  # actions/rewards seen outside any episode

    # ---------------------------------------------------------------- input
    def feed(self, topic: str, log_ns: int, msg: Any) -> list[Episode]:
        """Process one message logged (received) at `log_ns`."""
        cfg = self.config
        self._now = max(self._now, int(log_ns))
        done: list[Episode] = []
        if topic == cfg.image_topic:
            if self._images.add(header_stamp_ns(msg), int(log_ns), msg):
                self._resolve_stamped(header_stamp_ns(msg))
        elif topic == cfg.joint_states_topic:
            if self._joints.add(header_stamp_ns(msg), int(log_ns), msg):
                self._resolve_stamped(header_stamp_ns(msg))
        elif topic == cfg.action_topic:
            self._on_action(int(log_ns), msg)
        elif topic == cfg.reward_topic:
            self._on_reward(int(log_ns), float(msg.data))
        elif topic == cfg.episode_topic:
            try:
                event = EpisodeEvent.from_json(msg.data)
            except ValueError as exc:
                raise AssemblyError(f"bad episode event at {log_ns} ns: {exc}") from exc
            done += self._on_event(int(log_ns), event)
        done += self._advance(final=False)
        return done

    def tick(self, now_ns: int) -> list[Episode]:
        """Let time pass without a message (a live source calls this periodically, so an ended
        episode is returned once its lag is over even when the topics go quiet)."""
        self._now = max(self._now, int(now_ns))
        return self._advance(final=False)

    def flush(self) -> list[Episode]:
        """End of stream: resolve everything still waiting and close an ended episode. An episode
        without an "end" event stays open (a live stream may continue)."""
        return self._advance(final=True)

    def reset(self) -> None:
        """Forget everything (e.g. between bags)."""
        self.__init__(self.obs_config, self.kinematics, self.config)  # type: ignore[misc]

    @property
    def open_steps(self) -> int:
        """Steps of the episode in progress (0 when none)."""
        ep = self._current
        return len(ep.steps) if ep else 0

    @property
    def _current(self) -> _OpenEpisode | None:
        """The episode taking actions (started, not ended), if any."""
        if self._episodes and self._episodes[-1].end is None:
            return self._episodes[-1]
        return None

    # ---------------------------------------------------------------- handlers
    def _on_action(self, log_ns: int, msg: Any) -> None:
        ep = self._current
        if ep is None:
            self.ignored_messages += 1
            return
        try:
            stamp = topics.action_obs_stamp(msg)
        except ValueError:
            stamp = None
        action = np.asarray(msg.data, dtype=np.float32).reshape(-1).copy()
        step = _Step(action=action, log_ns=log_ns, obs_stamp=stamp)
        ep.steps.append(step)
        if stamp is not None:
            self._anchor = max(stamp, self._anchor or stamp)
        if stamp is not None and stamp in self._images.msgs and stamp in self._joints.msgs:
            self._set_obs(step, stamp, stamp, fallback=False)

    def _on_reward(self, log_ns: int, value: float) -> None:
        # First in, first out over the episodes not yet returned: a reward may arrive after "end" (or
        # even after the next "start") and still belongs to the oldest step waiting for one.
        for ep in self._episodes:
            if ep.rewarded < len(ep.steps):
                if ep.steps[ep.rewarded].log_ns <= log_ns:
                    ep.steps[ep.rewarded].reward = value
                    ep.rewarded += 1
                    return
                break
        if self._episodes:
            self._episodes[-1].orphan_rewards += 1
        else:
            self.ignored_messages += 1

    def _on_event(self, log_ns: int, event: EpisodeEvent) -> list[Episode]:
        done: list[Episode] = []
        if event.event == "start":
            for ended in self._episodes:
                if ended.end is not None and ended.next_start_ns is None:
                    ended.next_start_ns = log_ns
            previous = self._current
            self._episodes.append(_OpenEpisode(start=event, start_ns=log_ns))
            self._anchor = None  # stamps may restart with a new episode (a restarted sim's clock)
            if previous is not None:
                self._episodes.remove(previous)
                if previous.steps:
                    raise AssemblyError(
                        f"episode {previous.start.episode} ({previous.start.task}) has no 'end' event before "
                        f"the next 'start'; its {len(previous.steps)} steps are dropped"
                    )
        elif (ep := self._current) is not None:
            if event.episode != ep.start.episode:
                self._episodes.remove(ep)
                raise AssemblyError(
                    f"'end' event of episode {event.episode} while episode {ep.start.episode} is open; "
                    f"its {len(ep.steps)} steps are dropped"
                )
            ep.end, ep.end_ns = event, log_ns
        return done

    # ---------------------------------------------------------------- pairing
    def _resolve_stamped(self, stamp: int) -> None:
        if stamp in self._images.msgs and stamp in self._joints.msgs:
            for step in (s for ep in self._episodes for s in ep.steps):
                if step.obs is None and step.obs_stamp == stamp:
                    self._set_obs(step, stamp, stamp, fallback=False)

    def _fallback(self, step: _Step) -> None:
        t = step.ref_ns
        img = self._images.latest_at_or_before(t)
        js = self._joints.latest_at_or_before(t)
        if img is not None and js is not None:
            self._set_obs(step, img, js, fallback=True)

    def _observation(self, image_stamp: int, joint_stamp: int) -> Observation:
        key = (image_stamp, joint_stamp)
        if key not in self._obs_cache:
            img, js = self._images.msgs[image_stamp], self._joints.msgs[joint_stamp]
            frame = image_to_rgb(img.height, img.width, img.encoding, img.step, img.data)
            q, gripper = joint_state_to_arrays(js.name, js.position)
            self._obs_cache[key] = make_observation(frame, q, gripper, self.kinematics, self.obs_config)
        return self._obs_cache[key]

    def _set_obs(self, step: _Step, image_stamp: int, joint_stamp: int, fallback: bool) -> None:
        try:
            step.obs = self._observation(image_stamp, joint_stamp)
        except ValueError as exc:
            raise AssemblyError(f"observation at stamp {image_stamp} ns cannot be used: {exc}") from exc
        step.image_stamp, step.fallback = image_stamp, fallback
        self._anchor = max(image_stamp, self._anchor or image_stamp)

    def _advance(self, final: bool) -> list[Episode]:
        done: list[Episode] = []
        for ep in list(self._episodes):
            for step in ep.steps:
                if step.obs is None and (final or self._now > step.log_ns + self._lag_ns):
                    self._fallback(step)
            if ep.end is not None and (final or self._now > ep.end_ns + self._lag_ns):
                done += self._close(ep)
        self._prune()
        return done

    def _prune(self) -> None:
        # A planner acts on ever newer observations, so a future action names a stamp at or after the
        # newest one named so far (however long it planned: frames are kept by stamp, not by age).
        needed = [self._anchor] if self._anchor is not None else []
        for ep in self._episodes:
            needed += [s.ref_ns for s in ep.steps if s.obs is None]
            if ep.steps and ep.steps[-1].image_stamp is not None:
                needed.append(ep.steps[-1].image_stamp)  # the final observation comes after it
        stamp_from = min(needed) if needed else None
        self._images.prune(stamp_from, self.config.max_frames)
        self._joints.prune(stamp_from, self.config.max_frames)
        live = set(self._images.msgs)
        self._obs_cache = {k: v for k, v in self._obs_cache.items() if k[0] in live}

    # ---------------------------------------------------------------- output
    def _close(self, ep: _OpenEpisode) -> list[Episode]:
        self._episodes.remove(ep)
        assert ep.end is not None
        name = f"episode {ep.start.episode} ({ep.start.task})"
        steps = ep.steps
        if not steps:
            raise AssemblyError(f"{name} has no actions on {self.config.action_topic}")
        for k, step in enumerate(steps):
            if step.obs is None:
                self._fallback(step)
            if step.obs is None:
                missing = [
                    what
                    for what, frames in (("camera image", self._images), ("joint state", self._joints))
                    if frames.latest_at_or_before(step.ref_ns) is None
                ]
                raise AssemblyError(
                    f"{name}: step {k} has no {' and no '.join(missing) or 'observation'} stamped at or "
                    f"before {step.ref_ns} ns"
                )
        rewarded = sum(s.reward is not None for s in steps)
        if rewarded == 0:
            raise AssemblyError(
                f"{name}: none of its {len(steps)} actions has a reward on {self.config.reward_topic} "
                "(is the reward topic recorded?)"
            )
        if rewarded < len(steps):
            raise AssemblyError(f"{name}: {len(steps) - rewarded} of its {len(steps)} actions have no reward")
        # The observation after the last step: the newest frame stamped after the last step's that was
        # received by "end" (or, if none was, within a little slack after it: a frame overtaken by the
        # event) and before the next "start". Receive times, not stamps, bound it: stamps may run on
        # another clock (sim time).
        last = steps[-1]
        img = None
        for bound in (ep.end_ns, ep.end_ns + self._final_slack_ns):  # slack only if nothing came by "end"
            if ep.next_start_ns is not None:
                bound = min(bound, ep.next_start_ns - 1)
            candidates = [
                s
                for s in self._images.stamps
                if s > (last.image_stamp or -1) and self._images.logged[s] <= bound
            ]
            if candidates:
                img = candidates[-1]
                break
        js = None
        if img is not None:
            js = img if img in self._joints.msgs else self._joints.latest_at_or_before(img)
        dropped_last = False
        if img is None or js is None:
            if len(steps) < 2:
                raise AssemblyError(f"{name}: no observation after its only step")
            steps, dropped_last = steps[:-1], True  # its next observation is the last step's own
            final_obs, final_stamp = last.obs, last.image_stamp
        else:
            final_obs, final_stamp = self._observation(img, js), img
        obs_list = [s.obs for s in steps] + [final_obs]
        terminated = bool(ep.end.terminated) and not dropped_last
        return [
            Episode(
                obs={k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]},  # (T+1, ...)
                action=np.stack([s.action for s in steps]),  # (T, A)
                reward=np.asarray([s.reward for s in steps], dtype=np.float32),  # (T,)
                terminated=terminated,
                truncated=not terminated,
                info=dict(
                    episode=ep.start.episode,
                    task=ep.start.task,
                    seed=ep.start.seed,
                    success=bool(ep.end.success),
                    reported_steps=ep.end.steps,
                    obs_stamps_ns=[s.image_stamp for s in steps] + [final_stamp],
                    fallback_steps=sum(s.fallback for s in steps),
                    orphan_rewards=ep.orphan_rewards,
                    dropped_last_step=dropped_last,
                ),
            )
        ]
