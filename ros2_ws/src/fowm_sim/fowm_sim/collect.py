"""fowm-collect: offline datasets from scripted experts, one rosbag2 (MCAP) per episode.

Runs the gym env in-process in lockstep (no DDS) and records each episode in the real robot's
topic layout (fowm_xarm.topics), so the trainer ingests sim and robot bags the same way. Per
decision k (stamped t0 + k * control_period):
    camera image + camera_info + joint_states (observation k), the policy action, the joint
    trajectory command and gripper command it produced; the reward of decision k at t_{k+1};
    the observation after the last decision; episode start/end events.

Presets follow FOWM's offline data: "expert" (noise-free scripted expert), "medium" (a noisy
expert with partial success) and "mixed" (episodes spread over several noise levels).

    fowm-collect --task reach --preset medium --episodes 20 --output data/reach_medium
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from fowm_sim.config import TASKS, SimConfig
from fowm_sim.env import XArmTaskEnv
from fowm_xarm import topics
from fowm_xarm.episode_bag import COMPRESSIONS, DEFAULT_COMPRESSION, EpisodeBagWriter, check_compression
from fowm_xarm.topics import EpisodeEvent

# Action noise std per episode, cycled over episodes.
# Expert action-noise levels (std) per preset and task. "medium" is per task: the level at which the
# noisy expert still succeeds in a fair share of episodes (2026-12-03, 40 episodes, success at any
# step: push 0.3 -> 27 %, lift 0.3 -> 15 %; at 0.6 push succeeds in ~5 %). Reach is the exception: its
# noisy expert passes within 5 cm of the goal at some step at every level allowed (0.6 and 1.0 -> 100 %,
# 2.0 -> 95 %; the 62 % measured on 2026-11-21 counted the last step only), so its "medium" data are
# all successes that wander around the goal.
PRESETS: dict[str, dict[str, tuple[float, ...]]] = {
    "expert": dict.fromkeys(TASKS, (0.0,)),
    "medium": {"reach": (0.6,), "push": (0.3,), "lift": (0.3,)},
    "mixed": dict.fromkeys(TASKS, (0.0, 0.3, 0.6, 1.0)),
}
SUMMARY_FILE = "collect_summary.json"


def medium_noise(task: str) -> float:
    """The expert's action-noise std of the "medium" preset for `task`: the default data's behaviour."""
    return PRESETS["medium"][task][0]


@dataclass
class CollectConfig:
    """One fowm-collect run."""

    output: Path  # dataset directory (created; must not hold episodes already)
    task: str = "reach"  # reach, push or lift
    preset: str = "medium"  # expert, medium or mixed (see PRESETS)
    episodes: int = 20  # number of episodes to record
    seed: int = 0  # episode i resets with seed + i; noise draws are seeded from it too
    image_width: int = 640  # recorded camera width (the sim renders 640x480; smaller sizes are resized)
    image_height: int = 480  # recorded camera height
    noise_levels: tuple[float, ...] = field(default_factory=tuple)  # overrides the preset when non-empty
    bag_compression: str = DEFAULT_COMPRESSION  # MCAP chunk compression (episode_bag.COMPRESSIONS)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not (8 <= self.image_width <= 640 and 8 <= self.image_height <= 480):
            raise ValueError(
                f"image size must be within 8x8..640x480, got {self.image_width}x{self.image_height}"
            )
        check_compression(self.bag_compression, "bag compression")
        if any(not 0.0 <= n <= 2.0 for n in self.noise_levels):
            raise ValueError(f"noise levels must be in [0, 2], got {self.noise_levels}")

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(self.noise_levels) or PRESETS[self.preset][self.task]


class BagEpisodeRecorder:
    """Writes one gym episode, decision by decision, in the robot's topic layout."""

    def __init__(
        self, env: XArmTaskEnv, writer: EpisodeBagWriter, image_size: tuple[int, int] = (640, 480)
    ) -> None:
        self.env, self.writer = env, writer
        self.width, self.height = image_size
        self.period_ns = round(env.config.control_period * 1e9)
        self.t_ns = time.time_ns()
        self.steps = 0
        self.episode_return = 0.0
        self.success = False

    def start(self, episode: int, task: str, seed: int) -> None:
        """Call right after env.reset(seed): records the start event and observation 0."""
        self.writer.write(
            topics.EPISODE.name,
            self.t_ns,
            topics.episode_event_msg(EpisodeEvent("start", episode, task, seed)),
        )
        self._observation()

    def step(self, action: np.ndarray, reward: float, info: dict[str, Any]) -> None:
        """Call after env.step(action): records the decision, its reward and the next observation."""
        w, t = self.writer, self.t_ns
        w.write(topics.ACTION.name, t, topics.action_msg(action, obs_stamp_ns=t))
        w.write(
            topics.JOINT_TRAJECTORY.name,
            t,
            topics.joint_trajectory_msg(t, info["joint_targets"], self.env.config.control_period),
        )
        w.write(topics.GRIPPER_COMMAND.name, t, topics.float32_msg(info["gripper_target"]))
        self.t_ns += self.period_ns
        w.write(topics.REWARD.name, self.t_ns, topics.float32_msg(reward))
        self.steps += 1
        self.episode_return += float(reward)
        self.success = self.success or bool(info.get("success", False))
        self._observation()

    def end(self, episode: int, task: str, seed: int) -> EpisodeEvent:
        event = EpisodeEvent(
            "end",
            episode,
            task,
            seed,
            success=self.success,
            episode_return=self.episode_return,
            steps=self.steps,
        )
        self.writer.write(topics.EPISODE.name, self.t_ns, topics.episode_event_msg(event))
        self.writer.update_metadata(
            success=self.success, episode_return=self.episode_return, steps=self.steps
        )
        return event

    def _observation(self) -> None:
        env, w, t = self.env, self.writer, self.t_ns
        frame = env.render_camera()  # (480, 640, 3) uint8
        intr = dict(env.camera_intrinsics())
        if (frame.shape[1], frame.shape[0]) != (self.width, self.height):
            sx, sy = self.width / frame.shape[1], self.height / frame.shape[0]
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
            intr.update(
                width=self.width,
                height=self.height,
                fx=intr["fx"] * sx,
                fy=intr["fy"] * sy,
                cx=(intr["cx"] + 0.5) * sx - 0.5,
                cy=(intr["cy"] + 0.5) * sy - 0.5,
            )
        w.write(topics.IMAGE.name, t, topics.image_msg(t, frame))
        w.write(topics.CAMERA_INFO.name, t, topics.camera_info_msg(t, intr))
        w.write(
            topics.JOINT_STATES.name,
            t,
            topics.joint_state_msg(t, env.joint_positions(), env.joint_velocities(), env.gripper_position()),
        )


def collect(
    config: CollectConfig,
    progress: bool = True,
    expert_factory: Callable[[str], Callable[..., np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Record config.episodes episodes with fowm_sim.experts' scripted expert (or `expert_factory`);
    returns the summary, which is also written next to the bags."""
    if expert_factory is None:
        # Imported here so that teleop, which reuses BagEpisodeRecorder, does not load the experts.
        from fowm_sim.experts import scripted_expert as expert_factory
    out = config.output
    if out.exists() and any(p.name != ".partial" for p in out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose a new dataset directory")
    out.mkdir(parents=True, exist_ok=True)
    env = XArmTaskEnv(config.task, SimConfig(task=config.task))
    expert = expert_factory(config.task)
    rng = np.random.default_rng(config.seed)
    episodes: list[dict[str, Any]] = []
    steps_total = 0
    start = time.perf_counter()
    bar = tqdm(range(config.episodes), desc=f"collect {config.task}/{config.preset}", disable=not progress)
    try:
        for i in bar:
            seed, noise = config.seed + i, config.levels[i % len(config.levels)]
            name = f"episode_{i:06d}"
            with EpisodeBagWriter(
                out / name,
                dict(
                    task=config.task,
                    seed=seed,
                    noise=noise,
                    episode=i,
                    preset=config.preset,
                    source="fowm-collect",
                ),
                compression=config.bag_compression,
            ) as writer:
                env.reset(seed=seed)
                recorder = BagEpisodeRecorder(env, writer, (config.image_width, config.image_height))
                recorder.start(i, config.task, seed)
                done = False
                while not done:
                    action = expert(env, rng, noise)
                    _, reward, terminated, truncated, info = env.step(action)
                    recorder.step(action, reward, info)
                    done = terminated or truncated
                recorder.end(i, config.task, seed)
            steps_total += recorder.steps
            episodes.append(
                dict(
                    name=name,
                    seed=seed,
                    noise=noise,
                    success=recorder.success,
                    episode_return=recorder.episode_return,
                    steps=recorder.steps,
                )
            )
            bar.set_postfix(success=f"{np.mean([e['success'] for e in episodes]):.2f}")
    finally:
        env.close()
    elapsed = time.perf_counter() - start
    summary = dict(
        config={**asdict(config), "output": str(out), "noise_levels": list(config.levels)},
        episodes=len(episodes),
        steps=steps_total,
        success_rate=float(np.mean([e["success"] for e in episodes])),
        success_rate_by_noise={
            str(n): float(np.mean([e["success"] for e in episodes if e["noise"] == n]))
            for n in sorted(set(config.levels))
        },
        elapsed_s=elapsed,
        episodes_per_s=len(episodes) / elapsed,
        steps_per_s=steps_total / elapsed,
        episode_list=episodes,
    )
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"image size must look like 640x480, got {text!r}") from exc
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fowm-collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path, help="new dataset directory")
    parser.add_argument("--task", default="reach", choices=TASKS)
    parser.add_argument("--preset", default="medium", choices=sorted(PRESETS), help="noise preset")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--image-size", type=_size, default=(640, 480), help="recorded camera WxH (default 640x480)"
    )
    parser.add_argument(
        "--noise", type=float, nargs="*", default=[], help="noise levels (override the preset)"
    )
    parser.add_argument(
        "--bag-compression",
        default=DEFAULT_COMPRESSION,
        choices=sorted(COMPRESSIONS),
        help="MCAP chunk compression",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = CollectConfig(
            output=args.output,
            task=args.task,
            preset=args.preset,
            episodes=args.episodes,
            seed=args.seed,
            image_width=args.image_size[0],
            image_height=args.image_size[1],
            noise_levels=tuple(args.noise),
            bag_compression=args.bag_compression,
        )
        summary = collect(config, progress=not args.no_progress)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    print(f"{summary['episodes']} episodes, {summary['steps']} steps -> {config.output}")
    print(f"success rate {summary['success_rate']:.2f} by noise {summary['success_rate_by_noise']}")
    print(f"recording speed {summary['episodes_per_s']:.2f} episodes/s, {summary['steps_per_s']:.1f} steps/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
