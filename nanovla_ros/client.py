"""A small rclpy client of the suite's services and latched topics, with its own context.

Used by the CLI (`nanovla instruct`, `encode`, `task`), the demo and the end-to-end tests: what a ROS
user does with `ros2 service call` and `ros2 topic echo`.
"""
from __future__ import annotations

import threading
import time

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from nanovla_ros.msg import CurrentTask
from nanovla_ros.nodes.common import (
    COMMAND_QOS,
    CURRENT_TASK_TOPIC,
    DIAGNOSTICS_TOPIC,
    ENCODE_INSTRUCTION_SERVICE,
    LATCHED_QOS,
    SET_INSTRUCTION_SERVICE,
)
from nanovla_ros.srv import EncodeInstruction, ResetEpisode, SetInstruction, StartRecording, StopRecording


class ServiceUnavailable(RuntimeError):
    """The service did not appear or did not answer in time."""


class NanovlaClient:
    def __init__(self, namespace: str = "", node_name: str = "nanovla_cli") -> None:
        self._context = Context()
        rclpy.init(args=[], context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(node_name, namespace="/" + namespace.strip("/"), context=self._context,
                                      start_parameter_services=False)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._latest_task: CurrentTask | None = None
        self._task_event = threading.Event()
        # One client per service, kept for the session: a service can only answer a client whose reply reader
        # it has discovered (Fast DDS waits 100 ms for it, then drops the reply), so a client made just before
        # each call risks a lost answer on a loaded host; a kept one is discovered once.
        self._clients: dict[str, object] = {}
        self.node.create_subscription(CurrentTask, CURRENT_TASK_TOPIC, self._on_task, LATCHED_QOS)

    def __enter__(self) -> NanovlaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        self._context.try_shutdown()

    def _on_task(self, msg: CurrentTask) -> None:
        self._latest_task = msg
        self._task_event.set()

    def spin_until(self, condition, timeout_s: float) -> bool:
        """Spin this client's node until ``condition()`` holds or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._executor.spin_once(timeout_sec=min(0.05, remaining))
        return True

    def wait_until_ready(self, timeout_s: float,
                         nodes: tuple[str, ...] = ("policy", "instruction_encoder")) -> list[str]:
        """Spin until each of ``nodes`` reports diagnostics and all of their statuses are OK (the policy: its
        checkpoints loaded and warmed up; the instruction encoder: every backbone loaded), as a user waits for
        the graph to come up before the first instruction. Returns what was not ready in time (empty: all)."""
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

        ok: dict[str, bool] = {}  # status name ("policy: inference") -> its level is OK

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.partition(":")[0] in nodes:
                    ok[status.name] = status.level == DiagnosticStatus.OK

        def missing() -> list[str]:
            return sorted([n for n in nodes if not any(k.partition(":")[0] == n for k in ok)] +
                          [k for k, good in ok.items() if not good])

        subscription = self.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diagnostics, COMMAND_QOS)
        try:
            self.spin_until(lambda: not missing(), timeout_s)
            return missing()
        finally:
            self.node.destroy_subscription(subscription)

    def _call(self, service_type, name: str, request, timeout_s: float):
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.node.create_client(service_type, name)
        deadline = time.monotonic() + timeout_s
        if not self.spin_until(client.service_is_ready, timeout_s):
            raise ServiceUnavailable(f"service {client.srv_name} is not available after {timeout_s:g} s; "
                                     "is the suite running (nanovla launch so101)?")
        future = client.call_async(request)
        if not self.spin_until(future.done, max(0.0, deadline - time.monotonic())):
            client.remove_pending_request(future)
            raise ServiceUnavailable(f"service {client.srv_name} did not answer within {timeout_s:g} s")
        return future.result()

    def set_instruction(self, text: str, backbone: str = "auto", timeout_s: float = 30.0) -> SetInstruction.Response:
        request = SetInstruction.Request(text=text, backbone=backbone, text_bytes=len(text.encode("utf-8", "replace")))
        return self._call(SetInstruction, SET_INSTRUCTION_SERVICE, request, timeout_s)

    def encode(self, text: str, backbone: str = "small", timeout_s: float = 30.0) -> EncodeInstruction.Response:
        return self._call(EncodeInstruction, ENCODE_INSTRUCTION_SERVICE,
                          EncodeInstruction.Request(text=text, backbone=backbone), timeout_s)

    def reset_episode(self, seed: int, task: str = "", split: str = "", timeout_s: float = 30.0) -> ResetEpisode.Response:
        """Simulated workcell only: lay out a new episode."""
        return self._call(ResetEpisode, "workcell/reset", ResetEpisode.Request(seed=seed, task=task, split=split),
                          timeout_s)

    def start_recording(self, name: str, metadata: dict[str, str], timeout_s: float = 10.0) -> StartRecording.Response:
        return self._call(StartRecording, "recorder/start", StartRecording.Request(
            name=name, keys=list(metadata), values=[str(v) for v in metadata.values()]), timeout_s)

    def stop_recording(self, task_success: bool, metadata: dict[str, str] | None = None,
                       timeout_s: float = 30.0) -> StopRecording.Response:
        metadata = metadata or {}
        return self._call(StopRecording, "recorder/stop", StopRecording.Request(
            task_success=task_success, keys=list(metadata), values=[str(v) for v in metadata.values()]), timeout_s)

    def discard_recording(self, timeout_s: float = 10.0):
        from std_srvs.srv import Trigger

        return self._call(Trigger, "recorder/discard", Trigger.Request(), timeout_s)

    def wait_for_task(self, timeout_s: float, instruction_id: int | None = None) -> CurrentTask | None:
        """The latched current task (or the one with ``instruction_id``), None on timeout."""
        def arrived() -> bool:
            task = self._latest_task
            return task is not None and (instruction_id is None or task.instruction_id == instruction_id)

        return self._latest_task if self.spin_until(arrived, timeout_s) else None
