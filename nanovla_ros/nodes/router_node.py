"""router_node: the user's entry point. Serves set_instruction (SetInstruction), picks the backbone,
gets the instruction's embedding from encode_instruction, then publishes route_decision and the latched
current_task. A new instruction preempts the current one.
"""
from __future__ import annotations

import itertools
import threading
import time

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from nanovla_ros.configuration import ConfigError
from nanovla_ros.language.text import InstructionError, validate_instruction
from nanovla_ros.msg import CurrentTask, RouteDecision
from nanovla_ros.nodes.common import (COMMAND_QOS, CURRENT_TASK_TOPIC, ENCODE_INSTRUCTION_SERVICE, LATCHED_QOS,
                                      ROUTE_DECISION_TOPIC, SET_INSTRUCTION_SERVICE, run_node)
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.routing.config import RouterConfig
from nanovla_ros.routing.router import BackboneRouter, RouteError
from nanovla_ros.srv import EncodeInstruction, SetInstruction

_LOADING_RETRY_S = 0.25  # how often to ask again while the encoder reports its backbone loading


class RouterNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("router", **kwargs)
        self.config = declare_config(self, RouterConfig)
        try:
            self.router = BackboneRouter(self.config)
        except (ConfigError, ValueError) as error:  # a missing or foreign router file
            self.get_logger().fatal(f"cannot load the router: {error}")
            raise ConfigError(str(error)) from error
        self._ids = itertools.count(1)
        # One instruction at a time: a new one waits for the previous to be published, then preempts it.
        self._serial = threading.Lock()
        self._task_pub = self.create_publisher(CurrentTask, CURRENT_TASK_TOPIC, LATCHED_QOS)
        self._decision_pub = self.create_publisher(RouteDecision, ROUTE_DECISION_TOPIC, COMMAND_QOS)
        # The service callback blocks on the encoder's reply, so the client's callbacks run in
        # another group (on another executor thread).
        self._encoder = self.create_client(EncodeInstruction, ENCODE_INSTRUCTION_SERVICE,
                                           callback_group=ReentrantCallbackGroup())
        # Reentrant too (publication is serialised by self._serial): a mutually exclusive group would make
        # the executor busy-wait while one request waits on the encoder.
        self._srv = self.create_service(SetInstruction, SET_INSTRUCTION_SERVICE, self._on_set_instruction,
                                        callback_group=ReentrantCallbackGroup())
        mode = (f"NanoVLA-R ({self.config.policy}, tau={self.config.threshold:g}, {self.config.router_weights})"
                if self.router.needs_embedding else f"default backbone {self.config.default_backbone}")
        self.get_logger().info(f"serving {self._srv.srv_name}; auto: {mode}")

    def _reject(self, response: SetInstruction.Response, message: str) -> SetInstruction.Response:
        self.get_logger().warning(f"instruction rejected: {message}")
        response.accepted = False
        response.message = message
        return response

    def _on_set_instruction(self, request: SetInstruction.Request, response: SetInstruction.Response):
        try:
            text = validate_instruction(request.text, self.config.max_instruction_chars)
            requested = (request.backbone or "auto").strip().lower()
            embedding, small = None, None
            if requested == "auto" and self.router.needs_embedding:
                # NanoVLA-R reads the instruction's small-encoder vector (cached after the first time).
                small = self._encode(text, "small")
                if isinstance(small, str):
                    return self._reject(response, small)
                if small.encoder_id != self.router.encoder_id:
                    self.get_logger().warning(f"router file was trained on {self.router.encoder_id!r} vectors, the "
                                              f"encoder serves {small.encoder_id!r}", throttle_duration_sec=60.0)
                embedding = np.asarray(small.embedding, dtype=np.float32)
            choice = self.router.route(text, requested, embedding)
        except (InstructionError, RouteError) as error:
            return self._reject(response, str(error))
        encoded = small if (small is not None and choice.backbone == "small") else self._encode(text, choice.backbone)
        if isinstance(encoded, str):
            return self._reject(response, encoded)
        with self._serial:
            instruction_id = next(self._ids)
            stamp = self.get_clock().now().to_msg()
            decision = RouteDecision(instruction_id=instruction_id, instruction=text, backbone=choice.backbone,
                                     reason=choice.reason, threshold=choice.threshold,
                                     predicted_success_small=choice.predicted_success_small,
                                     predicted_success_large=choice.predicted_success_large)
            decision.header.stamp = stamp
            task = CurrentTask(instruction_id=instruction_id, text=text, backbone=choice.backbone,
                               encoder_id=encoded.encoder_id,
                               embedding=np.asarray(encoded.embedding, dtype=np.float32))
            task.header.stamp = stamp
            self._decision_pub.publish(decision)
            self._task_pub.publish(task)
        self.get_logger().info(f"task {instruction_id}: {text!r} -> {choice.backbone} ({choice.reason}), "
                               f"cache {'hit' if encoded.cache_hit else 'miss'}")
        response.accepted = True
        response.instruction_id = instruction_id
        response.backbone = choice.backbone
        response.cache_hit = encoded.cache_hit
        response.message = f"task {instruction_id} published on {self._task_pub.topic_name}"
        return response

    def _encode(self, text: str, backbone: str) -> EncodeInstruction.Response | str:
        """The encoder's reply, or a message saying why there is none."""
        deadline = time.monotonic() + self.config.encode_timeout_s
        if not self._encoder.wait_for_service(timeout_sec=min(5.0, self.config.encode_timeout_s)):
            return f"encoder service {self._encoder.srv_name} is not available; is instruction_encoder_node running?"
        while True:
            done = threading.Event()
            future = self._encoder.call_async(EncodeInstruction.Request(text=text, backbone=backbone))
            future.add_done_callback(lambda _, event=done: event.set())
            if not done.wait(max(0.0, deadline - time.monotonic())):
                future.cancel()
                return f"encoder did not answer within encode_timeout_s={self.config.encode_timeout_s:g}"
            reply = future.result()
            if reply.status != EncodeInstruction.Response.STATUS_LOADING:
                break
            # A user who instructs the arm right after launch waits for the backbone instead of
            # being told to retry; the encoder itself never blocks (it answers "loading").
            if time.monotonic() + _LOADING_RETRY_S > deadline:
                return f"encoder: {reply.message} (waited encode_timeout_s={self.config.encode_timeout_s:g})"
            time.sleep(_LOADING_RETRY_S)
        if not reply.success:
            return f"encoder: {reply.message}"
        return reply


def main(args: list[str] | None = None) -> int:
    return run_node(RouterNode, args, threads=3)


if __name__ == "__main__":
    raise SystemExit(main())
