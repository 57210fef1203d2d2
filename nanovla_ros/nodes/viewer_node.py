"""viewer_node: the live graph in the viewer (Rerun, served locally; `nanovla view` with no path runs it).

Subscribes to both cameras, joint states and commands, action chunks, the current task, route decisions, the
workcell's episode status and the latched robot description, and logs them (``nanovla_ros.viewer.log``) on the
node's clock, seconds since it started.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from nanovla_ros.camera.image_codec import ImageFields, fields_to_array
from nanovla_ros.msg import ActionChunk, CurrentTask, EpisodeStatus, RouteDecision
from nanovla_ros.nodes.common import (
    ACTION_CHUNK_TOPIC,
    COMMAND_QOS,
    CURRENT_TASK_TOPIC,
    EPISODE_TOPIC,
    IMAGE_TOPIC,
    JOINT_COMMANDS_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    ROBOT_DESCRIPTION_TOPIC,
    ROUTE_DECISION_TOPIC,
    SENSOR_QOS,
    run_node,
)
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.viewer.config import ViewerConfig

WRIST_IMAGE_TOPIC = "wrist_camera/image_raw"


class ViewerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("viewer", **kwargs)
        from nanovla_ros.viewer.server import start_viewer

        self.config = c = declare_config(self, ViewerConfig)
        # the server in a process of its own: this one is busy with the robot's streams (a server inside it fell
        # behind and stopped streaming on a 2-core host running the whole graph)
        self.log, self.endpoints = start_viewer("live", c.web_port, c.grpc_port, c.save or None,
                                                separate_server=True)
        self._start = time.monotonic()
        self._last_frame: dict[str, float] = {}
        self._description_dir = tempfile.TemporaryDirectory(prefix="nanovla_viewer_")
        self.create_subscription(Image, IMAGE_TOPIC, lambda m: self._on_image("front", m), SENSOR_QOS)
        self.create_subscription(Image, WRIST_IMAGE_TOPIC, lambda m: self._on_image("wrist", m), SENSOR_QOS)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_state, SENSOR_QOS)
        self.create_subscription(JointState, JOINT_COMMANDS_TOPIC, self._on_command, COMMAND_QOS)
        self.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, self._on_chunk, COMMAND_QOS)
        self.create_subscription(CurrentTask, CURRENT_TASK_TOPIC, self._on_task, LATCHED_QOS)
        self.create_subscription(RouteDecision, ROUTE_DECISION_TOPIC, self._on_route, COMMAND_QOS)
        self.create_subscription(EpisodeStatus, EPISODE_TOPIC, self._on_episode, LATCHED_QOS)
        self.create_subscription(String, ROBOT_DESCRIPTION_TOPIC, self._on_description, LATCHED_QOS)
        where = f"saving to {c.save}" if c.save else str(self.endpoints)
        self.get_logger().info(f"viewer: {where}")

    def _t(self) -> float:
        return time.monotonic() - self._start

    def _on_image(self, camera: str, msg: Image) -> None:
        now = self._t()
        rate = self.config.max_image_rate_hz
        if rate > 0 and now - self._last_frame.get(camera, -1e9) < 1.0 / rate:
            return
        self._last_frame[camera] = now
        rgb = fields_to_array(ImageFields(msg.height, msg.width, msg.encoding, int(msg.is_bigendian), msg.step,
                                          bytes(msg.data)), "rgb8")
        self.log.frame(now, camera, rgb)

    def _on_state(self, msg: JointState) -> None:
        self.log.joint_state(self._t(), np.asarray(msg.position), tuple(msg.name))

    def _on_command(self, msg: JointState) -> None:
        self.log.joint_command(self._t(), np.asarray(msg.position), tuple(msg.name))

    def _on_chunk(self, msg: ActionChunk) -> None:
        self.log.chunk_message(self._t(), msg)

    def _on_task(self, msg: CurrentTask) -> None:
        self.log.task_message(self._t(), msg)

    def _on_route(self, msg: RouteDecision) -> None:
        self.log.route_message(self._t(), msg)

    def _on_episode(self, msg: EpisodeStatus) -> None:
        self.log.episode_message(self._t(), msg)

    def _on_description(self, msg: String) -> None:
        """The driver's robot_description: the arm drawn from what the graph publishes (file:// meshes)."""
        path = Path(self._description_dir.name) / "robot_description.urdf"
        path.write_text(msg.data)
        self.log.describe_robot(str(path))
        self.log.event(self._t(), "robot_description received: the arm as the driver describes it")

    def destroy_node(self) -> None:
        self.get_logger().info(f"viewer: logged {dict(sorted(self.log.counts.items()))}")
        self.log.recording.flush()
        if self.log.server is not None:
            self.log.server.terminate()
            self.log.server.wait(timeout=10)
        self._description_dir.cleanup()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(ViewerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
