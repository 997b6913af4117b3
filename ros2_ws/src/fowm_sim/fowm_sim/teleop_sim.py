"""fowm-teleop-sim: drive the sim from the terminal keyboard, optionally recording episode bags.

The terminal is put in cbreak mode and read without blocking once per control period; the keys
typed during a period become that period's action (fowm_xarm.teleop). Besides the motion keys:
    n  end the episode now (it is recorded as it stands)     q  quit (the episode in progress is dropped)

    fowm-teleop-sim --task push --record data/push_teleop
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator, Sequence
from pathlib import Path

from fowm_sim.collect import BagEpisodeRecorder
from fowm_sim.config import TASKS, SimConfig
from fowm_sim.env import XArmTaskEnv
from fowm_xarm.episode_bag import EpisodeBagWriter
from fowm_xarm.teleop import KeyboardTeleop, TeleopConfig

QUIT_KEY, END_EPISODE_KEY = "q", "n"


@contextlib.contextmanager
def cbreak_terminal(fd: int) -> Iterator[None]:
    """Single keys without Enter and without echo; the terminal is restored however we leave."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_keys(fd: int) -> str:
    """Everything typed since the last call, without blocking."""
    keys = []
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 64)
        if not chunk:
            break
        keys.append(chunk.decode(errors="ignore"))
    return "".join(keys)


def run(task: str, seed: int, episodes: int, record: Path | None, step: float, fd: int) -> int:
    """Teleoperate until `episodes` are done or q is pressed; returns the number of finished episodes."""
    if not os.isatty(fd):
        raise RuntimeError("fowm-teleop-sim needs an interactive terminal on stdin (it reads single keys)")
    env = XArmTaskEnv(task, SimConfig(task=task))
    teleop = KeyboardTeleop(TeleopConfig(step=step))
    period = env.config.control_period
    print(f"fowm-teleop-sim {task}: {teleop.help_text()}, n: end episode, q: quit\r")
    done_episodes = 0
    try:
        with cbreak_terminal(fd):
            for i in range(episodes):
                episode_seed = seed + i
                env.reset(seed=episode_seed)
                teleop.reset()
                writer = None
                if record is not None:
                    writer = EpisodeBagWriter(
                        record / f"episode_{i:06d}",
                        dict(task=task, seed=episode_seed, episode=i, source="fowm-teleop-sim"),
                    )
                recorder = BagEpisodeRecorder(env, writer) if writer is not None else None
                if recorder is not None:
                    recorder.start(i, task, episode_seed)
                total, success, steps, quit_now, ended = 0.0, False, 0, False, False
                next_tick = time.monotonic()
                while not (ended or quit_now):
                    next_tick += period
                    time.sleep(max(0.0, next_tick - time.monotonic()))
                    keys = read_keys(fd)
                    quit_now = QUIT_KEY in keys
                    if quit_now:
                        break
                    action = teleop.action(keys)
                    _, reward, terminated, truncated, info = env.step(action)
                    if recorder is not None:
                        recorder.step(action, reward, info)
                    steps += 1
                    total += float(reward)
                    success = success or bool(info.get("success", False))
                    ended = terminated or truncated or END_EPISODE_KEY in keys
                    print(
                        f"\repisode {i} step {steps:3d}/{env.config.episode_length} reward {reward:+.3f} "
                        f"return {total:+.2f} success {'yes' if success else 'no '} gripper "
                        f"{'open  ' if teleop.gripper_open else 'closed'}",
                        end="",
                        flush=True,
                    )
                if quit_now:
                    if writer is not None:
                        writer.abort()
                    break
                if recorder is not None and writer is not None:
                    recorder.end(i, task, episode_seed)
                    writer.close()
                done_episodes += 1
                print(f"\r\nepisode {i} done: {steps} steps, return {total:.2f}, success {success}\r")
    finally:
        env.close()
    return done_episodes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fowm-teleop-sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="reach", choices=TASKS)
    parser.add_argument("--seed", type=int, default=0, help="episode i resets with seed + i")
    parser.add_argument("--episodes", type=int, default=1000, help="stop after this many episodes")
    parser.add_argument(
        "--record", type=Path, default=None, help="record each episode as a bag in this directory"
    )
    parser.add_argument(
        "--step", type=float, default=1.0, help="key press magnitude (fraction of max ee delta)"
    )
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    try:
        done = run(args.task, args.seed, args.episodes, args.record, args.step, sys.stdin.fileno())
    except (RuntimeError, ValueError) as exc:
        parser.error(str(exc))
    print(f"{done} episode(s) finished" + (f", recorded in {args.record}" if args.record else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
