"""Keyboard teleop: the pure key mapping, and fowm-teleop-sim driven through a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import numpy as np
import pytest

from fowm_xarm.teleop import KeyboardTeleop, TeleopConfig


def test_keys_map_to_ee_deltas_and_a_gripper_toggle():
    teleop = KeyboardTeleop(TeleopConfig(step=0.5))
    np.testing.assert_array_equal(teleop.action(""), [0, 0, 0, 1])  # idle: hold, gripper open
    np.testing.assert_array_equal(teleop.action("w"), [0.5, 0, 0, 1])
    np.testing.assert_array_equal(teleop.action("sadf"), [-0.5, 0, -0.5, 1])  # a and d cancel
    np.testing.assert_array_equal(teleop.action("rrrr"), [0, 0, 1, 1])  # repeats add up, then clip
    np.testing.assert_array_equal(teleop.action("W"), [0.5, 0, 0, 1])  # caps lock does not matter
    np.testing.assert_array_equal(teleop.action(" "), [0, 0, 0, -1])  # close
    np.testing.assert_array_equal(teleop.action("x?"), [0, 0, 0, -1])  # unknown keys ignored, state kept
    np.testing.assert_array_equal(teleop.action("  d"), [0, -0.5, 0, -1])  # two toggles cancel
    teleop.reset()
    assert teleop.gripper_open and teleop.action("").dtype == np.float32


def test_teleop_config_rejects_bad_values():
    with pytest.raises(ValueError, match="step"):
        TeleopConfig(step=0.0)
    with pytest.raises(ValueError, match="space key is reserved"):
        TeleopConfig(bindings={" ": (0, 1.0)})
    with pytest.raises(ValueError, match="axis must be"):
        TeleopConfig(bindings={"i": (3, 1.0)})


def test_teleop_sim_needs_a_terminal(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fowm_sim.teleop_sim", "--episodes", "1"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MUJOCO_GL": "egl"},
    )
    assert result.returncode == 2
    assert "interactive terminal" in result.stderr


def test_teleop_sim_moves_the_arm_and_records_the_episode(tmp_path):
    from fowm_xarm.episode_bag import list_episode_bags, read_episode_bag
    from fowm_xarm.kinematics import XArm7Kinematics

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fowm_sim.teleop_sim",
            "--task",
            "reach",
            "--episodes",
            "1",
            "--record",
            str(tmp_path),
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "MUJOCO_GL": "egl"},
    )
    os.close(slave)
    output = b""

    def pump(seconds: float) -> None:
        nonlocal output
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    output += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    return

    try:
        deadline = time.monotonic() + 60
        while b"episode 0 step" not in output and time.monotonic() < deadline and proc.poll() is None:
            pump(0.1)
        for _ in range(12):  # about 2 s of 'forward', one key per tick
            os.write(master, b"w")
            pump(0.16)
        os.write(master, b" ")  # close the gripper
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            pump(0.2)
        pump(0.2)
        assert proc.returncode == 0, output.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)

    text = output.decode(errors="replace")
    assert "episode 0 done: 25 steps" in text and "1 episode(s) finished" in text
    (bag_path,) = list_episode_bags(tmp_path)
    bag = read_episode_bag(bag_path)
    assert bag.metadata["source"] == "fowm-teleop-sim" and bag.num_decisions == 25
    actions = bag.arrays["action"]
    assert (actions[:, 0] > 0).sum() >= 5, actions
    assert actions[0, 3] == 1.0 and actions[-1, 3] == -1.0  # open at first, closed after the space key
    kin = XArm7Kinematics()
    x_start = kin.fk(bag.arrays["joint_position"][0, :7])[0][0]
    x_end = kin.fk(bag.arrays["joint_position"][-1, :7])[0][0]
    assert x_end > x_start + 0.1, f"the TCP should have moved forward: x {x_start:.3f} -> {x_end:.3f}"
