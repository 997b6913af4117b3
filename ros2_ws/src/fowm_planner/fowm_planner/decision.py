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
from fowm_planner.model import policy_action
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

    def decide(self, observed: Observed, first_step: bool) -> Decision:
        latency, missed = None, False
        if self.deadline.should_plan():
            start = self._clock()
            action = np.asarray(self._act(observed.obs, first_step), dtype=np.float64)
            latency = self._clock() - start
            missed = self.deadline.record(latency)
        else:
            missed = True
        if missed:
            if self.fallback == HOLD:
                cmd = self.mapper.hold(observed.q, observed.gripper, "deadline missed: holding")
                return Decision(cmd, None, HOLD, latency, True)
            action = np.asarray(policy_action(self.agent, observed.obs), dtype=np.float64)
        command = self.mapper.command(action, observed.q, observed.gripper)
        if command.held:  # the safety layer refused the action (NaN, outside the workspace, ...)
            return Decision(command, None, HOLD, latency, missed)
        return Decision(command, action.astype(np.float32), POLICY if missed else PLAN, latency, missed)

    def hold(self, q: np.ndarray, gripper: float, reason: str) -> Decision:
        return Decision(self.mapper.hold(q, gripper, reason), None, HOLD, None, False)
