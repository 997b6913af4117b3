"""Bag ingestion throughput and weight push latency. Writes bench-results/ingest.{json,md}.

Ingestion: episode bags with 640x480 rgb8 frames (EpisodeBagWriter, as the recorder and fowm-collect
write them) -> verified, assembled fowm_core Episodes (BagIngestor), in transitions/s on one core,
next to what bounds it on this machine, measured in the same run:
- raw file read MB/s of the same .mcap files (page cache warm: the ceiling of any reader),
- read_episode_bag alone (CRC and content-digest verification + CDR decoding),
- make_observation alone (ROI crop + resize of a 640x480 frame + forward kinematics) per transition.

Push: the paper-size model's weights blob published on /fowm/weights, then committed through the
real planner node's set_parameters_atomically, as the trainer node does (retrying while the blob is
in flight): seconds from publish to the planner's "accepted" (validation + swap included).

    python benchmarks/bench_ingest.py [--episodes 8] [--pushes 5] [--no-push] [--out bench-results]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FASTDDS_PROFILE = REPO / "ros2_ws/src/fowm_bringup/config/fastdds.xml"
STEPS = 25
PERIOD_NS = 160_000_000


def write_bags(root: Path, episodes: int, compression: str) -> list[Path]:
    """Episodes of STEPS decisions with 640x480 frames (smooth scene + sensor noise, so the bytes are
    camera-like) in the contract layout, actions naming their observation stamps."""
    from fowm_xarm import topics
    from fowm_xarm.episode_bag import EpisodeBagWriter
    from fowm_xarm.kinematics import HOME_Q
    from fowm_xarm.topics import EpisodeEvent

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    base = np.stack([xx * 255 // 640, yy * 255 // 480, (xx + yy) * 255 // 1120], -1).astype(np.int16)
    paths = []
    for e in range(episodes):
        t0 = (e + 1) * 10**10
        with EpisodeBagWriter(root / f"episode_{e:06d}", dict(task="bench", episode=e), compression) as w:
            w.write(
                topics.EPISODE.name, t0 - 1, topics.episode_event_msg(EpisodeEvent("start", e, "bench", e))
            )
            for k in range(STEPS + 1):
                t = t0 + k * PERIOD_NS
                frame = np.clip(base + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
                q = HOME_Q + 0.01 * k
                w.write(topics.IMAGE.name, t, topics.image_msg(t, frame))
                w.write(topics.JOINT_STATES.name, t, topics.joint_state_msg(t, q, np.zeros(7), 1.0))
                if k < STEPS:
                    w.write(
                        topics.ACTION.name, t + 1, topics.action_msg(rng.uniform(-1, 1, 4), obs_stamp_ns=t)
                    )
                    w.write(topics.REWARD.name, t + PERIOD_NS - 1, topics.float32_msg(-0.1 * k))
            end = EpisodeEvent("end", e, "bench", e, success=False, episode_return=0.0, steps=STEPS)
            w.write(topics.EPISODE.name, t0 + STEPS * PERIOD_NS + 1, topics.episode_event_msg(end))
        paths.append(root / f"episode_{e:06d}")
    return paths


def bench_ingest(episodes: int, compression: str) -> dict[str, float]:
    from fowm_trainer.ingest import BagIngestor
    from fowm_xarm.camera import preprocess_rgb
    from fowm_xarm.episode_bag import read_episode_bag
    from fowm_xarm.kinematics import HOME_Q, XArm7Kinematics
    from fowm_xarm.observation import ObservationConfig, make_observation

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp) / "bags"
        t = time.perf_counter()
        bags = write_bags(root, episodes, compression)
        write_s = time.perf_counter() - t
        files = [p / f"{p.name}.mcap" for p in bags]
        total_bytes = sum(f.stat().st_size for f in files)
        for f in files:  # warm the page cache: every reader below starts from the same state
            f.read_bytes()
        t = time.perf_counter()
        for f in files:
            f.read_bytes()
        read_s = time.perf_counter() - t
        blob = files[0].read_bytes()
        t = time.perf_counter()
        zlib.crc32(blob)
        crc_mb_s = len(blob) / 1e6 / (time.perf_counter() - t)
        t = time.perf_counter()
        hashlib.sha256(blob).digest()
        sha_mb_s = len(blob) / 1e6 / (time.perf_counter() - t)

        t = time.perf_counter()
        for p in bags:
            read_episode_bag(p, require_checksum=True, decode_arrays=False)
        verify_s = time.perf_counter() - t

        cfg, kin = ObservationConfig(), XArm7Kinematics()
        frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        n = 200
        t = time.perf_counter()
        for _ in range(n):
            make_observation(frame, HOME_Q, 1.0, kin, cfg)
        obs_s = (time.perf_counter() - t) / n

        t = time.perf_counter()
        report = BagIngestor(cfg).scan(root)
        ingest_s = time.perf_counter() - t
        assert not report.errors and report.transitions == episodes * STEPS, report.errors
        t = time.perf_counter()
        report = BagIngestor(cfg, verify_digest=False).scan(root)
        ingest_crc_s = time.perf_counter() - t
        assert not report.errors and report.transitions == episodes * STEPS, report.errors
        t = time.perf_counter()
        for _ in range(n):
            preprocess_rgb(frame, cfg.image_size, cfg.crop)
        pre_s = (time.perf_counter() - t) / n
    transitions = episodes * STEPS
    return dict(
        episodes=episodes,
        transitions=transitions,
        bag_mb=total_bytes / 1e6,
        write_mb_per_s=total_bytes / 1e6 / write_s,
        raw_read_mb_per_s=total_bytes / 1e6 / read_s,
        crc32_mb_per_s=crc_mb_s,
        sha256_mb_per_s=sha_mb_s,
        verify_decode_mb_per_s=total_bytes / 1e6 / verify_s,
        verify_decode_transitions_per_s=transitions / verify_s,
        make_observation_ms=obs_s * 1e3,
        make_observation_transitions_per_s=1.0 / obs_s,
        preprocess_rgb_ms=pre_s * 1e3,
        ingest_crc_only_transitions_per_s=transitions / ingest_crc_s,
        ingest_transitions_per_s=transitions / ingest_s,
        ingest_mb_per_s=total_bytes / 1e6 / ingest_s,
        # How close ingestion gets to the two costs it cannot avoid (1.0 = no other overhead).
        fraction_of_read_plus_preprocess_bound=(read_s + obs_s * (transitions + episodes)) / ingest_s,
    )


def bench_push(pushes: int, tmp: Path, env: dict[str, str]) -> dict[str, float]:
    """Start the planner node (paper preset) and push `pushes` different signed blobs to it."""
    import rclpy
    import torch
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter
    from std_msgs.msg import UInt8MultiArray

    from fowm_core.agent import FOWMAgent
    from fowm_core.config import load_config
    from fowm_core.weights import (
        generate_key_file,
        load_key_file,
        sign_weights,
        weights_sha256,
        weights_to_bytes,
    )
    from fowm_trainer.ingest import observation_spec
    from fowm_trainer.trainer_node import BLOB_NOT_RECEIVED, COMMIT
    from fowm_xarm import topics
    from fowm_xarm.observation import ObservationConfig

    key = load_key_file(generate_key_file(tmp / "key"))
    agent = FOWMAgent(load_config("paper"), observation_spec(ObservationConfig()), 4)
    weights = agent.get_weights()
    blobs = []
    for i in range(pushes):
        g = torch.Generator().manual_seed(i)
        agent.load_weights({k: v * (1 + 0.01 * torch.rand(v.shape, generator=g)) for k, v in weights.items()})
        blobs.append(weights_to_bytes(agent))
    log = open(tmp / "planner.log", "wb")
    planner = subprocess.Popen(
        [sys.executable, "-m", "fowm_planner.planner_node", "--ros-args", "-p", "preset:=paper",
         "-p", f"key_file:={tmp / 'key'}", "-p", "autostart:=false"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    rclpy.init()
    node = rclpy.create_node("bench_ingest_pusher")
    pub = node.create_publisher(UInt8MultiArray, topics.WEIGHTS.name, topics.rclpy_qos(topics.WEIGHTS.qos))
    client = node.create_client(SetParametersAtomically, "/fowm_planner/set_parameters_atomically")
    try:
        if not client.wait_for_service(timeout_sec=120):
            raise RuntimeError(f"planner never came up:\n{(tmp / 'planner.log').read_text()[-3000:]}")
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        latencies, serialise, commits = [], [], []
        for version, blob in enumerate(blobs, start=1):
            t0 = time.perf_counter()
            data = topics.weights_msg(blob)
            signature = sign_weights(blob, key, version)
            t1 = time.perf_counter()
            pub.publish(data)
            request = SetParametersAtomically.Request()
            request.parameters = [
                Parameter(COMMIT[0], value=version).to_parameter_msg(),
                Parameter(COMMIT[1], value=weights_sha256(blob)).to_parameter_msg(),
                Parameter(COMMIT[2], value=signature).to_parameter_msg(),
            ]
            tries = 0
            while True:
                tc = time.perf_counter()
                future = client.call_async(request)
                rclpy.spin_until_future_complete(node, future, timeout_sec=60)
                result = (
                    future.result().results[0]
                    if hasattr(future.result(), "results")
                    else future.result().result
                )
                if result.successful or BLOB_NOT_RECEIVED not in result.reason or tries > 200:
                    break
                tries += 1
                time.sleep(0.02)
            t2 = time.perf_counter()
            if not result.successful:
                raise RuntimeError(f"push {version} refused: {result.reason}")
            latencies.append(t2 - t0)
            serialise.append(t1 - t0)
            commits.append(t2 - tc)
            time.sleep(0.5)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        planner.terminate()
        planner.wait(timeout=30)
        log.close()
    return dict(
        pushes=pushes,
        blob_mb=len(blobs[0]) / 1e6,
        push_to_accepted_s_p50=float(np.median(latencies)),
        push_to_accepted_s_max=float(np.max(latencies)),
        serialise_and_sign_s_p50=float(np.median(serialise)),
        last_commit_call_s_p50=float(np.median(commits)),
    )


def main() -> None:
    from fowm_xarm.episode_bag import COMPRESSIONS, DEFAULT_COMPRESSION

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=8, help="episodes of 25 decisions with 640x480 frames")
    p.add_argument("--pushes", type=int, default=5)
    p.add_argument("--no-push", action="store_true", help="skip the push latency (no planner node)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quick", action="store_true", help="fewer episodes and pushes")
    p.add_argument(
        "--compression",
        default=DEFAULT_COMPRESSION,
        choices=sorted(COMPRESSIONS),
        help="MCAP chunk compression",
    )
    p.add_argument("--out", default=str(REPO / "bench-results"))
    a = p.parse_args()
    import torch

    torch.set_num_threads(max(1, a.threads))
    episodes, pushes = (3, 2) if a.quick else (a.episodes, a.pushes)
    results: dict[str, dict[str, float]] = {"ingest": bench_ingest(episodes, a.compression)}
    if not a.no_push:
        from domain_coordinator import domain_id

        with domain_id() as did, tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
            os.environ.update(
                ROS_DOMAIN_ID=str(did), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=tmp,
                FASTRTPS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE), PYTHONUNBUFFERED="1",
            )  # fmt: skip
            results["push"] = bench_push(pushes, Path(tmp), dict(os.environ))
            shutil.rmtree(tmp, ignore_errors=True)
    meta = dict(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
        frame="640x480 rgb8, ROI crop to 84x84 (ObservationConfig defaults)",
        compression=a.compression,
        goal="ingest >= 2000 transitions/s per core; push -> accepted <= 0.5 s (paper model)",
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest.json").write_text(json.dumps(dict(meta=meta, results=results), indent=2))
    (out / "ingest.md").write_text(markdown(meta, results))
    print(markdown(meta, results))


def markdown(meta: dict, results: dict) -> str:
    i = results["ingest"]
    lines = [
        f"# Bag ingestion and weight push ({meta['date']}, {meta['cpu_count']} CPUs)",
        "",
        f"{i['episodes']} episodes x {STEPS} decisions, {meta['frame']}, {i['bag_mb']:.0f} MB of MCAP "
        f"({meta.get('compression', 'none')} chunks; MB/s below are of file bytes).",
        "",
        "| stage | throughput |",
        "|---|---|",
        f"| raw file read (page cache) | {i['raw_read_mb_per_s']:.0f} MB/s |",
        f"| CRC32 alone (zlib) / sha256 alone (hashlib) | {i['crc32_mb_per_s']:.0f} / "
        f"{i['sha256_mb_per_s']:.0f} MB/s |",
        f"| read_episode_bag (CRCs + content digest + CDR) | {i['verify_decode_mb_per_s']:.0f} MB/s, "
        f"{i['verify_decode_transitions_per_s']:.0f} transitions/s |",
        f"| make_observation alone (crop + resize + FK) | {i['make_observation_ms']:.2f} ms, "
        f"{i['make_observation_transitions_per_s']:.0f} transitions/s |",
        f"| preprocess_rgb alone (crop + resize) | {i['preprocess_rgb_ms']:.2f} ms |",
        f"| **ingestion (BagIngestor.scan)** | **{i['ingest_transitions_per_s']:.0f} transitions/s** "
        f"({i['ingest_mb_per_s']:.0f} MB/s) |",
        f"| ingestion, CRCs only (verify_digest=False) | {i['ingest_crc_only_transitions_per_s']:.0f} "
        "transitions/s |",
        "",
        f"Ingestion runs at {i['fraction_of_read_plus_preprocess_bound']:.2f} of the bound set by reading "
        "the files and preprocessing alone (goal: >= 2,000 transitions/s per core).",
    ]
    if "push" in results:
        p = results["push"]
        lines += [
            "",
            f"Weight push, paper model ({p['blob_mb']:.1f} MB blob), {p['pushes']} pushes to the planner "
            f"node: publish -> accepted p50 {p['push_to_accepted_s_p50']:.3f} s, "
            f"max {p['push_to_accepted_s_max']:.3f} s "
            f"(serialise + sign {p['serialise_and_sign_s_p50']:.3f} s, final commit call "
            f"{p['last_commit_call_s_p50']:.3f} s; goal <= 0.5 s).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
