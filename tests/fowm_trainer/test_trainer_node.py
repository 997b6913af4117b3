"""The online trainer node as a real process: it ingests online bags while training, survives
SIGKILL without losing or repeating an episode, and pushes signed weights over DDS to the real
planner node, which accepts them (its version goes up) or, signed with the wrong key, refuses them
with a reason the trainer logs. Trainer and planner share no files: each has its own copy of the
model config and of the key, and the weights travel on /fowm/weights."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fowm_testing import spin_until

pytestmark = pytest.mark.ros

TINY = {"model": {"latent_dim": 8, "mlp_dim": 32, "state_enc_dim": 16, "num_channels": 4}}
IMAGE = ["image_size:=48", "image_crop:=[0, 0, 120, 120]"]  # the 160x120 test frames


@pytest.fixture(scope="module")
def source_bags(tmp_path_factory) -> list[Path]:
    from fowm_sim.collect import CollectConfig, collect

    out = tmp_path_factory.mktemp("collected") / "reach"
    collect(
        CollectConfig(output=out, task="reach", episodes=4, seed=10, image_width=160, image_height=120),
        progress=False,
    )
    return sorted(p for p in out.iterdir() if p.is_dir())


def _machine(root: Path, name: str, utd: float = 0.2) -> Path:
    """A directory standing for one machine: its own model config (same model, its own schedule)."""
    from fowm_core.config import config_to_dict, load_config

    home = root / name
    home.mkdir()
    cfg = config_to_dict(
        load_config(
            "realtime-cpu", {**TINY, "optim": {"batch_size": 8, "compile": False}, "schedule": {"utd": utd}}
        )
    )
    (home / "preset.yaml").write_text(yaml.safe_dump(cfg))
    return home


def _start_trainer(ros_processes, home: Path, name: str, *params: str):
    args = [
        sys.executable,
        "-m",
        "fowm_trainer.trainer_node",
        "--ros-args",
        "-p",
        f"preset:={home / 'preset.yaml'}",
        "-p",
        f"online_dir:={home / 'online'}",
        "-p",
        f"checkpoint:={home / 'checkpoint.pt'}",
        "-p",
        "scan_period:=0.5",
    ]
    for p in (*IMAGE, *params):
        args += ["-p", p]
    return ros_processes.start(args, name)


def _wait_log(ros_processes, name: str, text: str, timeout_s: float, count: int = 1) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = ros_processes.log(name)
        if log.count(text) >= count:
            return log
        ros_processes.assert_running(name)
        time.sleep(0.1)
    raise AssertionError(f"{name} never logged {text!r} x{count}:\n{ros_processes.log(name)[-4000:]}")


def _planner_version(node) -> tuple[int, str]:
    from rcl_interfaces.srv import GetParameters

    client = node.create_client(GetParameters, "/fowm_planner/get_parameters")
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(GetParameters.Request(names=["model.version", "model.sha256"]))
    assert spin_until(node, future.done, 20)
    version, sha = future.result().values
    return version.integer_value, sha.string_value


def test_weights_pushed_over_dds_are_accepted_and_wrong_keys_refused(
    ros_node, ros_processes, tmp_path, source_bags
):
    from fowm_core.weights import generate_key_file

    planner, trainer, intruder = (_machine(tmp_path, n) for n in ("planner", "trainer", "intruder"))
    generate_key_file(planner / "key")
    shutil.copy(planner / "key", trainer / "key")  # the robot's key, copied to the training machine
    generate_key_file(intruder / "key")
    (trainer / "online").mkdir()
    shutil.copytree(source_bags[0], trainer / "online" / source_bags[0].name)

    def start_planner(name: str) -> None:
        ros_processes.start(
            [
                sys.executable,
                "-m",
                "fowm_planner.planner_node",
                "--ros-args",
                "-p",
                f"preset:={planner / 'preset.yaml'}",
                "-p",
                f"key_file:={planner / 'key'}",
                "-p",
                "image_size:=48",
                "-p",
                "autostart:=false",
            ],
            name,
        )

    start_planner("planner")
    assert _planner_version(ros_node)[0] == 0
    _start_trainer(ros_processes, trainer, "trainer", f"key_file:={trainer / 'key'}")
    log = _wait_log(ros_processes, "trainer", "planner accepted weights version 1", 120)
    assert "ingested online episode" in log and "published weights version 1" in log
    version, sha = _planner_version(ros_node)
    assert version == 1 and f"sha256 {sha[:16]}..." in log  # the blob the trainer published

    # A second episode arrives: more updates, version 2.
    shutil.copytree(source_bags[1], trainer / "online" / source_bags[1].name)
    _wait_log(ros_processes, "trainer", "planner accepted weights version 2", 120)
    assert _planner_version(ros_node)[0] == 2

    # The planner restarts (with its start weights): the trainer gives it the accepted version again.
    ros_processes.stop("planner")
    start_planner("planner_restarted")
    log = _wait_log(ros_processes, "trainer", "planner accepted weights version 2", 120, count=2)
    assert "re-pushing accepted version 2" in log
    assert _planner_version(ros_node)[0] == 2

    # Weights signed with another key: refused, the reason reaches the trainer's log, version stays.
    (intruder / "online").mkdir()
    _start_trainer(
        ros_processes, intruder, "intruder", f"key_file:={intruder / 'key'}", "push_on_start:=true"
    )
    log = _wait_log(ros_processes, "intruder", "planner rejected weights version 1", 120)
    assert "bad signature" in log
    assert _planner_version(ros_node)[0] == 2


def test_sigkill_mid_training_loses_and_repeats_no_episode(ros_processes, tmp_path, source_bags):
    from fowm_trainer.ingest import stored_digest
    from fowm_trainer.online import checkpoint_extra

    home = _machine(tmp_path, "trainer", utd=4.0)  # 100 updates per episode: killed mid-training
    online = home / "online"
    online.mkdir()
    for bag in source_bags[:3]:
        shutil.copytree(bag, online / bag.name)
    params = ("checkpoint_every:=5", "planner_node:=/nobody")
    proc = _start_trainer(ros_processes, home, "first", *params)
    _wait_log(ros_processes, "first", "ingested online episode", 60, count=2)
    deadline = time.monotonic() + 60
    while not (home / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # some updates into the episodes' budget
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ros_processes.stop("first")
    before = checkpoint_extra(home / "checkpoint.pt")
    assert before["budget"] > 0, "the kill was meant to land mid-training"

    shutil.copytree(source_bags[3], online / source_bags[3].name)  # arrives while the trainer is down
    _start_trainer(ros_processes, home, "second", *params)
    log = _wait_log(ros_processes, "second", "resumed from", 60)
    _wait_log(ros_processes, "second", "ingested online episode", 60, count=4 - len(before["ingested"]))
    time.sleep(1.0)
    ros_processes.stop("second")  # SIGINT: checkpoint written on the way out
    assert "checkpoint written" in ros_processes.log("second") or "checkpoint written" in log
    after = checkpoint_extra(home / "checkpoint.pt")
    want = {stored_digest(online / b.name) for b in source_bags}
    assert len(after["ingested"]) == 4 and set(after["ingested"]) == want  # none lost, none twice
    assert after["ingested"][: len(before["ingested"])] == before["ingested"]


def test_trainer_learns_from_live_topics_and_stays_responsive(ros_node, ros_processes, tmp_path, source_bags):
    """live_topics:=true and no bag directory: an episode replayed on the topics by another process
    (fowm-bag-play) is assembled, ingested once and trained on; while the training thread works off
    its updates the executor keeps publishing /diagnostics at 1 Hz."""
    from diagnostic_msgs.msg import DiagnosticArray

    home = _machine(tmp_path, "trainer", utd=12.0)  # 300 updates: seconds of training on any load
    _start_trainer(
        ros_processes, home, "trainer", "live_topics:=true", "online_dir:=''", "planner_node:=/nobody"
    )
    _wait_log(ros_processes, "trainer", "trainer up", 60)
    seen: list[tuple[float, dict[str, str]]] = []

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name == "fowm_trainer":
                seen.append((time.monotonic(), {kv.key: kv.value for kv in status.values}))

    ros_node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    ros_processes.start(
        [
            sys.executable,
            "-m",
            "fowm_trainer.bag_play",
            str(source_bags[0]),
            "--rate",
            "2",
            "--wait-subscribers",
            "1",
        ],
        "player",
    )
    assert spin_until(ros_node, lambda: "from live topics" in ros_processes.log("trainer"), 60)
    log = ros_processes.log("trainer")
    assert "ingested online episode" in log and "(25 steps" in log
    assert spin_until(ros_node, lambda: "published weights version 1" in ros_processes.log("trainer"), 120)
    training = [t for t, v in seen if int(v["updates_owed"]) > 0]
    assert len(training) >= 3, f"only {len(training)} diagnostics while training: {seen[-3:]}"
    gaps = np.diff(training)
    assert gaps.max() < 2.5, f"the executor stalled while training: gaps {gaps}"
    assert int(seen[-1][1]["updates"]) > int(seen[0][1]["updates"]) and seen[-1][1]["online_episodes"] == "1"
    assert "live episode dropped" not in ros_processes.log("trainer")
