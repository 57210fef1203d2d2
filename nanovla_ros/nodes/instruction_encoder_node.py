"""instruction_encoder_node: serves encode_instruction (EncodeInstruction) with frozen, cached encoders.

Backbones load in the background; until one is ready its requests are answered at once with
success=false and a "still loading" message (cached embeddings are served even while loading).
Backbone states are published on diagnostics at 1 Hz.
"""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from nanovla_ros.language.config import EncoderConfig
from nanovla_ros.language.service import BackboneNotReady, BackboneState, InstructionEncoderService
from nanovla_ros.language.text import InstructionError
from nanovla_ros.nodes.common import (
    BURST_SERVICE_QOS,
    COMMAND_QOS,
    DIAGNOSTICS_TOPIC,
    ENCODE_INSTRUCTION_SERVICE,
    reply_patiently,
    run_node,
)
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.srv import EncodeInstruction

_LEVELS = {
    BackboneState.READY: DiagnosticStatus.OK,
    BackboneState.LOADING: DiagnosticStatus.WARN,
    BackboneState.FAILED: DiagnosticStatus.ERROR,
}


class InstructionEncoderNode(Node):
    def __init__(self, service: InstructionEncoderService | None = None, **kwargs) -> None:
        super().__init__("instruction_encoder", **kwargs)
        self.config = declare_config(self, EncoderConfig)
        self.service = service or InstructionEncoderService(self.config)
        # Reentrant: a small-backbone request is not held up behind a large one being encoded.
        self._srv = reply_patiently(self, self.create_service(
            EncodeInstruction, ENCODE_INSTRUCTION_SERVICE, self._on_encode, qos_profile=BURST_SERVICE_QOS,
            callback_group=ReentrantCallbackGroup()))
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, COMMAND_QOS)
        self._diag_timer = self.create_timer(1.0, self._on_diagnostics_timer)
        self.service.start()
        self.get_logger().info(f"loading backbones {list(self.config.backbones)}; serving {self._srv.srv_name}")

    def _on_encode(self, request: EncodeInstruction.Request, response: EncodeInstruction.Response):
        try:
            result = self.service.encode(request.text, request.backbone)
        except InstructionError as error:
            response.status = EncodeInstruction.Response.STATUS_REJECTED
            response.message = str(error)
            return response
        except BackboneNotReady as error:
            response.status = (EncodeInstruction.Response.STATUS_LOADING if error.state is BackboneState.LOADING
                               else EncodeInstruction.Response.STATUS_UNAVAILABLE)
            response.message = str(error)
            return response
        response.success = True
        response.status = EncodeInstruction.Response.STATUS_OK
        response.message = "cached" if result.cache_hit else "encoded"
        response.embedding = np.asarray(result.embedding, dtype=np.float32)
        response.encoder_id = result.encoder_id
        response.cache_hit = result.cache_hit
        response.latency_ms = float(result.latency_ms)
        return response

    def _on_diagnostics_timer(self) -> None:
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        for backbone in self.config.backbones:
            state = self.service.state(backbone)
            array.status.append(DiagnosticStatus(
                level=_LEVELS.get(state, DiagnosticStatus.STALE),
                name=f"{self.get_name()}: {backbone} backbone",
                hardware_id="cpu",
                message=state.value,
                values=[KeyValue(key="cached_embeddings", value=str(len(self.service.cache)))],
            ))
        self._diag_pub.publish(array)

    def close(self) -> None:
        self.service.close()


def main(args: list[str] | None = None) -> int:
    return run_node(InstructionEncoderNode, args, threads=4)


if __name__ == "__main__":
    raise SystemExit(main())
