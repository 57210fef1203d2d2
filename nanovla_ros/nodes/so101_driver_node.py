"""so101_driver_node: PLACEHOLDER until issue #3 lands the Feetech bus, calibration and chunk executor.

Declares its parameters and topics (subscribes action_chunk; will publish joint_states,
joint_commands) but has no arm backend yet: it moves nothing and publishes no joint state. It says
so in its log and reports an ERROR status on diagnostics at 1 Hz, so nobody mistakes it for a
working arm.
"""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from nanovla_ros.driver.config import DriverConfig
from nanovla_ros.msg import ActionChunk
from nanovla_ros.nodes.common import ACTION_CHUNK_TOPIC, COMMAND_QOS, DIAGNOSTICS_TOPIC, run_node
from nanovla_ros.nodes.params import declare_config

NOT_IMPLEMENTED = "no arm backend is configured yet (placeholder: the SO-101 driver lands with issue #3); nothing will move"


class So101DriverNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("so101_driver", **kwargs)
        self.config = declare_config(self, DriverConfig)
        self._chunk_sub = self.create_subscription(ActionChunk, ACTION_CHUNK_TOPIC, self._on_chunk, COMMAND_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, COMMAND_QOS)
        self._diag_timer = self.create_timer(1.0, self._on_diagnostics_timer)
        self._ignored_chunks = 0
        self.get_logger().warning(NOT_IMPLEMENTED)

    def _on_chunk(self, msg: ActionChunk) -> None:
        self._ignored_chunks += 1
        if self._ignored_chunks == 1:
            self.get_logger().warning(f"action chunk {msg.chunk_id} ignored: {NOT_IMPLEMENTED}")

    def _on_diagnostics_timer(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status.append(DiagnosticStatus(
            level=DiagnosticStatus.ERROR, name=f"{self.get_name()}: arm", hardware_id="so101",
            message=NOT_IMPLEMENTED,
            values=[KeyValue(key="ignored_chunks", value=str(self._ignored_chunks))]))
        self._diag_pub.publish(array)


def main(args: list[str] | None = None) -> int:
    return run_node(So101DriverNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
