"""fowm-pretrain: offline pretraining from rosbags ("rosbag replay for offline pretraining").

Reads one or more directories of episode bags (verified, deduplicated: fowm_trainer.ingest) into
the offline buffer and runs the configured number of updates, with a progress bar, TensorBoard
scalars (and metrics.jsonl) for every loss, a checkpoint every `checkpoint_every` updates and on
SIGINT/SIGTERM, and exact resume: a rerun with the same output directory continues from the last
checkpoint and draws the same batches and reaches the same weights as a run that never stopped.

    fowm-pretrain --bags data/reach_medium --output artifacts/pretrain/reach
    fowm-pretrain --config ros2_ws/src/fowm_bringup/config/pretrain.yaml --set optim.batch_size=128

Output directory: checkpoint.pt, weights.safetensors (final), summary.json, tensorboard/ (with
metrics.jsonl).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fowm_core.agent import FOWMAgent
from fowm_core.buffer import EpisodeBuffer
from fowm_core.config import FOWMConfig, config_to_dict, load_config, parse_overrides
from fowm_core.metrics import MetricsLogger, read_jsonl
from fowm_core.runtime import configure_process
from fowm_core.training import pretrain_offline
from fowm_core.weights import load_checkpoint, save_checkpoint, save_weights
from fowm_trainer.ingest import ACTION_DIM, BagIngestor, observation_spec, stored_digest
from fowm_trainer.settings import build_config, observation_config, read_params_file
from fowm_xarm.episode_bag import list_episode_bags
from fowm_xarm.observation import SIM_CAMERA_CROP
from fowm_xarm.ros_node import param

NODE_NAME = "fowm_pretrain"  # section of the params file
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.safetensors"
SUMMARY = "summary.json"


@dataclass
class PretrainConfig:
    """One offline pretraining run."""

    bags: list[str] = field(
        default_factory=list,
        metadata={"doc": "directories of offline episode bags (one rosbag2 MCAP per episode)"},
    )
    output: str = param(
        "artifacts/pretrain", "output directory: checkpoint, weights, summary, TensorBoard logs"
    )
    preset: str = param("realtime-cpu", "fowm_core preset (paper, realtime-cpu) or a YAML path")
    overrides: list[str] = field(
        default_factory=list,
        metadata={"doc": "preset overrides as dotted.key=value, e.g. optim.batch_size=128"},
    )
    task: str = param(
        "", "task whose section of the preset (its tasks: mapping) applies before the overrides; '': none"
    )
    updates: int = param(0, "gradient updates in total (0: the preset's schedule.offline_updates)")
    checkpoint_every: int = param(500, "updates between checkpoints")
    log_every: int = param(50, "updates averaged into one logged point of every loss")
    image_size: int = param(84, "side of the square rgb observation (the model's input)")
    image_crop: list[int] = field(
        default_factory=lambda: list(SIM_CAMERA_CROP),
        metadata={"doc": "ROI x, y, w, h of the camera frame; [] = centre square"},
    )
    require_checksum: bool = param(
        True, "refuse bags without a content checksum (EpisodeBagWriter writes one)"
    )
    threads: int = param(1, "torch threads (one per process on a small shared CPU)")
    progress: bool = param(True, "show a progress bar")

    def __post_init__(self) -> None:
        self.bags = [str(b) for b in self.bags]
        self.overrides = [str(o) for o in self.overrides]
        if not self.bags:
            raise ValueError("PretrainConfig.bags: give at least one bag directory")
        if self.updates < 0:
            raise ValueError(f"PretrainConfig.updates must be >= 0, got {self.updates}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError(
                f"checkpoint_every and log_every must be >= 1, got {self.checkpoint_every}, {self.log_every}"
            )
        if self.threads < 1:
            raise ValueError(f"PretrainConfig.threads must be >= 1, got {self.threads}")
        observation_config(self.image_size, self.image_crop)  # fail early on a bad crop
        self.fowm_config()  # fail early on a bad preset, task section or override

    def fowm_config(self) -> FOWMConfig:
        return load_config(self.preset, parse_overrides(self.overrides), task=self.task)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0]} if rows else {}


def run(config: PretrainConfig) -> dict[str, Any]:
    """Pretrain (or resume); returns the summary also written to <output>/summary.json."""
    configure_process(config.threads)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config.fowm_config()
    obs_cfg = observation_config(config.image_size, config.image_crop)
    spec = observation_spec(obs_cfg)
    total = config.updates or cfg.schedule.offline_updates
    agent = FOWMAgent(cfg, spec, ACTION_DIM)
    agent.warm_up_update()  # optim.compile: compile first, and train eagerly if that fails
    rng = np.random.default_rng(cfg.seed)
    ckpt = out / CHECKPOINT
    resumed_from = 0
    window: list[dict[str, float]] = []
    if ckpt.exists():
        # The buffer comes back from the checkpoint (contents and replay priorities), so the resumed
        # run samples exactly what the uninterrupted one would have.
        head = torch.load(ckpt, map_location="cpu", weights_only=True)["extra"]
        buffer = EpisodeBuffer(spec, ACTION_DIM, int(head["buffer_capacity"]), cfg.optim.horizon)
        extra = load_checkpoint(ckpt, agent, {"offline": buffer})
        rng.bit_generator.state = extra["rng"]
        ingested: dict[str, str] = dict(extra["ingested"])
        resumed_from = agent.num_updates
        window = [dict(r) for r in extra["window"]]
        new = [str(p) for d in config.bags for p in list_episode_bags(d) if stored_digest(p) not in ingested]
        if new:
            print(
                f"fowm-pretrain: resuming; {len(new)} bag(s) added since the run started are not used",
                file=sys.stderr,
            )
        errors, duplicates = dict(extra["errors"]), list(extra["duplicates"])
    else:
        ingestor = BagIngestor(obs_cfg, require_checksum=config.require_checksum)
        report = ingestor.scan(config.bags)
        for error in report.errors.values():
            print(f"fowm-pretrain: skipped {error}", file=sys.stderr)
        if not report.episodes:
            raise ValueError(f"no usable episodes in {config.bags}")
        buffer = EpisodeBuffer.holding(spec, ACTION_DIM, report.episodes, cfg.optim.horizon)
        ingested, errors, duplicates = dict(ingestor.ingested), report.errors, report.duplicates

    def checkpoint() -> None:
        extra = dict(
            rng=rng.bit_generator.state,
            ingested=ingested,
            errors=errors,
            duplicates=duplicates,
            buffer_capacity=buffer.capacity_steps,
            total_updates=total,
            window=window,  # updates since the last logged point, so resumed curves match too
        )
        save_checkpoint(ckpt, agent, {"offline": buffer}, extra=extra)

    log_dir = out / "tensorboard"
    _drop_metrics_after(log_dir / "metrics.jsonl", agent.num_updates)
    start = time.perf_counter()
    last_logged: dict[str, float] = {}
    interrupted: list[str] = []  # set by SIGINT/SIGTERM; the loop stops after the update in flight

    def on_signal(signum: int, _frame: Any) -> None:
        interrupted.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with MetricsLogger(log_dir) as logger:
            bar = tqdm(total=total, initial=agent.num_updates, desc="pretrain", disable=not config.progress)
            try:
                while agent.num_updates < total and not interrupted:
                    window += pretrain_offline(agent, buffer, 1, progress=False, rng=rng)
                    bar.update(1)
                    if agent.num_updates % config.log_every == 0 or agent.num_updates == total:
                        last_logged = _mean(window)
                        logger.log(agent.num_updates, last_logged, prefix="offline/")
                        bar.set_postfix(loss=f"{last_logged.get('total_loss', float('nan')):.3f}")
                        window = []
                    if agent.num_updates % config.checkpoint_every == 0:
                        checkpoint()
            finally:
                bar.close()
                logger.flush()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    checkpoint()
    elapsed = time.perf_counter() - start
    summary: dict[str, Any] = dict(
        config=asdict(config),
        fowm_config=config_to_dict(cfg),
        updates=agent.num_updates,
        total_updates=total,
        resumed_from=resumed_from,
        interrupted=interrupted[0] if interrupted else None,
        episodes=buffer.num_episodes,
        transitions=buffer.num_transitions,
        bags=len(ingested),
        skipped_bags=errors,
        duplicate_bags=duplicates,
        last_losses=last_logged,
        elapsed_s=elapsed,
        updates_per_s=(agent.num_updates - resumed_from) / elapsed if elapsed > 0 else 0.0,
    )
    if not interrupted:
        summary["weights"] = str(out / WEIGHTS)
        summary["weights_sha256"] = save_weights(out / WEIGHTS, agent)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2))
    return summary


def _drop_metrics_after(jsonl: Path, step: int) -> None:
    """A resumed run re-logs the updates after its checkpoint: drop the old rows past it."""
    if jsonl.exists():
        rows = [r for r in read_jsonl(jsonl) if r["step"] <= step]
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fowm-pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help=f"ROS params file with a '{NODE_NAME}' section")
    for f in fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        doc = f.metadata["doc"]
        if f.name in ("bags", "overrides", "image_crop"):
            kind = int if f.name == "image_crop" else str
            parser.add_argument(flag, nargs="*", type=kind, default=None, help=doc)
        elif f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=doc)
        else:
            kind = {"int": int, "str": str}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, default=None, help=doc)
    parser.add_argument(
        "--set", nargs="*", default=[], help="more preset overrides (appended to --overrides)"
    )
    args = parser.parse_args(argv)
    try:
        values = read_params_file(args.config, NODE_NAME) if args.config else {}
        for f in fields(PretrainConfig):
            given = getattr(args, f.name)
            if given is not None:
                values[f.name] = given
        values["overrides"] = [*values.get("overrides", []), *args.set]
        config = build_config(PretrainConfig, values, "fowm-pretrain")
        summary = run(config)
    except ValueError as exc:
        parser.error(str(exc))
    if summary["interrupted"]:
        print(f"interrupted by {summary['interrupted']} at update {summary['updates']}; checkpoint written")
        return 130
    print(
        f"{summary['updates']} updates on {summary['episodes']} episodes "
        f"({summary['transitions']} transitions) -> {summary['weights']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
