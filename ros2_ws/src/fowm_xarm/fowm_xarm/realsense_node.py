"""The RealSense node: the colour stream of a D400 camera (pyrealsense2) as Image + CameraInfo.

Publishes `topics.IMAGE` (rgb8, `width` x `height` at `fps`, default 640x480 at 30 Hz, like the sim
node) and `topics.CAMERA_INFO` with the device's factory intrinsics, both stamped with the ROS time
at which the frame arrived. The planner crops and shrinks the frame through the shared
`ObservationConfig` (set its `crop` to the region of interest of this camera's placement).

Without a device (or when the stream cannot start) the node logs a clear error and exits with
EXIT_NO_DEVICE, without a traceback. Frame -> message conversion (`frame_messages`,
`intrinsics_dict`) needs no device and is tested with synthetic frames.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from fowm_xarm import topics
from fowm_xarm.ros_node import declare_config, param

NODE_NAME = "realsense"
EXIT_NO_DEVICE = 2  # distinct from a crash (1): launch files and the runner report it as such



@dataclass
class RealSenseConfig:
    """Parameters of the RealSense node; each field is declared as a ROS parameter with its doc."""

    width: int = param(640, "colour stream width (px)")
    height: int = param(480, "colour stream height (px)")
    fps: int = param(30, "colour stream frame rate (Hz)")
    serial: str = param("", "serial number of the camera to open; empty = the first one found")
    frame_id: str = param("camera_color_optical_frame", "frame_id of the image and camera info")
    frame_timeout_ms: int = param(5000, "longest wait for a frame before the stream counts as lost (ms)")

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"width and height must be > 0, got {self.width}x{self.height}")
        if not 1 <= self.fps <= 90:
            raise ValueError(f"fps must be in [1, 90] (the D400 colour modes), got {self.fps}")
        if self.frame_timeout_ms < 100:
            raise ValueError(f"frame_timeout_ms must be >= 100, got {self.frame_timeout_ms}")


class NoDeviceError(RuntimeError):
    """No RealSense camera can deliver the configured colour stream."""


def intrinsics_dict(intrinsics: Any) -> dict[str, float]:
    """dict(width, height, fx, fy, cx, cy) of a pyrealsense2.intrinsics (or anything with its fields)."""
    return {
        "width": int(intrinsics.width),
        "height": int(intrinsics.height),
        "fx": float(intrinsics.fx),
        "fy": float(intrinsics.fy),
        "cx": float(intrinsics.ppx),
        "cy": float(intrinsics.ppy),
    }


def frame_messages(
    stamp_ns: int, rgb_hwc: np.ndarray, intrinsics: dict[str, float], frame_id: str
) -> tuple[bytes, bytes]:
    """(Image rgb8, CameraInfo) CDR bytes of one colour frame (H, W, 3) uint8 and its intrinsics.

    ValueError if the frame's size disagrees with the intrinsics (a stream/profile mix-up)."""
    frame = np.asarray(rgb_hwc)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"colour frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    if (frame.shape[1], frame.shape[0]) != (intrinsics["width"], intrinsics["height"]):
        raise ValueError(
            f"frame is {frame.shape[1]}x{frame.shape[0]} but the intrinsics are for "
            f"{intrinsics['width']}x{intrinsics['height']}"
        )
    return (
        topics.image_msg(stamp_ns, frame, frame_id),
        topics.camera_info_msg(stamp_ns, intrinsics, frame_id),
    )


def open_colour_stream(config: RealSenseConfig) -> tuple[Any, dict[str, float], list[float]]:
    """Start the colour stream: (pipeline, intrinsics dict, distortion coefficients).
    Raises NoDeviceError naming the cause when no camera can deliver it."""
    import pyrealsense2 as rs

    devices = rs.context().query_devices()
    serials = [d.get_info(rs.camera_info.serial_number) for d in devices]
    if not serials:
        raise NoDeviceError(
            "no RealSense device found (is the camera plugged into a USB 3 port, and are the librealsense "
            "udev rules installed?)"
        )
    if config.serial and config.serial not in serials:
        raise NoDeviceError(f"no RealSense device with serial {config.serial!r} (found {serials})")
    rs_config = rs.config()
    if config.serial:
        rs_config.enable_device(config.serial)
    rs_config.enable_stream(rs.stream.color, config.width, config.height, rs.format.rgb8, config.fps)
    pipeline = rs.pipeline()
    try:
        profile = pipeline.start(rs_config)
    except RuntimeError as exc:
        raise NoDeviceError(
            f"cannot start the colour stream {config.width}x{config.height} rgb8 at {config.fps} Hz: {exc}"
        ) from exc
    stream = profile.get_stream(rs.stream.color).as_video_stream_profile()
    intr = stream.get_intrinsics()
    return pipeline, intrinsics_dict(intr), list(intr.coeffs)


class RealSenseNode(Node):
    """Colour frames of a RealSense camera as Image + CameraInfo; see the module docstring."""

    def __init__(self, **overrides: Any) -> None:
        super().__init__(NODE_NAME, **overrides)
        self.config = declare_config(self, RealSenseConfig)
        self._image_pub = self.create_publisher(Image, topics.IMAGE.name, topics.rclpy_qos(topics.IMAGE.qos))
        self._info_pub = self.create_publisher(
            CameraInfo, topics.CAMERA_INFO.name, topics.rclpy_qos(topics.CAMERA_INFO.qos)
        )
        self._pipeline, self._intrinsics, coeffs = open_colour_stream(self.config)  # NoDeviceError
        if any(abs(c) > 1e-9 for c in coeffs):
            # The D400 colour stream is normally rectified (all-zero coefficients); say so if not.
            self.get_logger().warning(f"camera reports distortion {coeffs}; CameraInfo carries none")
        self._running = True
        self.failure: str = ""  # set by the capture thread when the stream is lost
        self._thread = threading.Thread(target=self._capture, name="realsense_capture", daemon=True)
        self._thread.start()
        c = self.config
        self.get_logger().info(
            f"RealSense colour {c.width}x{c.height} rgb8 at {c.fps} Hz, intrinsics {self._intrinsics}"
        )

    def _capture(self) -> None:
        # wait_for_frames blocks, so frames are read on their own thread; rclpy publishers are thread-safe.
        while self._running:
            try:
                frames = self._pipeline.wait_for_frames(self.config.frame_timeout_ms)
            except RuntimeError as exc:
                if self._running:
                    self.failure = f"colour stream lost: {exc}"
                    self.get_logger().error(self.failure)
                    self._running = False
                return
            colour = frames.get_color_frame()
            if not colour:
                continue
            stamp = self.get_clock().now().nanoseconds
            image, info = frame_messages(
                stamp, np.asanyarray(colour.get_data()), self._intrinsics, self.config.frame_id
            )
            self._image_pub.publish(image)
            self._info_pub.publish(info)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=self.config.frame_timeout_ms / 1000.0 + 1.0)
        self._pipeline.stop()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    exit_code = 0
    try:
        node = RealSenseNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not node.failure:
            executor.spin_once(timeout_sec=0.5)
        if node.failure:
            exit_code = 1
    except NoDeviceError as exc:
        rclpy.logging.get_logger(NODE_NAME).error(str(exc))
        exit_code = EXIT_NO_DEVICE
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
