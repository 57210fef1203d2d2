"""policy_node: NanoVLA inference. Subscribes camera/image_raw (latest only; also wrist_camera/image_raw when a
checkpoint reads the wrist camera), joint_states (latest) and
the latched current_task; loads the NanoVLA-S and -L checkpoints named by parameters and uses the one
the router chose; every execute_steps control steps (or at replan_rate_hz) it runs one inference in its
own thread and publishes an ActionChunk stamped with the observation's time. Observations older
than max_obs_age_ms are never used; without a task or a checkpoint it publishes nothing and says why once.
Once a second it publishes diagnostics ("policy: inference", OK once the checkpoints are loaded and warmed up,
i.e. from construction on): the h in use, the measured chunk delay, chunks published and why the last was not.

Inference runs in a plain thread of its own, not in an executor callback, and the node spins on rclpy's
EventsExecutor where it exists (Jazzy and later; else the single-threaded one): with the multi-threaded
executor it needed for a callback-group split, the node spent 42 % of a core with no task at all (17 % on the
single-threaded one, 6 % on the events one) waking for the ~160 images and joint states a second it keeps the
latest of, and its main thread held the GIL 42 % of the time, measured through the workcell graph on 2 cores.
"""
from __future__ import annotations

import functools
import itertools
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy._rclpy_pybind11 import InvalidHandle
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from nanovla_ros.camera.image_codec import ImageEncodingError, ImageFields, fields_to_array
from nanovla_ros.configuration import ConfigError
from nanovla_ros.msg import ActionChunk, CurrentTask
from nanovla_ros.nodes.common import (
    ACTION_CHUNK_TOPIC,
    BURST_SERVICE_QOS,
    COMMAND_QOS,
    CURRENT_TASK_TOPIC,
    DIAGNOSTICS_TOPIC,
    ENCODE_INSTRUCTION_SERVICE,
    IMAGE_TOPIC,
    JOINT_STATES_TOPIC,
    LATCHED_QOS,
    SENSOR_QOS,
    ns_from_stamp,
    run_node,
    stamp_from_ns,
)
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.policy.config import PolicyNodeConfig
from nanovla_ros.policy.runner import ChunkResult, Observation, PolicyRunner, Skip, Task, camera_topic
from nanovla_ros.srv import EncodeInstruction

CANDIDATE_RETRY_S = 2.0  # how long to wait before asking the encoder again for the grounding candidates' vectors


class PolicyNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("policy", **kwargs)
        self._stop = threading.Event()  # set by close(): no more replanning, the node goes down
        self.config = declare_config(self, PolicyNodeConfig)
        try:
            self.runner = PolicyRunner(self.config)
        except ConfigError as error:  # a missing, foreign or mismatched checkpoint
            self.get_logger().fatal(f"cannot load the policy: {error}")
            raise
        self._lock = threading.Lock()
        self._image: Image | None = None
        self._other_images: dict[str, Image] = {}  # camera -> latest image (cameras besides the front one)
        self._state: JointState | None = None
        self._task: Task | None = None
        self._last_skip = ""
        self._chunk_ids = itertools.count(1)
        self._chunk_pub = self.create_publisher(ActionChunk, ACTION_CHUNK_TOPIC, COMMAND_QOS)
        self._chunks_published = 0
        self._diag_pub = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, COMMAND_QOS)
        # Subscriptions only store the latest message (the executor's thread); inference has a thread of its own.
        self.create_subscription(Image, IMAGE_TOPIC, self._on_image, SENSOR_QOS)
        for camera in self.runner.other_cameras:
            self.create_subscription(Image, camera_topic(camera), functools.partial(self._on_other_image, camera),
                                     SENSOR_QOS)
        self.create_subscription(JointState, JOINT_STATES_TOPIC, self._on_joint_state, SENSOR_QOS)
        self.create_subscription(CurrentTask, CURRENT_TASK_TOPIC, self._on_task, LATCHED_QOS)
        self._diag_timer = self.create_timer(1.0, self._on_diagnostics_timer)
        # Grounding (ground_instructions): the candidate instructions' vectors come from the instruction encoder,
        # asked from the inference thread until every backbone that grounds has them.
        self._encoder = (self.create_client(EncodeInstruction, ENCODE_INSTRUCTION_SERVICE, qos_profile=BURST_SERVICE_QOS)
                         if self.runner.wants_candidates() else None)
        self._candidate_requests: dict[str, tuple[float, dict]] = {}  # backbone -> (asked at, {text: future})
        self._grounding_failed: set[str] = set()
        self._grounded_id = None  # the instruction id whose grounding was last logged
        self._period_s = self.runner.period_s
        self._inference = threading.Thread(target=self._inference_loop, name="policy_inference", daemon=True)
        self._inference.start()
        loaded = sorted(self.runner.policies) or ["none"]
        self.get_logger().info(f"checkpoints loaded: {loaded}; replanning every {self.runner.period_s * 1e3:.0f} ms, "
                               f"h={self.runner.execute_steps}, device {self.config.device}, backend "
                               f"{self.config.resolved_backend} ({self.config.resolved_precision})")

    def _on_image(self, msg: Image) -> None:
        with self._lock:
            self._image = msg

    def _on_other_image(self, camera: str, msg: Image) -> None:
        with self._lock:
            self._other_images[camera] = msg

    def _on_joint_state(self, msg: JointState) -> None:
        with self._lock:
            self._state = msg

    def _on_task(self, msg: CurrentTask) -> None:
        with self._lock:
            self._task = Task(msg.instruction_id, msg.backbone, msg.encoder_id, np.asarray(msg.embedding, np.float32),
                              msg.text)

    def _observation(self, image: Image | None, state: JointState | None,
                     others: dict[str, Image]) -> Observation | Skip | None:
        if image is None or state is None:
            return None
        frames = {}
        for camera, msg in (("front", image), *others.items()):
            try:
                frames[camera] = fields_to_array(ImageFields(msg.height, msg.width, msg.encoding, msg.is_bigendian,
                                                             msg.step, bytes(msg.data)), "rgb8")
            except ImageEncodingError as error:
                return Skip(f"{camera} camera image unusable: {error}")
        other_images = {c: (frames[c], ns_from_stamp(m.header.stamp)) for c, m in others.items()}
        return Observation(frames["front"], ns_from_stamp(image.header.stamp), np.asarray(state.position, np.float64),
                           ns_from_stamp(state.header.stamp), tuple(state.name), other_images)

    def _inference_loop(self) -> None:
        """Replan every period_s (the runner's: h control steps, fewer on a slow host); when an inference
        outlasts the period, the next starts at once."""
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                self._replan()
            except Exception:
                if self._stop.is_set():  # the node went down during this inference (shutdown)
                    break
                raise
            next_tick += self._period_s
            delay = next_tick - time.monotonic()
            if delay < 0:
                next_tick = time.monotonic()
            elif self._stop.wait(delay):
                break

    def _fetch_candidates(self) -> None:
        """Ask the encoder for the grounding candidates' vectors (once per backbone; again while it is loading);
        hand them to the runner when all have come."""
        from nanovla_ros.model.grounding import candidate_instructions

        for backbone in self.runner.wants_candidates():
            if backbone in self._grounding_failed:
                continue
            asked = self._candidate_requests.get(backbone)
            if asked is None:
                if self._encoder.service_is_ready():
                    self._candidate_requests[backbone] = (time.monotonic(), {
                        text: self._encoder.call_async(EncodeInstruction.Request(text=text, backbone=backbone))
                        for text in candidate_instructions()})
                continue
            started, futures = asked
            if not all(f.done() for f in futures.values()):
                if time.monotonic() - started > 30.0:  # lost replies: ask again
                    for future in futures.values():
                        self._encoder.remove_pending_request(future)
                    del self._candidate_requests[backbone]
                continue
            replies = {text: f.result() for text, f in futures.items()}
            failed = [r for r in replies.values() if not r.success]
            if failed:
                if failed[0].status == EncodeInstruction.Response.STATUS_LOADING:
                    if time.monotonic() - started > CANDIDATE_RETRY_S:
                        del self._candidate_requests[backbone]  # still loading: ask again
                    continue
                self._grounding_failed.add(backbone)
                self.get_logger().error(f"grounding of {backbone} instructions off: the encoder said "
                                        f"{failed[0].message!r}")
                continue
            try:
                self.runner.set_candidates(backbone, {t: np.asarray(r.embedding, np.float32) for t, r in replies.items()},
                                           next(iter(replies.values())).encoder_id)
                self.get_logger().info(f"grounding {backbone} instructions among {len(replies)} candidate tasks")
            except ConfigError as error:
                self._grounding_failed.add(backbone)
                self.get_logger().error(f"grounding of {backbone} instructions off: {error}")

    def _replan(self) -> None:
        if self._encoder is not None and self.runner.wants_candidates():
            self._fetch_candidates()
        with self._lock:
            image, state, task, others = self._image, self._state, self._task, dict(self._other_images)
        observation = self._observation(image, state, others)
        now_s = self.get_clock().now().nanoseconds / 1e9
        result = observation if isinstance(observation, Skip) else self.runner.step(observation, task, now_s)
        if isinstance(result, Skip):
            if result.reason != self._last_skip:
                self.get_logger().warning(f"no action chunk: {result.reason}")
                self._last_skip = result.reason
            return
        self._last_skip = ""
        if result.instruction_id != self._grounded_id and result.grounded_as is not None:
            self._grounded_id = result.instruction_id
            self.get_logger().info(f"task {result.instruction_id}: {task.text!r} acted on as {result.grounded_as!r}")
        try:
            self._chunk_pub.publish(self._to_message(result))
            self._chunks_published += 1
            self._follow_the_delay()
        except InvalidHandle:
            # The node was destroyed (shutdown) while this inference ran: the chunk has nowhere to go, and
            # nothing should move on it anyway.
            if not self._stop.is_set():
                raise

    def _on_diagnostics_timer(self) -> None:
        """Ready (OK) with a checkpoint loaded, an error without one; the chunk timing the node runs with."""
        loaded = sorted(self.runner.policies)
        status = DiagnosticStatus(
            level=DiagnosticStatus.OK if loaded else DiagnosticStatus.ERROR, name=f"{self.get_name()}: inference",
            hardware_id=self.config.device, message="ready" if loaded else "no checkpoint loaded",
            values=[KeyValue(key=k, value=str(v)) for k, v in (
                ("checkpoints", ",".join(loaded)), ("execute_steps", self.runner.execute_steps),
                ("effective_steps", self.runner.effective_steps), ("delay_steps", self.runner.delay_steps),
                ("chunks_published", self._chunks_published), ("last_skip", self._last_skip))])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        try:
            self._diag_pub.publish(array)
        except InvalidHandle:
            if not self._stop.is_set():
                raise

    def _follow_the_delay(self) -> None:
        """Replan sooner where chunks arrive too late to run h actions (runner.effective_steps), later again
        where they no longer do."""
        period_s = self.runner.period_s
        if period_s == self._period_s:
            return
        self.get_logger().info(f"chunks are ready {self.runner.delay_steps} control steps after their image: "
                               f"h={self.runner.effective_steps} (of {self.runner.execute_steps}), replanning every "
                               f"{period_s * 1e3:.0f} ms")
        self._period_s = period_s

    def close(self) -> None:
        """Stop replanning; waits a little for an inference in progress (the thread is a daemon: a longer one,
        e.g. a first compile, does not hold the process up, and its chunk is never published)."""
        self._stop.set()
        if self._inference.is_alive() and self._inference is not threading.current_thread():
            self._inference.join(timeout=2.0)

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()

    def _to_message(self, result: ChunkResult) -> ActionChunk:
        horizon, joints = result.positions.shape
        msg = ActionChunk(chunk_id=next(self._chunk_ids), instruction_id=result.instruction_id,
                          backbone=result.backbone, dt_s=1.0 / self.config.control_rate_hz,
                          execute_steps=self.runner.effective_steps, joint_names=list(result.joint_names),
                          horizon=horizon, positions=result.positions.astype(np.float64).ravel().tolist(),
                          inference_latency_ms=float(result.latency_ms))
        msg.header.stamp = stamp_from_ns(result.stamp_ns)
        msg.header.frame_id = "so101_base"
        return msg


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args, events=True)  # inference runs in the node's own thread


if __name__ == "__main__":
    raise SystemExit(main())
