"""One decision of the planner: observation -> action (plan, or the deadline fallback) -> safe command.

Pure logic around the agent and fowm_xarm's ActionMapper (no ROS), so the node, the tests and the
benchmarks take exactly the same decisions. Whatever the agent returns (NaN included), the command
passes fowm_xarm's safety layer: it satisfies the limits or holds the measured position.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fowm_planner.inputs import Observed
from fowm_planner.timing import DeadlineMonitor
from fowm_xarm.command import ActionMapper, JointCommand

PLAN, POLICY, HOLD = "plan", "policy", "hold"


@dataclass(frozen=True)
class Decision:
    command: JointCommand  # what goes to the arm and gripper
    action: np.ndarray | None  # (4,) the executed policy action; None when holding by choice
    source: str  # "plan", "policy" (deadline fallback) or "hold"
    plan_latency_s: float | None  # seconds the plan took (None: no plan this tick)
    deadline_missed: bool


class DecisionMaker:
    """Plans with `act`, falls back on a deadline miss, and maps through the safety layer."""

    def __init__(
        self,
        agent,
        mapper: ActionMapper,
        deadline: DeadlineMonitor,
        fallback: str = POLICY,
        act: Callable[[dict[str, np.ndarray], bool], np.ndarray] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """act(obs, first_step) -> (4,) action; default: agent.act without exploration."""
        self.agent = agent
        self.mapper = mapper
        self.deadline = deadline
        self.fallback = fallback
        self._act = act or (lambda obs, first: agent.act(obs, first_step=first, explore=False))
        self._clock = clock

    def act(self, obs: dict[str, np.ndarray], first_step: bool) -> np.ndarray:
        """The plan alone (what a background planner runs): (4,) action."""
        return np.asarray(self._act(obs, first_step), dtype=np.float64)

    def decide(self, observed: Observed, first_step: bool) -> Decision:
        """Plan (unless the deadline monitor predicts an overrun), fall back on a miss, map."""
        if not self.deadline.should_plan():
            return self.fallback_decision(observed)
        start = self._clock()
        action = self.act(observed.obs, first_step)
        latency = self._clock() - start
        if self.deadline.record(latency):
            return self.fallback_decision(observed, latency)
        return self.plan_decision(observed, action, latency)

    def plan_decision(self, observed: Observed, action: np.ndarray, latency_s: float | None) -> Decision:
        """A plan's action through the safety layer."""
        return self._map(observed, np.asarray(action, dtype=np.float64), PLAN, latency_s, False)

    def fallback_decision(self, observed: Observed, latency_s: float | None = None) -> Decision:
        """The deadline fallback: the policy network's action (through the safety layer) or a hold."""
        if self.fallback == HOLD:
            cmd = self.mapper.hold(observed.q, observed.gripper, "deadline missed: holding")
            return Decision(cmd, None, HOLD, latency_s, True)
        action = np.asarray(self.agent.act_prior(observed.obs), dtype=np.float64)
        return self._map(observed, action, POLICY, latency_s, True)

    def _map(self, observed: Observed, action: np.ndarray, source: str, latency, missed: bool) -> Decision:
        command = self.mapper.command(action, observed.q, observed.gripper)
        if command.held:  # the safety layer refused the action (NaN, outside the workspace, ...)
            return Decision(command, None, HOLD, latency, missed)
        return Decision(command, action.astype(np.float32), source, latency, missed)

    def hold(self, q: np.ndarray, gripper: float, reason: str) -> Decision:
        return Decision(self.mapper.hold(q, gripper, reason), None, HOLD, None, False)
