"""One plan at a time on a worker thread, so that the realtime control timer keeps its period and
the deadline is a real one: the node publishes the plan's command when it is done, or the fallback
when the budget runs out first, while the plan keeps the worker busy.

torch releases the GIL inside its kernels, so the executor thread (timers, subscriptions, the
fallback's ~1 ms policy forward on the fp32 model) runs beside the plan (on the planner's own copy
of the model). Weight swaps wait for the plan in flight (`wait`) so they never land during one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

import numpy as np

Act = Callable[[dict[str, np.ndarray], bool], np.ndarray]


class BackgroundPlanner:
    """Runs act(obs, first_step) on one worker thread; at most one plan in flight."""

    def __init__(self, act: Act) -> None:
        self._act = act
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fowm-plan")
        self._future: Future | None = None

    @property
    def busy(self) -> bool:
        """A plan is running."""
        return self._future is not None and not self._future.done()

    @property
    def finished(self) -> bool:
        """A plan finished and its result has not been taken."""
        return self._future is not None and self._future.done()

    def start(self, obs: dict[str, np.ndarray], first_step: bool, on_done: Callable[[], None]) -> None:
        """Start a plan; `on_done()` is called on the worker thread when it ends (keep it thread-safe,
        e.g. trigger a guard condition). Any result not yet taken is dropped."""
        if self.busy:
            raise RuntimeError("a plan is still running")

        def run() -> tuple[np.ndarray, float]:
            start = time.perf_counter()
            action = np.asarray(self._act(obs, first_step), dtype=np.float64)
            return action, time.perf_counter() - start

        def notify(_: Future) -> None:
            # A plan that ends while the node shuts down finds its ROS handles gone: nothing to tell.
            with contextlib.suppress(RuntimeError):
                on_done()

        self._future = self._pool.submit(run)
        self._future.add_done_callback(notify)

    def take(self) -> tuple[np.ndarray, float] | None:
        """(action, plan seconds) of the finished plan, once; None if none finished since the last
        take. Re-raises what the plan raised."""
        if not self.finished:
            return None
        future, self._future = self._future, None
        return future.result()

    def wait(self) -> None:
        """Block until no plan is running (its result stays to be taken)."""
        if self._future is not None:
            wait_futures([self._future])

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
