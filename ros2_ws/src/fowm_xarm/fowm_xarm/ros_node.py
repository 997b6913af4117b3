"""The one `main()` body of every fowm-ros node: init, spin on a single-threaded executor (this
rclpy's multi-threaded executor collapses under load), and a clean shutdown on Ctrl-C or SIGTERM.

rclpy is imported inside the function, so importing this module needs no ROS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
