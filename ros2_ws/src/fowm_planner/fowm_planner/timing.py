"""Latency statistics and the planning deadline (pure, no ROS)."""

from __future__ import annotations

from collections import deque

import numpy as np


class RollingStats:
    """Percentiles over the last `window` samples (seconds in, milliseconds out)."""

    def __init__(self, window: int = 500) -> None:
        self._samples: deque[float] = deque(maxlen=window)
        self.count = 0  # samples ever added

    def add(self, value_s: float) -> None:
        self._samples.append(float(value_s))
        self.count += 1

    def percentile_ms(self, q: float) -> float:
        """q-th percentile in ms (NaN with no samples)."""
        if not self._samples:
            return float("nan")
        return float(np.percentile(np.fromiter(self._samples, float), q) * 1e3)

    def __len__(self) -> int:
        return len(self._samples)


class PeriodJitter:
    """|actual interval between ticks - period|, from successive tick times."""

    def __init__(self, period_s: float, window: int = 500) -> None:
        self.period_s = period_s
        self.stats = RollingStats(window)
        self._last: float | None = None

    def tick(self, now_s: float) -> None:
        if self._last is not None:
            self.stats.add(abs(now_s - self._last - self.period_s))
        self._last = now_s

    def restart(self) -> None:
        """Forget the last tick (after a pause such as stop/start, which is no jitter)."""
        self._last = None


class DeadlineMonitor:
    """Decides whether a plan fits its budget and counts misses.

    Before a plan: if the recent plans (max of the last `lookback`) took longer than the budget, the
    next would overrun too, so it is skipped and the fallback used (a miss), except every
    `probe_every`-th skipped tick, which plans to re-measure. After a plan: one that took longer than
    the budget is a miss and its action is replaced by the fallback.
    """

    def __init__(self, budget_s: float, lookback: int = 3, probe_every: int = 10) -> None:
        self.budget_s = budget_s
        self.enabled = budget_s > 0
        self._recent: deque[float] = deque(maxlen=lookback)
        self.probe_every = probe_every
        self.misses = 0
        self._skipped_in_row = 0

    def should_plan(self) -> bool:
        if not self.enabled or not self._recent or max(self._recent) <= self.budget_s:
            return True
        if self._skipped_in_row + 1 >= self.probe_every:
            self._skipped_in_row = 0
            return True
        self._skipped_in_row += 1
        self.misses += 1
        return False

    def record(self, latency_s: float) -> bool:
        """Record a finished plan; True if it missed the deadline (counted)."""
        self._recent.append(latency_s)
        if self.enabled and latency_s > self.budget_s:
            self.misses += 1
            return True
        self._skipped_in_row = 0
        return False
