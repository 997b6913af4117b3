"""The online trainer node: finetunes the world model on the robot's episodes while the robot acts,
and pushes signed weights to the planner.

Threads (the executor never trains, so subscriptions, services and timers stay responsive):
- executor: the live episode feed (optional), weight publishing, commit service calls, diagnostics;
- ingestion: scans `online_dir` for new episode bags (verified, deduplicated by content hash);
- training: spends the update budget (round(len * utd) updates per new online episode) on balanced
  offline/online batches, checkpoints, and hands signed weights to the executor for a push.

Push: after the updates owed to each episode are done (or every `push_every` updates), the weights
blob goes out on /fowm/weights (reliable + transient_local), then the planner's
`set_parameters_atomically` service gets model.version, model.sha256 and model.signature (HMAC-SHA256
with `key_file`) in one call. The planner's answer is logged: accepted, or its reason for refusing.

SIGINT/SIGTERM: the training thread stops after the update in flight and a checkpoint is written; a
restart with the same `checkpoint` resumes from it (see fowm_trainer.online for what it holds).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import UInt8MultiArray

from fowm_core.config import FOWMConfig, load_config, parse_overrides
from fowm_core.runtime import configure_process
from fowm_core.weights import load_key_file
from fowm_trainer.assembler import AssemblerConfig, EpisodeAssembler
from fowm_trainer.ingest import BagIngestor, observation_spec
from fowm_trainer.live_feed import LiveEpisodeFeed
from fowm_trainer.online import OnlineTrainer, SignedWeights, episode_identity
from fowm_trainer.settings import observation_config
from fowm_xarm import topics
from fowm_xarm.observation import SIM_CAMERA_CROP
from fowm_xarm.ros_node import declare_config, param, spin_node

NODE_NAME = "fowm_trainer"
COMMIT = ("model.version", "model.sha256", "model.signature")
BLOB_NOT_RECEIVED = "no received weights blob"  # the planner's reason while the blob is in flight


@dataclass
class TrainerNodeConfig:
    """Parameters of the trainer node; each field is declared as a ROS parameter with its doc."""

    preset: str = param(
        "realtime-cpu", "fowm_core preset (paper, realtime-cpu) or a YAML path; as the planner's"
    )
    task: str = param(
        "", "task whose section of the preset (its tasks: mapping) applies before the overrides; '': none"
    )
    overrides: list[str] = field(
        default_factory=list,
        metadata={"doc": "preset overrides dotted.key=value ('' entries ignored)"},
    )
    offline_dirs: list[str] = field(
        default_factory=list, metadata={"doc": "directories of offline bags for balanced batches"}
    )
    online_dir: str = param("data/online", "directory the recorder writes online episode bags to ('' = none)")
    live_topics: bool = param(False, "also assemble online episodes from the live contract topics")
    init_weights: str = param("", "weights to start from, e.g. fowm-pretrain's weights.safetensors")
    init_checkpoint: str = param(
        "",
        "fowm-pretrain's checkpoint.pt to start from: its weights and (unless the config's "
        "schedule.fresh_online_optimisers) its Adam state, as the official code continues its offline "
        "agent; init_weights, if also set, must hold the same weights",
    )
    checkpoint: str = param("artifacts/trainer/checkpoint.pt", "checkpoint written on exit and resumed from")
    checkpoint_every: int = param(200, "updates between periodic checkpoints (also after each new episode)")
    online_capacity: int = param(20000, "steps kept in the online buffer (memory bound; oldest evicted)")
    push_every: int = param(
        0, "push weights every K updates; 0: once the updates owed to an episode are done"
    )
    push_on_start: bool = param(False, "push the initial weights as soon as the planner's service is up")
    key_file: str = param("", "HMAC key file shared with the planner ('' = unsigned: only for a sim planner)")
    planner_node: str = param("/fowm_planner", "the planner node whose parameters commit the weights")
    commit_delay: float = param(0.05, "seconds between publishing a blob and committing it")
    commit_retries: int = param(
        40, "commits retried (every 50 ms) while the planner has not received the blob"
    )
    scan_period: float = param(2.0, "seconds between scans of online_dir")
    threads: int = param(1, "torch threads of the training thread (1 leaves cores to planner and sim)")
    image_size: int = param(84, "side of the square rgb observation; as the planner's")
    image_crop: list[int] = field(
        default_factory=lambda: list(SIM_CAMERA_CROP),
        metadata={"doc": "ROI x, y, w, h of the camera frame; [] = centre square; as the planner's"},
    )
    require_checksum: bool = param(True, "refuse bags without a content checksum")

    def __post_init__(self) -> None:
        self.overrides = [o for o in self.overrides if o]
        self.offline_dirs = [d for d in self.offline_dirs if d]
        self.fowm_config()  # fail early on a bad preset, task section or override
        observation_config(self.image_size, self.image_crop)
        if self.checkpoint_every < 1 or self.online_capacity < 16 or self.threads < 1:
            raise ValueError("checkpoint_every and threads must be >= 1 and online_capacity >= 16")
        if (
            self.push_every < 0
            or self.commit_retries < 0
            or self.commit_delay < 0
            or not self.scan_period > 0
        ):
            raise ValueError("push_every, commit_retries, commit_delay must be >= 0 and scan_period > 0")
        if not self.online_dir and not self.live_topics:
            raise ValueError("no online source: set online_dir and/or live_topics")

    def fowm_config(self) -> FOWMConfig:
        """The preset, its section for `task`, then `overrides` (as the planner's)."""
        return load_config(self.preset, parse_overrides(self.overrides), task=self.task)


class TrainerNode(Node):
    """See the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__(NODE_NAME, **overrides)
        self.config = cfg = declare_config(self, TrainerNodeConfig)
        log = self.get_logger()
        configure_process(cfg.threads)
        fowm_cfg = cfg.fowm_config()
        obs_cfg = observation_config(cfg.image_size, cfg.image_crop)
        self.key = load_key_file(cfg.key_file) if cfg.key_file else None
        if self.key is None:
            log.warning(
                "no key_file: pushes are unsigned and a planner that requires signatures refuses them"
            )

        offline = BagIngestor(obs_cfg, require_checksum=cfg.require_checksum).scan(cfg.offline_dirs)
        for error in offline.errors.values():
            log.error(f"offline bag skipped: {error}")
        self.trainer = OnlineTrainer(
            fowm_cfg, observation_spec(obs_cfg), offline.episodes, cfg.online_capacity, seed=fowm_cfg.seed
        )
        Path(cfg.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        if Path(cfg.checkpoint).exists():
            self.trainer.load(cfg.checkpoint)
            log.info(
                f"resumed from {cfg.checkpoint}: {len(self.trainer.ingested)} online episodes, "
                f"{self.trainer.agent.num_updates} updates, {self.trainer.budget} owed, "
                f"version {self.trainer.version}"
            )
        elif cfg.init_checkpoint:
            resumed = self.trainer.load_pretrained(cfg.init_checkpoint)
            if cfg.init_weights:
                self.trainer.check_weights_equal(cfg.init_weights)
            log.info(
                f"initial weights from {cfg.init_checkpoint} (update {self.trainer.agent.num_updates}), "
                + ("its Adam state resumed" if resumed else "new Adam optimisers (fresh_online_optimisers)")
            )
        elif cfg.init_weights:
            self.trainer.load_weights(cfg.init_weights)
            log.info(f"initial weights from {cfg.init_weights}, new Adam optimisers (no init_checkpoint)")
        self.ingestor = BagIngestor(obs_cfg, require_checksum=cfg.require_checksum)
        self.ingestor.ingested = dict.fromkeys(self.trainer.ingested, "checkpoint")
        log.info(
            f"offline: {offline.transitions} transitions from {len(offline.bags)} bags; "
            f"online from {cfg.online_dir or '-'}{' and live topics' if cfg.live_topics else ''}"
        )

        self._weights_pub = self.create_publisher(
            UInt8MultiArray, topics.WEIGHTS.name, topics.rclpy_qos(topics.WEIGHTS.qos)
        )
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._commit = self.create_client(
            SetParametersAtomically, f"{cfg.planner_node.rstrip('/')}/set_parameters_atomically"
        )
        self._outbox: queue.Queue[SignedWeights] = queue.Queue()
        self._push_guard = self.create_guard_condition(self._on_push_ready)
        self._pending: SignedWeights | None = None  # published, commit not yet answered
        self._accepted: SignedWeights | None = None  # what the planner runs, as far as we know
        self._planner_up = False
        self._attempts = 0
        self.stats: dict[str, Any] = dict(accepted=0, rejected=0, last_result="", pushed_version=0)
        self.push_losses: dict[str, float] = {}  # mean losses of the updates behind the last push
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._save_requested = threading.Event()
        if cfg.live_topics:
            assembler = EpisodeAssembler(obs_cfg, config=AssemblerConfig())
            self._feed = LiveEpisodeFeed(self, assembler, self._on_live_episode, self._on_live_error)
        self._threads = [threading.Thread(target=self._train_loop, name="train", daemon=True)]
        if cfg.online_dir:
            Path(cfg.online_dir).mkdir(parents=True, exist_ok=True)
            self._threads.append(threading.Thread(target=self._ingest_loop, name="ingest", daemon=True))
        for t in self._threads:
            t.start()
        self.create_timer(1.0, self._on_diagnostics)
        self.create_timer(1.0, self._watch_planner)
        if cfg.push_on_start:
            self._outbox.put(self.trainer.signed_weights(self.key))
            self._push_guard.trigger()
        log.info(f"trainer up: preset={cfg.preset} push to {cfg.planner_node} via {topics.WEIGHTS.name}")

    # ------------------------------------------------------------------ episodes in
    def _ingest_loop(self) -> None:
        while not self._stop.is_set():
            report = self.ingestor.scan(self.config.online_dir)
            for error in report.errors.values():
                self.get_logger().error(f"online bag skipped: {error}")
            for bag in report.bags:
                for i, episode in enumerate(bag.episodes):
                    self._add(
                        episode,
                        bag.identity if len(bag.episodes) == 1 else f"{bag.identity}/{i}",
                        str(bag.path),
                    )
            self._stop.wait(self.config.scan_period)

    def _on_live_episode(self, episode) -> None:
        self._add(episode, episode_identity(episode), "live topics")

    def _on_live_error(self, message: str) -> None:
        self.get_logger().warning(f"live episode dropped: {message}")

    def _add(self, episode, identity: str, source: str) -> None:
        if self.trainer.add_online(episode, identity):
            self.get_logger().info(
                f"ingested online episode {identity[:12]} ({len(episode)} steps, return "
                f"{episode.episode_return:.3f}, success {episode.info.get('success')}) from {source}; "
                f"{self.trainer.budget} updates owed"
            )
            self._save_requested.set()
            self._wake.set()

    # ------------------------------------------------------------------ training thread
    def _train_loop(self) -> None:
        cfg, trainer = self.config, self.trainer
        since_push, since_save = 0, 0
        window: list[dict[str, float]] = []  # metrics of the updates since the last push
        try:
            seconds = trainer.agent.warm_up_update()  # optim.compile: compile now, not on the first bag
            if seconds:
                self.get_logger().info(f"update compiled in {seconds:.1f} s, before any update")
            while not self._stop.is_set():
                if self._save_requested.is_set():
                    self._save_requested.clear()
                    trainer.save(cfg.checkpoint)
                    since_save = 0
                if not trainer.can_train:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                window.append(trainer.update())
                since_push, since_save = since_push + 1, since_save + 1
                owed_done = cfg.push_every == 0 and trainer.budget == 0
                if owed_done or (cfg.push_every and since_push >= cfg.push_every):
                    self.push_losses = {
                        k: sum(m[k] for m in window) / len(window) for k in window[-1] if k.endswith("_loss")
                    }  # one assignment: the executor thread reads a complete dict
                    window = []
                    self._outbox.put(trainer.signed_weights(self.key))
                    self._push_guard.trigger()
                    since_push = 0
                if since_save >= cfg.checkpoint_every:
                    trainer.save(cfg.checkpoint)
                    since_save = 0
        except Exception as exc:  # a dead training thread must be loud, not silent
            self.get_logger().fatal(f"training thread failed: {type(exc).__name__}: {exc}")
            raise

    # ------------------------------------------------------------------ push (executor thread)
    def _on_push_ready(self) -> None:
        latest = None
        while not self._outbox.empty():
            latest = self._outbox.get_nowait()  # only the newest weights matter
        if latest is None:
            return
        self._weights_pub.publish(topics.weights_msg(latest.blob))
        self._pending, self._attempts = latest, 0
        self.stats["pushed_version"] = latest.version
        self.get_logger().info(
            f"published weights version {latest.version} ({len(latest.blob)} bytes, {latest.num_updates} "
            f"updates, sha256 {latest.sha256[:16]}...)"
        )
        self._schedule_commit(self.config.commit_delay)

    def _schedule_commit(self, delay: float) -> None:
        timer = None

        def fire() -> None:
            self.destroy_timer(timer)
            self._send_commit()

        timer = self.create_timer(max(delay, 1e-3), fire)

    def _send_commit(self) -> None:
        pending = self._pending
        if pending is None:
            return
        if not self._commit.service_is_ready():
            self.get_logger().warning(
                f"planner service {self._commit.srv_name} not available; retrying version {pending.version}",
                throttle_duration_sec=5.0,
            )
            self._schedule_commit(1.0)
            return
        request = SetParametersAtomically.Request()
        request.parameters = [
            Parameter(COMMIT[0], value=int(pending.version)).to_parameter_msg(),
            Parameter(COMMIT[1], value=pending.sha256).to_parameter_msg(),
            Parameter(COMMIT[2], value=pending.signature).to_parameter_msg(),
        ]
        sent_at = time.monotonic()
        self._commit.call_async(request).add_done_callback(
            lambda future, p=pending: self._on_commit_result(p, future, sent_at)
        )

    def _on_commit_result(self, pushed: SignedWeights, future: Any, sent_at: float) -> None:
        if self._pending is not pushed:
            return  # superseded by a newer push
        try:
            result = future.result().result
        except Exception as exc:  # service gone mid-call
            self.get_logger().error(f"commit of version {pushed.version} failed: {exc}")
            self._schedule_commit(1.0)
            return
        latency_ms = (time.monotonic() - sent_at) * 1e3
        if result.successful:
            self._pending = None
            self.stats["accepted"] += 1
            self._accepted, self._planner_up = pushed, True
            self.stats["last_result"] = f"version {pushed.version} accepted"
            self.get_logger().info(
                f"planner accepted weights version {pushed.version} in {latency_ms:.0f} ms: {result.reason}"
            )
        elif BLOB_NOT_RECEIVED in result.reason and self._attempts < self.config.commit_retries:
            self._attempts += 1  # the 20 MB blob may still be on its way
            self._schedule_commit(0.05)
        else:
            self._pending = None
            self.stats["rejected"] += 1
            self.stats["last_result"] = f"version {pushed.version} rejected: {result.reason}"
            self.get_logger().error(f"planner rejected weights version {pushed.version}: {result.reason}")

    def _watch_planner(self) -> None:
        """A planner that (re)starts runs its own start weights: give it the last accepted ones."""
        up = self._commit.service_is_ready()
        if up and not self._planner_up and self._accepted is not None and self._pending is None:
            self.get_logger().info(
                f"planner (re)appeared: re-pushing accepted version {self._accepted.version}"
            )
            self._weights_pub.publish(topics.weights_msg(self._accepted.blob))
            self._pending, self._attempts = self._accepted, 0
            self._schedule_commit(self.config.commit_delay)
        self._planner_up = up

    # ------------------------------------------------------------------ diagnostics, shutdown
    def _on_diagnostics(self) -> None:
        t = self.trainer
        values = dict(
            updates=t.agent.num_updates,
            updates_owed=t.budget,
            online_episodes=len(t.ingested),
            online_transitions=t.online.num_transitions,
            offline_transitions=t.offline.num_transitions,
            **self.stats,
            **{k: f"{v:.6g}" for k, v in self.push_losses.items()},
        )
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK, name=NODE_NAME, message=str(self.stats["last_result"] or "training")
        )
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def shutdown(self) -> None:
        """Stop the threads after the update in flight, then write the checkpoint."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=120)
        self.trainer.save(self.config.checkpoint)
        summary = dict(updates=self.trainer.agent.num_updates, online_episodes=len(self.trainer.ingested))
        self.get_logger().info(f"checkpoint written to {self.config.checkpoint}: {json.dumps(summary)}")


def main(args: list[str] | None = None) -> None:
    spin_node(TrainerNode, args, TrainerNode.shutdown)


if __name__ == "__main__":
    main()
