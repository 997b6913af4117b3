"""What every fowm-ros node shares: typed parameters (a dataclass whose field docs become the ROS
parameter descriptions, declared and read in one call) and the one `main()` body (init, spin on a
single-threaded executor, since this rclpy's multi-threaded executor collapses under load, and a
clean shutdown on Ctrl-C or SIGTERM).

rclpy is imported inside the functions, so importing this module (and a node's config) needs no ROS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, fields
from typing import Any


def param(default: Any, doc: str) -> Any:
    """A config dataclass field whose doc becomes the ROS parameter description (scalars; lists use
    field(default_factory=..., metadata={"doc": ...}))."""
    return field(default=default, metadata={"doc": doc})


def declare_config(node: Any, cls: type) -> Any:
    """Declare every field of the config dataclass `cls` as a parameter of `node` (its doc as the
    description, its default as the value) and build `cls` from the values the node was given.

    A list field with an empty default is declared with its array type, since an empty value says
    nothing about it; left unset it keeps the default. Validation is the dataclass's own."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    array_type = {
        "list[str]": Parameter.Type.STRING_ARRAY,
        "list[int]": Parameter.Type.INTEGER_ARRAY,
        "list[float]": Parameter.Type.DOUBLE_ARRAY,
    }
    base = cls()
    values = {}
    for f in fields(cls):
        descriptor = ParameterDescriptor(description=f.metadata["doc"])
        default = getattr(base, f.name)
        if str(f.type) in array_type and not default:
            node.declare_parameter(f.name, array_type[str(f.type)], descriptor)
            try:
                values[f.name] = list(node.get_parameter(f.name).value)
            except ParameterUninitializedException:
                values[f.name] = list(default)
        else:
            value = node.declare_parameter(f.name, default, descriptor).value
            values[f.name] = list(value) if isinstance(default, list) else value
    return cls(**values)


EVENT_ACK_TIMEOUT_S = 1.0


def publish_episode_event(node: Any, publisher: Any, event: Any) -> bool:
    """Publish an EpisodeEvent on the latched /fowm/episode publisher and wait (up to
    EVENT_ACK_TIMEOUT_S) until every matched reader has it. The topic keeps only the last event for
    late joiners (depth 1), so an "end" followed at once by the next "start" could otherwise be
    replaced in the writer's history before a busy reader (the recorder, the planner) received it,
    and that episode would be lost. Returns False, with a warning, if a reader did not acknowledge."""
    from rclpy.duration import Duration

    from fowm_xarm import topics

    publisher.publish(topics.episode_event_msg(event))
    node.get_logger().info(f"episode event {event.to_json()}")
    acked = publisher.wait_for_all_acked(Duration(seconds=EVENT_ACK_TIMEOUT_S))
    if not acked:
        node.get_logger().warning(
            f"episode event {event.event} {event.episode}: not every subscriber acknowledged it within "
            f"{EVENT_ACK_TIMEOUT_S} s (a reader that died or stalls may miss it)"
        )
    return acked


def spin_node(
    make_node: Callable[[], Any], args: list[str] | None = None, cleanup: Callable[[Any], None] | None = None
) -> None:
    """Create the node with `make_node()` after rclpy.init(args), spin it until shutdown, then run
    `cleanup(node)` (e.g. close a device, write a checkpoint) and destroy it."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if cleanup is not None:
                cleanup(node)
            node.destroy_node()
        rclpy.try_shutdown()
