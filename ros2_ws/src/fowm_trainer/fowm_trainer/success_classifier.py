"""An image success classifier, FOWM's sparse reward on the real xArm, trained from labelled bags.

Labels come from the operator (or the sim's success test) per episode, so frames are labelled by
where they sit in their episode: the last `positive_frames` frames of a successful episode are
positives (the task is done there); every frame of a failed episode is a negative, and so are the
frames of a successful episode before its last `positive_frames + ambiguous_frames` (the band in
between is dropped: success may have happened anywhere in it). Frames are the model's own rgb
observations (`fowm_trainer.ingest` -> `make_observation`), so the classifier sees on the robot
exactly what it was trained on.

Accuracy is measured on held-out *episodes* (split per label, so both classes are held out): frames
of one episode are too alike for a frame-level split to mean anything.

    fowm-train-success-classifier --bags data/push_teleop --output success.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fowm_core.buffer import Episode
from fowm_xarm.observation import ObservationConfig

FORMAT = "fowm-success-classifier-1"


@dataclass(frozen=True)
class SuccessClassifierConfig:
    """How frames are labelled and the classifier trained."""

    positive_frames: int = 5
    """Frames at the end of a successful episode labelled success."""
    ambiguous_frames: int = 5
    """Frames before those that are dropped (neither label is safe there)."""
    channels: int = 16
    """Width of the convolutional stack."""
    epochs: int = 30
    """Passes over the training frames."""
    batch_size: int = 64
    """Frames per gradient step (classes balanced within each batch)."""
    lr: float = 1e-3
    """Adam learning rate."""
    holdout_fraction: float = 0.25
    """Fraction of the successful and of the failed episodes held out for the accuracy."""
    threshold: float = 0.5
    """Probability above which a frame counts as success."""
    seed: int = 0
    """Split, initialisation and batch order."""

    def __post_init__(self) -> None:
        for name in ("positive_frames", "channels", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SuccessClassifierConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.ambiguous_frames < 0:
            raise ValueError(f"ambiguous_frames must be >= 0, got {self.ambiguous_frames}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if not 0.0 < self.threshold < 1.0 or not self.lr > 0:
            raise ValueError(f"threshold must be in (0, 1) and lr > 0, got {self.threshold}, {self.lr}")


class SuccessClassifier(nn.Module):
    """(B, 3, S, S) uint8 frames -> (B,) success logits. Three strided convs, average pooling to a
    4x4 grid (keeps where things are, e.g. the object relative to the goal; any frame size works),
    one linear layer: small enough to train on a CPU in seconds."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 5, stride=2), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(2 * c * 16, 1),
        )  # fmt: skip

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.float() / 255.0 - 0.5).squeeze(-1)

    @torch.no_grad()
    def probability(self, frames: np.ndarray) -> np.ndarray:
        """(B,) success probabilities of (B, 3, S, S) uint8 frames (or one (3, S, S) frame -> (1,))."""
        x = torch.as_tensor(np.asarray(frames, dtype=np.uint8))
        if x.ndim == 3:
            x = x[None]
        return torch.sigmoid(self(x)).numpy()


@dataclass
class LabelledFrames:
    frames: np.ndarray  # (N, 3, S, S) uint8
    labels: np.ndarray  # (N,) float32, 1 = success
    episode: np.ndarray  # (N,) int64 index of the episode each frame came from


def labelled_frames(episodes: Sequence[Episode], config: SuccessClassifierConfig) -> LabelledFrames:
    """Frames and labels of episodes whose info["success"] is the operator's label."""
    frames, labels, ids = [], [], []
    for i, ep in enumerate(episodes):
        if "success" not in ep.info:
            raise ValueError(f"episode {i} ({ep.info.get('bag', '?')}) has no success label")
        rgb = ep.obs["rgb"]  # (T+1, 3, S, S)
        n = len(rgb)
        if ep.info["success"]:
            pos = rgb[max(0, n - config.positive_frames) :]
            neg = rgb[: max(0, n - config.positive_frames - config.ambiguous_frames)]
        else:
            pos, neg = rgb[:0], rgb
        for block, label in ((pos, 1.0), (neg, 0.0)):
            frames.append(block)
            labels.append(np.full(len(block), label, np.float32))
            ids.append(np.full(len(block), i, np.int64))
    return LabelledFrames(np.concatenate(frames), np.concatenate(labels), np.concatenate(ids))


def split_episodes(success: Sequence[bool], config: SuccessClassifierConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) episode indices: holdout_fraction of each label (at least one of each)."""
    rng = np.random.default_rng(config.seed)
    success = np.asarray(success, dtype=bool)
    train, held = [], []
    for group in (np.flatnonzero(success), np.flatnonzero(~success)):
        if len(group) < 2:
            raise ValueError(
                f"need >= 2 successful and >= 2 failed episodes to hold some out, got "
                f"{int(success.sum())} successful and {int((~success).sum())} failed"
            )
        group = rng.permutation(group)
        k = max(1, round(config.holdout_fraction * len(group)))
        held += group[:k].tolist()
        train += group[k:].tolist()
    return np.sort(train), np.sort(held)


def _accuracy(model: SuccessClassifier, data: LabelledFrames, mask: np.ndarray, threshold: float) -> dict:
    p = np.concatenate([model.probability(data.frames[mask][i : i + 256]) for i in range(0, mask.sum(), 256)])
    y = data.labels[mask] > 0.5
    pred = p >= threshold
    tpr = float(np.mean(pred[y])) if y.any() else float("nan")
    tnr = float(np.mean(~pred[~y])) if (~y).any() else float("nan")
    return {
        "frames": int(mask.sum()),
        "positives": int(y.sum()),
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": (tpr + tnr) / 2.0,
        "true_positive_rate": tpr,
        "true_negative_rate": tnr,
    }


def train_success_classifier(
    episodes: Sequence[Episode], config: SuccessClassifierConfig | None = None
) -> tuple[SuccessClassifier, dict]:
    """Train on the training episodes' frames; returns the model and a report with the held-out
    (and training) accuracy."""
    cfg = config or SuccessClassifierConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = labelled_frames(episodes, cfg)
    train_eps, held_eps = split_episodes([bool(e.info["success"]) for e in episodes], cfg)
    train = np.isin(data.episode, train_eps)
    held = np.isin(data.episode, held_eps)
    pos, neg = np.flatnonzero(train & (data.labels > 0.5)), np.flatnonzero(train & (data.labels < 0.5))
    model = SuccessClassifier(cfg.channels)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = max(1, (len(pos) + len(neg)) // cfg.batch_size) * cfg.epochs
    half = cfg.batch_size // 2
    for _ in range(steps):
        # Balanced batches: successes are a few frames per episode, failures many.
        idx = np.concatenate([rng.choice(pos, half), rng.choice(neg, cfg.batch_size - half)])
        x = torch.as_tensor(_random_shift(data.frames[idx], rng))
        y = torch.as_tensor(data.labels[idx])
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    report = {
        "episodes": {"train": len(train_eps), "held_out": len(held_eps)},
        "train": _accuracy(model, data, train, cfg.threshold),
        "held_out": _accuracy(model, data, held, cfg.threshold),
        "final_loss": float(loss.item()),
    }
    return model, report


def _random_shift(frames: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random translations by up to `pad` pixels (edge padding), as the world model's augmentation."""
    n, _, h, w = frames.shape
    padded = np.pad(frames, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    dx, dy = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    return np.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def save_classifier(
    path: str | Path, model: SuccessClassifier, config: SuccessClassifierConfig, obs: ObservationConfig
) -> None:
    """safetensors with the config and the observation config (crop, size) the frames were made with."""
    meta = {
        "format": FORMAT,
        "config": json.dumps(asdict(config)),
        "observation": json.dumps({"image_size": obs.image_size, "crop": obs.crop}),
    }
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=meta)


def load_classifier(path: str | Path) -> tuple[SuccessClassifier, SuccessClassifierConfig, ObservationConfig]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a success classifier ({FORMAT}); its format is {meta.get('format')!r}"
        )
    config = SuccessClassifierConfig(**json.loads(meta["config"]))
    obs = json.loads(meta["observation"])
    model = SuccessClassifier(config.channels)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    crop = tuple(obs["crop"]) if obs["crop"] is not None else None
    return model, config, ObservationConfig(image_size=obs["image_size"], crop=crop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fowm-train-success-classifier", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--bags", nargs="+", required=True, type=Path, help="directories of labelled episode bags"
    )
    parser.add_argument("--output", required=True, type=Path, help="classifier file to write (.safetensors)")
    d = SuccessClassifierConfig()
    parser.add_argument("--positive-frames", type=int, default=d.positive_frames)
    parser.add_argument("--ambiguous-frames", type=int, default=d.ambiguous_frames)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--holdout-fraction", type=float, default=d.holdout_fraction)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    from fowm_trainer.ingest import BagIngestor

    try:
        config = SuccessClassifierConfig(
            positive_frames=a.positive_frames,
            ambiguous_frames=a.ambiguous_frames,
            epochs=a.epochs,
            holdout_fraction=a.holdout_fraction,
            seed=a.seed,
        )
        ingestor = BagIngestor()
        scan = ingestor.scan(a.bags)
        for bag, error in scan.errors.items():
            print(f"skipped {bag}: {error}", file=sys.stderr)
        model, report = train_success_classifier(scan.episodes, config)
    except ValueError as exc:
        parser.error(str(exc))
    save_classifier(a.output, model, config, ingestor.obs_config)
    report["output"] = str(a.output)
    print(json.dumps(report, indent=2))
    held = report["held_out"]
    print(
        f"held-out accuracy {held['accuracy']:.3f} (balanced {held['balanced_accuracy']:.3f}) on "
        f"{held['frames']} frames of {report['episodes']['held_out']} episodes",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
