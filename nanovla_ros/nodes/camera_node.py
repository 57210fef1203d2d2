"""camera_node: publishes frames from a V4L2 camera, a video file, an image folder or a test pattern.

Publishes camera/image_raw (sensor_msgs/Image) and camera/camera_info (sensor_msgs/CameraInfo) with
the capture time as stamp. Frames older than max_age_ms when they would be sent are dropped.
"""
from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from nanovla_ros.camera.config import CameraConfig
from nanovla_ros.camera.image_codec import array_to_fields, convert_color
from nanovla_ros.camera.intrinsics import pinhole_k
from nanovla_ros.camera.sources import CameraOpenError, Frame, FramePump, SourceExhausted, open_source
from nanovla_ros.nodes.common import CAMERA_INFO_TOPIC, IMAGE_TOPIC, SENSOR_QOS, run_node, stamp_from_ns
from nanovla_ros.nodes.params import declare_config


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera", **kwargs)
        self.config = declare_config(self, CameraConfig)
        self._image_pub = self.create_publisher(Image, IMAGE_TOPIC, SENSOR_QOS)
        self._info_pub = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, SENSOR_QOS)
        self._info = self._make_camera_info()
        try:
            source = open_source(self.config)
        except CameraOpenError as error:
            self.get_logger().fatal(f"cannot open camera source {self.config.source!r}: {error}")
            raise
        self._pump = FramePump(source, self.config.rate_hz, self.config.max_age_ms,
                               self._on_frame, self._on_source_error)
        self._pump.start()
        self.get_logger().info(
            f"publishing {self.config.width}x{self.config.height} {self.config.encoding} from "
            f"{self.config.source} at {self.config.rate_hz:g} Hz on {self._image_pub.topic_name}")

    def _make_camera_info(self) -> CameraInfo:
        c = self.config
        info = CameraInfo(width=c.width, height=c.height, distortion_model="plumb_bob")
        info.header.frame_id = c.frame_id
        info.k = pinhole_k(c.width, c.height, c.hfov_deg)
        info.d = [0.0] * 5
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [info.k[0], 0.0, info.k[2], 0.0, 0.0, info.k[4], info.k[5], 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _on_frame(self, frame: Frame) -> None:
        fields = array_to_fields(convert_color(frame.rgb, "rgb8", self.config.encoding), self.config.encoding)
        msg = Image(height=fields.height, width=fields.width, encoding=fields.encoding,
                    is_bigendian=fields.is_bigendian, step=fields.step, data=fields.data)
        msg.header.stamp = stamp_from_ns(frame.capture_time_ns)
        msg.header.frame_id = self.config.frame_id
        self._info.header.stamp = msg.header.stamp
        self._image_pub.publish(msg)
        self._info_pub.publish(self._info)

    def _on_source_error(self, error: Exception) -> None:
        if isinstance(error, SourceExhausted):
            self.get_logger().info(f"source finished: {error}; no more frames (set loop:=true to repeat)")
        else:
            self.get_logger().error(f"camera stopped: {error}")

    def close(self) -> None:
        self._pump.stop()
        if self._pump.dropped_stale:
            self.get_logger().warning(f"dropped {self._pump.dropped_stale} stale frame(s) over max_age_ms")


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
