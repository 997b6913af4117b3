"""Live source of episodes: subscriptions on any node feeding the one EpisodeAssembler.

The trainer node uses it to learn from a robot on another machine, or from `ros2 bag play` of any
contract bag, exactly as ingestion learns from bag files: same assembler, same pairing rules. Log
times are the middleware's receive times (system clock), as the recorder writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rclpy.node import Node

from fowm_core.buffer import Episode
from fowm_trainer.assembler import AssemblyError, EpisodeAssembler
from fowm_trainer.recorder_node import message_class, received_ns, subscription_qos
from fowm_xarm import topics

TICK_S = 0.1  # how often the lag of an ended episode is checked when no message arrives


class LiveEpisodeFeed:
    """Subscribes `node` to the assembler's topics and calls `on_episode(episode)` for each finished
    episode, `on_error(message)` for each one that cannot be used."""

    def __init__(
        self,
        node: Node,
        assembler: EpisodeAssembler,
        on_episode: Callable[[Episode], None],
        on_error: Callable[[str], None],
    ) -> None:
        self.node, self.assembler = node, assembler
        self.on_episode, self.on_error = on_episode, on_error
        cfg = assembler.config
        specs = {  # episode events first: ready callbacks run in creation order
            cfg.episode_topic: topics.EPISODE,
            cfg.image_topic: topics.IMAGE,
            cfg.joint_states_topic: topics.JOINT_STATES,
            cfg.action_topic: topics.ACTION,
            cfg.reward_topic: topics.REWARD,
        }
        self._subs = [
            node.create_subscription(
                message_class(spec),
                name,
                lambda msg, info, topic=name: self._feed(topic, msg, received_ns(info)),
                subscription_qos(spec),
            )
            for name, spec in specs.items()
        ]
        self._timer = node.create_timer(TICK_S, self._tick)

    def _deliver(self, call: Callable[[], list[Episode]]) -> None:
        try:
            episodes = call()
        except AssemblyError as exc:
            self.on_error(str(exc))
            return
        for episode in episodes:
            self.on_episode(episode)

    def _feed(self, topic: str, msg: Any, now: int) -> None:
        self._deliver(lambda: self.assembler.feed(topic, now, msg))

    def _tick(self) -> None:
        now = time.time_ns()  # the receive times' clock
        self._deliver(lambda: self.assembler.tick(now))

    def destroy(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self.node.destroy_timer(self._timer)
