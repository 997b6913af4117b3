"""The input watchdog: decides, each tick, whether the inputs are fit to act on.

Stale inputs (older than `stale_after_s` by the node's clock, or never received) and inputs the
observation path rejects (NaN/Inf, wrong size, encoding or joint names) trip it; the node then holds
the last measured position and says why. It clears on its own when fresh valid data arrives.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WatchdogState:
    """The watchdog's verdict for one tick."""

    ok: bool
    reason: str  # "ok" or why the node holds


OK = WatchdogState(True, "ok")


class InputWatchdog:
    """Pure logic, no ROS: `check` per tick, `should_log` to throttle repeated log lines."""

    def __init__(self, stale_after_s: float, log_throttle_s: float = 2.0) -> None:
        if not stale_after_s > 0:
            raise ValueError(f"stale_after_s must be > 0, got {stale_after_s}")
        self.stale_after_ns = round(stale_after_s * 1e9)
        self.log_throttle_ns = round(log_throttle_s * 1e9)
        self.state = OK
        self.trips = 0  # transitions from ok to holding
        self._last_log_ns: int | None = None

    def check(
        self,
        now_ns: int,
        stamps_ns: dict[str, int | None],
        error: str | None = None,
    ) -> WatchdogState:
        """stamps_ns: input name -> header stamp of its latest message (None: none yet).
        error: why the latest messages could not be turned into an observation, if they could not."""
        reason = None
        for name, stamp in stamps_ns.items():
            if stamp is None:
                reason = f"no {name} received yet"
                break
            age = now_ns - stamp
            if age > self.stale_after_ns:
                reason = f"{name} is stale ({age / 1e9:.2f} s old, limit {self.stale_after_ns / 1e9:.2f} s)"
                break
        if reason is None and error is not None:
            reason = error
        state = OK if reason is None else WatchdogState(False, reason)
        if self.state.ok and not state.ok:
            self.trips += 1
        changed = state != self.state
        self.state = state
        if changed:
            self._last_log_ns = None  # a new verdict is always logged
        return state

    def should_log(self, now_ns: int) -> bool:
        """True for the first tick of a verdict and then at most once per throttle interval."""
        if self._last_log_ns is None or now_ns - self._last_log_ns >= self.log_throttle_ns:
            self._last_log_ns = now_ns
            return True
        return False
