"""Training metrics: TensorBoard scalars plus a JSONL file, and learning-curve plots.

The JSONL file (one {"step": int, "tag": float, ...} object per line) is the durable record:
it needs no TensorBoard to read and `plot_learning_curves` draws PNGs from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Write scalar metrics to `<log_dir>/metrics.jsonl` and, if `tensorboard`, to TensorBoard
    event files in `log_dir`. Use as a context manager or call `close()`."""

    def __init__(self, log_dir: str | Path, tensorboard: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.log_dir / "metrics.jsonl"
        self._jsonl = open(self.jsonl_path, "a", buffering=1)  # line-buffered: survives crashes
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: slow import

            self._tb = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, step: int, metrics: Mapping[str, float], prefix: str = "") -> None:
        """Record `metrics` at `step`; tags become `prefix + name` (e.g. "train/" + "reward_loss")."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        row: dict[str, Any] = {"step": int(step)}
        for name, value in metrics.items():
            value = float(value)
            row[prefix + name] = value if math.isfinite(value) else None  # JSON has no NaN
            if self._tb is not None:
                self._tb.add_scalar(prefix + name, value, int(step))
        self._jsonl.write(json.dumps(row) + "\n")

    def flush(self) -> None:
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self._jsonl.closed:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a metrics.jsonl file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_learning_curves(
    jsonl_path: str | Path, out_png: str | Path, tags: Iterable[str] | None = None, title: str = ""
) -> list[str]:
    """Plot each tag (all tags when None) against step, one subplot per tag, to `out_png`.
    Returns the tags drawn; raises ValueError if none of them has data."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    rows = read_jsonl(jsonl_path)
    series: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        for tag, value in row.items():
            if tag == "step" or value is None or (tags is not None and tag not in tags):
                continue
            xs, ys = series.setdefault(tag, ([], []))
            xs.append(row["step"])
            ys.append(value)
    if not series:
        raise ValueError(f"no data for tags {list(tags) if tags else 'any'} in {jsonl_path}")
    names = sorted(series)
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.2 * nrows), squeeze=False)
    for ax, tag in zip(axes.flat, names):
        ax.plot(*series[tag], linewidth=1.2)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return names
