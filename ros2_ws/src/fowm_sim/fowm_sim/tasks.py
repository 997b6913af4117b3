"""The reach, push and lift tasks: how an episode starts, its reward and its success test.

Rewards follow FOWM's xArm tasks:
- reach: r = -||tcp - goal||; success when the TCP is within 5 cm of the goal.
- push:  r = -(||cube - goal||_xy + c ||a_xyz||^2); success when the cube centre is within 5 cm
         of the goal (in the table plane). a_xyz is the commanded TCP displacement in action units.
         FOWM's c is 0.15; ours is SimConfig.push_action_penalty, 0.02 by default: on our layouts
         and 0.16 s decisions, at c = 0.15 standing still has a higher discounted return (gamma 0.9)
         than the scripted expert's perfect push, so an agent that optimises the reward should not push
         (docs/experiments.md, "Why push did not succeed").
- lift:  r = -||tcp - cube|| + 2 min(h / 0.15, 1), h = cube height gained over its start;
         success when the cube is 15 cm above where it started.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUCCESS_RADIUS_M = 0.05
LIFT_HEIGHT_M = 0.15
FOWM_PUSH_ACTION_PENALTY = 0.15  # FOWM's xArm push (simxarm): c in the push reward above
PUSH_ACTION_PENALTY = 0.02  # ours (SimConfig.push_action_penalty's default)

# Where objects may start (robot base frame, m): in front of the robot, inside the workspace.
_OBJECT_X = (0.35, 0.52)
_OBJECT_Y = (-0.15, 0.15)
_TABLE_GOAL_X = (0.30, 0.58)
_TABLE_GOAL_Y = (-0.22, 0.22)


@dataclass(frozen=True)
class TaskLayout:
    """Where an episode places things (base frame, metres)."""

    cube_xy: np.ndarray  # (2,)
    goal: np.ndarray  # (3,) goal marker position


@dataclass(frozen=True)
class TaskState:
    """What rewards and success tests look at after a decision."""

    tcp: np.ndarray  # (3,)
    gripper: float  # opening in [0, 1]
    cube: np.ndarray  # (3,) cube centre
    cube_start: np.ndarray  # (3,)
    goal: np.ndarray  # (3,)


class Task:
    """Base class: subclasses define sample, reward and success."""

    name: str = ""
    show_goal: bool = True  # whether the goal marker is drawn (lift's goal is implicit)

    def sample(self, rng: np.random.Generator, cube_half: float) -> TaskLayout:
        raise NotImplementedError

    def reward(self, s: TaskState, action_xyz: np.ndarray) -> float:
        raise NotImplementedError

    def success(self, s: TaskState) -> bool:
        raise NotImplementedError


def _on_table(xy: np.ndarray) -> bool:
    """True if a table point (2,) lies in the region where push goals may be placed."""
    return _TABLE_GOAL_X[0] <= xy[0] <= _TABLE_GOAL_X[1] and _TABLE_GOAL_Y[0] <= xy[1] <= _TABLE_GOAL_Y[1]


def _cube_xy(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(*_OBJECT_X), rng.uniform(*_OBJECT_Y)])


class ReachTask(Task):
    """Move the TCP to a goal point in the air; the cube is a distractor on the table."""

    name = "reach"

    def sample(self, rng: np.random.Generator, cube_half: float) -> TaskLayout:
        start = np.array([0.4, 0.0, 0.25])
        while True:  # goals at least 10 cm from the start pose, so no episode is trivially solved
            goal = np.array([rng.uniform(0.30, 0.55), rng.uniform(-0.20, 0.20), rng.uniform(0.06, 0.30)])
            if np.linalg.norm(goal - start) > 0.10:
                break
        return TaskLayout(cube_xy=_cube_xy(rng), goal=goal)

    def reward(self, s: TaskState, action_xyz: np.ndarray) -> float:
        return -float(np.linalg.norm(s.tcp - s.goal))

    def success(self, s: TaskState) -> bool:
        return bool(np.linalg.norm(s.tcp - s.goal) < SUCCESS_RADIUS_M)


class PushTask(Task):
    """Push the cube across the table onto a goal disc 10-18 cm away."""

    name = "push"

    def __init__(self, action_penalty: float = PUSH_ACTION_PENALTY) -> None:
        if not (np.isfinite(action_penalty) and action_penalty >= 0):
            raise ValueError(f"push action_penalty must be a finite number >= 0, got {action_penalty!r}")
        self.action_penalty = float(action_penalty)

    def sample(self, rng: np.random.Generator, cube_half: float) -> TaskLayout:
        while True:
            cube = _cube_xy(rng)
            angle, dist = rng.uniform(-np.pi, np.pi), rng.uniform(0.10, 0.18)
            goal = cube + dist * np.array([np.cos(angle), np.sin(angle)])
            # The pusher stands 6 cm behind the cube: keep that point reachable too.
            behind = cube - 0.06 * (goal - cube) / dist
            if _on_table(goal) and _on_table(behind):
                return TaskLayout(cube_xy=cube, goal=np.array([goal[0], goal[1], 0.001]))

    def reward(self, s: TaskState, action_xyz: np.ndarray) -> float:
        dist = float(np.linalg.norm(s.cube[:2] - s.goal[:2]))
        return -(dist + self.action_penalty * float(np.sum(np.square(action_xyz))))

    def success(self, s: TaskState) -> bool:
        return bool(np.linalg.norm(s.cube[:2] - s.goal[:2]) < SUCCESS_RADIUS_M)


class LiftTask(Task):
    """Grasp the cube and lift it 15 cm; the goal marker shows the target height."""

    name = "lift"
    show_goal = False

    def sample(self, rng: np.random.Generator, cube_half: float) -> TaskLayout:
        cube = _cube_xy(rng)
        return TaskLayout(cube_xy=cube, goal=np.array([cube[0], cube[1], cube_half + LIFT_HEIGHT_M]))

    def reward(self, s: TaskState, action_xyz: np.ndarray) -> float:
        height = max(float(s.cube[2] - s.cube_start[2]), 0.0)
        return -float(np.linalg.norm(s.tcp - s.cube)) + 2.0 * min(height / LIFT_HEIGHT_M, 1.0)

    def success(self, s: TaskState) -> bool:
        return bool(s.cube[2] - s.cube_start[2] >= LIFT_HEIGHT_M)


TASK_REGISTRY: dict[str, type[Task]] = {"reach": ReachTask, "push": PushTask, "lift": LiftTask}


def make_task(name: str, push_action_penalty: float = PUSH_ACTION_PENALTY) -> Task:
    """Instantiate a task by name, or raise ValueError listing the known ones. push_action_penalty is
    push's c (the other tasks have no action term)."""
    if name not in TASK_REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASK_REGISTRY)}")
    if name == "push":
        return PushTask(push_action_penalty)
    return TASK_REGISTRY[name]()
