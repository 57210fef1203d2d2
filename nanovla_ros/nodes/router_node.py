"""router_node: the user's entry point. Serves set_instruction (SetInstruction), picks the backbone,
gets the instruction's embedding from encode_instruction, then publishes route_decision and the latched
current_task. A new instruction preempts the current one.

Requests are served by coroutines on one thread: while a request waits for the encoder it yields, so no
executor thread is ever blocked waiting on a callback of its own executor (with blocking callbacks, three
concurrent calls took every thread and the encoder's replies had none left to be delivered on). At most
``max_pending_instructions`` are in progress; beyond that a request is answered at once with "busy".
"""
from __future__ import annotations

import itertools
import time

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future

from nanovla_ros.configuration import ConfigError
from nanovla_ros.graph import SHIPPED_SCOPE
from nanovla_ros.language.scope import ScopeModel
from nanovla_ros.language.text import InstructionError, validate_instruction
from nanovla_ros.msg import CurrentTask, RouteDecision
from nanovla_ros.nodes.common import (
    BURST_SERVICE_QOS,
    COMMAND_QOS,
    CURRENT_TASK_TOPIC,
    ENCODE_INSTRUCTION_SERVICE,
    LATCHED_QOS,
    ROUTE_DECISION_TOPIC,
    SET_INSTRUCTION_SERVICE,
    reply_patiently,
    run_node,
)
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.routing.config import RouterConfig
from nanovla_ros.routing.router import BackboneRouter, RouteError
from nanovla_ros.srv import EncodeInstruction, SetInstruction

_LOADING_RETRY_S = 0.25  # how often to ask again while the encoder reports its backbone loading
# A request unanswered this long is sent again (within encode_timeout_s): a restarted encoder may not yet be
# matched when the request goes out, and DDS does not keep it for a server that joins later.
_ATTEMPT_S = 5.0


class RouterNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("router", **kwargs)
        self.config = declare_config(self, RouterConfig)
        try:
            self.router = BackboneRouter(self.config)
        except (ConfigError, ValueError) as error:  # a missing or foreign router file
            self.get_logger().fatal(f"cannot load the router: {error}")
            raise ConfigError(str(error)) from error
        self.scope = None
        if self.config.scope_check:
            try:
                self.scope = ScopeModel.load(self.config.scope_file or SHIPPED_SCOPE)
            except ConfigError as error:
                self.get_logger().fatal(f"cannot load the scope file: {error}")
                raise
        self._ids = itertools.count(1)
        self._pending = 0  # requests in progress (all on the executor's one thread: no lock needed)
        self._task_pub = self.create_publisher(CurrentTask, CURRENT_TASK_TOPIC, LATCHED_QOS)
        self._decision_pub = self.create_publisher(RouteDecision, ROUTE_DECISION_TOPIC, COMMAND_QOS)
        # Reentrant: rclpy holds a callback's group while its coroutine is suspended, so a mutually exclusive
        # group would keep the encoder's reply (and every other request) waiting behind the first request.
        self._group = ReentrantCallbackGroup()
        self._encoder = self.create_client(EncodeInstruction, ENCODE_INSTRUCTION_SERVICE,
                                           qos_profile=BURST_SERVICE_QOS, callback_group=self._group)
        self._encoder_seen = False  # the encoder service was matched once (a later absence is a restart)
        self._seen_timer = self.create_timer(0.5, self._watch_encoder)
        self._srv = reply_patiently(self, self.create_service(
            SetInstruction, SET_INSTRUCTION_SERVICE, self._on_set_instruction, qos_profile=BURST_SERVICE_QOS,
            callback_group=self._group))
        mode = (f"NanoVLA-R ({self.config.policy}, tau={self.config.threshold:g}, {self.config.router_weights})"
                if self.router.needs_embedding else f"default backbone {self.config.default_backbone}")
        self.get_logger().info(f"serving {self._srv.srv_name}; auto: {mode}")

    def _reject(self, response: SetInstruction.Response, message: str) -> SetInstruction.Response:
        self.get_logger().warning(f"instruction rejected: {message}")
        response.accepted = False
        response.message = message
        return response

    async def _on_set_instruction(self, request: SetInstruction.Request, response: SetInstruction.Response):
        limit = self.config.max_pending_instructions
        if self._pending >= limit:
            return self._reject(response, f"busy: {self._pending} instructions are being processed "
                                          f"(max_pending_instructions={limit}); try again in a moment")
        self._pending += 1
        try:
            return await self._handle(request, response)
        finally:
            self._pending -= 1

    async def _handle(self, request: SetInstruction.Request, response: SetInstruction.Response):
        try:
            text = validate_instruction(request.text, self.config.max_instruction_chars, request.text_bytes)
            requested = (request.backbone or "auto").strip().lower()
            embedding, small = None, None
            if requested == "auto" and self.router.needs_embedding:
                # NanoVLA-R reads the instruction's small-encoder vector (cached after the first time).
                small = await self._encode(text, "small")
                if isinstance(small, str):
                    return self._reject(response, small)
                if small.encoder_id != self.router.encoder_id:
                    self.get_logger().warning(f"router file was trained on {self.router.encoder_id!r} vectors, the "
                                              f"encoder serves {small.encoder_id!r}", throttle_duration_sec=60.0)
                embedding = np.asarray(small.embedding, dtype=np.float32)
            choice = self.router.route(text, requested, embedding)
        except (InstructionError, RouteError) as error:
            return self._reject(response, str(error))
        encoded = small if (small is not None and choice.backbone == "small") else await self._encode(text, choice.backbone)
        if isinstance(encoded, str):
            return self._reject(response, encoded)
        if self.scope is not None:
            small = small or (encoded if choice.backbone == "small" else await self._encode(text, "small"))
            if isinstance(small, str):
                return self._reject(response, small)
            if small.encoder_id != self.scope.encoder_id:
                return self._reject(response, f"the scope file was made with {self.scope.encoder_id!r} vectors, the "
                                              f"encoder serves {small.encoder_id!r}: run `nanovla fit-scope`, or set "
                                              "scope_check false")
            decision = self.scope.check(text, np.asarray(small.embedding, np.float32))
            if not decision.in_scope:
                return self._reject(response, f"out of scope: {decision.reason}")
        # Published in one step of the executor's one thread: ids and publications stay in order.
        instruction_id = next(self._ids)
        stamp = self.get_clock().now().to_msg()
        decision = RouteDecision(instruction_id=instruction_id, instruction=text, backbone=choice.backbone,
                                 reason=choice.reason, threshold=choice.threshold,
                                 predicted_success_small=choice.predicted_success_small,
                                 predicted_success_large=choice.predicted_success_large)
        decision.header.stamp = stamp
        task = CurrentTask(instruction_id=instruction_id, text=text, backbone=choice.backbone,
                           encoder_id=encoded.encoder_id, embedding=np.asarray(encoded.embedding, dtype=np.float32))
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

    async def _wait(self, future: Future, timeout_s: float) -> bool:
        """Wait for ``future`` at most ``timeout_s`` without blocking the executor; False on timeout."""
        if future.done():
            return True
        woken = Future()

        def wake(outcome: bool) -> None:
            if not woken.done():
                woken.set_result(outcome)

        future.add_done_callback(lambda _: wake(True))
        timer = self.create_timer(max(timeout_s, 1e-3), lambda: wake(False), callback_group=self._group)
        try:
            return await woken
        finally:
            self.destroy_timer(timer)

    def _watch_encoder(self) -> None:
        if self._encoder.service_is_ready():
            self._encoder_seen = True
            self._seen_timer.cancel()

    async def _encode(self, text: str, backbone: str) -> EncodeInstruction.Response | str:
        """The encoder's reply, or a message saying why there is none."""
        timeout_s = self.config.encode_timeout_s
        deadline = time.monotonic() + timeout_s
        # An encoder never seen is most likely not launched: say so after 5 s. One that answered before and is gone
        # is most likely being respawned (or its host is busy): wait for it as for a loading one.
        discovery_deadline = time.monotonic() + (timeout_s if self._encoder_seen else min(5.0, timeout_s))
        if not self._encoder.service_is_ready() and self._encoder_seen:
            self.get_logger().warning(f"encoder service {self._encoder.srv_name} is gone; waiting up to "
                                      f"encode_timeout_s={timeout_s:g} for it to come back")
        while not self._encoder.service_is_ready():
            if time.monotonic() > discovery_deadline:
                if self._encoder_seen:
                    return (f"encoder service {self._encoder.srv_name} went away and did not come back within "
                            f"encode_timeout_s={timeout_s:g}")
                return (f"encoder service {self._encoder.srv_name} is not available; "
                        "is instruction_encoder_node running?")
            await self._wait(Future(), 0.05)  # a yielding sleep: discovery takes up to a second or two
        self._encoder_seen = True
        while True:
            future = self._encoder.call_async(EncodeInstruction.Request(text=text, backbone=backbone))
            if not await self._wait(future, max(0.0, min(_ATTEMPT_S, deadline - time.monotonic()))):
                self._encoder.remove_pending_request(future)
                if time.monotonic() >= deadline:
                    return f"encoder did not answer within encode_timeout_s={timeout_s:g}"
                self.get_logger().warning(f"no reply from {self._encoder.srv_name} within {_ATTEMPT_S:g} s for "
                                          f"{text!r}; asking again")
                continue  # lost on the way (an encoder that restarted): ask again
            reply = future.result()
            if reply.status != EncodeInstruction.Response.STATUS_LOADING:
                break
            # A user who instructs the arm right after launch waits for the backbone instead of
            # being told to retry; the encoder itself never blocks (it answers "loading").
            if time.monotonic() + _LOADING_RETRY_S > deadline:
                return f"encoder: {reply.message} (waited encode_timeout_s={timeout_s:g})"
            await self._wait(Future(), _LOADING_RETRY_S)
        if not reply.success:
            return f"encoder: {reply.message}"
        return reply


def main(args: list[str] | None = None) -> int:
    return run_node(RouterNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
