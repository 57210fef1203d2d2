"""recorder: episodes as rosbag2 bags (MCAP). Services ~/start, ~/stop (with the task's success flag) and
~/discard. Messages are written as they arrive, still serialised (no decode/encode on the hot path);
latched topics (the current task) get their last value written at the start of every episode. A failing
disk ends the episode with a clear error; the node, and the rest of the graph, keep running. What is written
is flushed to disk every second, and at start-up the recorder finishes the bags of a recorder that was
killed (recording.bags.repair_bag), so a kill loses at most the last second of an episode."""
from __future__ import annotations

import importlib
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_srvs.srv import Trigger

from nanovla_ros.nodes.common import LATCHED_QOS, reply_patiently, run_node
from nanovla_ros.nodes.params import declare_config
from nanovla_ros.recording.bags import RECORDED_TOPICS, BagError, EpisodeBagWriter, repair_bag, unfinished_bags
from nanovla_ros.recording.config import RecorderConfig
from nanovla_ros.srv import StartRecording, StopRecording

LATCHED_TOPICS = {"current_task", "workcell/episode"}
# Best effort subscribers match both best-effort (sensor) and reliable publishers.
RECORD_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)


def _message_class(msgtype: str):
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class RecorderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("recorder", **kwargs)
        self.config = declare_config(self, RecorderConfig)
        self._bag: EpisodeBagWriter | None = None
        self._started = 0.0
        self._latched: dict[str, tuple[int, bytes]] = {}
        self._topics = {t: self.resolve_topic_name(t) for t in self.config.topics}  # relative -> full name
        for topic in self.config.topics:
            qos = LATCHED_QOS if topic in LATCHED_TOPICS else RECORD_QOS
            self.create_subscription(_message_class(RECORDED_TOPICS[topic]), topic,
                                     lambda data, t=topic: self._on_message(t, data), qos, raw=True)
        reply_patiently(self, self.create_service(StartRecording, "~/start", self._on_start))
        reply_patiently(self, self.create_service(StopRecording, "~/stop", self._on_stop))
        reply_patiently(self, self.create_service(Trigger, "~/discard", self._on_discard))
        self.create_timer(1.0, self._on_timer)
        self._repair_unfinished()
        self.get_logger().info(f"recording {len(self._topics)} topics into {self.config.output_dir}/<episode> "
                               f"on ~/start")

    # --- messages
    def _on_message(self, topic: str, data: bytes) -> None:
        now = time.time_ns()
        if topic in LATCHED_TOPICS:
            self._latched[topic] = (now, data)
        if self._bag is None:
            return
        try:
            self._bag.write(self._topics[topic], now, data)
        except BagError as error:
            self._fail(str(error))

    def _fail(self, reason: str) -> None:
        self.get_logger().error(f"recording stopped: {reason}; the episode is kept as far as it was written")
        bag, self._bag = self._bag, None
        if bag is not None:
            try:
                bag.close({"task_success": "unknown", "recording_error": reason})
            except BagError as error:
                self.get_logger().error(str(error))

    # --- services
    def _metadata(self, keys, values) -> dict[str, str]:
        if len(keys) != len(values):
            raise BagError(f"{len(keys)} metadata keys but {len(values)} values")
        return dict(zip(keys, values, strict=True))

    def _on_start(self, request: StartRecording.Request, response: StartRecording.Response):
        if self._bag is not None:
            response.success, response.message = False, f"already recording {str(self._bag.path)!r}: stop or discard it first"
            return response
        name = request.name or time.strftime("episode_%Y%m%d_%H%M%S")
        if "/" in name or name in (".", ".."):
            response.success, response.message = False, f"bag name {name!r} must be a plain folder name"
            return response
        try:
            metadata = {"robot": self.config.robot, **self._metadata(request.keys, request.values)}
            if self.config.calibration_file:
                metadata["calibration"] = Path(self.config.calibration_file).read_text()
            path = Path(self.config.output_dir).expanduser() / name
            self._bag = EpisodeBagWriter(path, {self._topics[t]: RECORDED_TOPICS[t] for t in self._topics}, metadata)
            now = time.time_ns()  # latched values (the current task) open the bag, as of its start
            for topic, (_, data) in self._latched.items():
                self._bag.write(self._topics[topic], now, data)
        except (BagError, OSError) as error:
            self._bag = None
            response.success, response.message = False, f"cannot start recording: {error}"
            self.get_logger().error(response.message)
            return response
        self._started = time.monotonic()
        response.success, response.path, response.message = True, str(path), "recording"
        self.get_logger().info(f"recording episode into {str(path)!r}")
        return response

    def _on_stop(self, request: StopRecording.Request, response: StopRecording.Response):
        if self._bag is None:
            response.success, response.message = False, "not recording"
            return response
        bag, self._bag = self._bag, None
        try:
            extra = self._metadata(request.keys, request.values)
            extra["task_success"] = str(bool(request.task_success)).lower()
            extra["duration_s"] = f"{time.monotonic() - self._started:.3f}"
            bag.close(extra)
        except BagError as error:
            response.success, response.message = False, str(error)
            self.get_logger().error(response.message)
            return response
        response.success, response.path, response.messages = True, str(bag.path), bag.messages
        response.message = f"saved {bag.messages} messages"
        self.get_logger().info(f"episode saved: {str(bag.path)!r} ({bag.messages} messages, "
                               f"task_success={extra['task_success']})")
        return response

    def _on_discard(self, request: Trigger.Request, response: Trigger.Response):
        if self._bag is None:
            response.success, response.message = False, "not recording"
            return response
        bag, self._bag = self._bag, None
        bag.discard()
        response.success, response.message = True, f"discarded {str(bag.path)!r}"
        self.get_logger().info(response.message)
        return response

    def _repair_unfinished(self) -> None:
        """Bags left unfinished by a recorder that was killed: made readable before anything new is recorded."""
        root = Path(self.config.output_dir).expanduser()
        for path in unfinished_bags(root) if root.is_dir() else []:
            try:
                report = repair_bag(path)
                self.get_logger().warning(f"repaired the unfinished bag {str(path)!r} (its recorder was killed): "
                                          f"{report.messages} messages, {report.duration_s:.2f} s kept")
            except (BagError, OSError, ValueError) as error:
                self.get_logger().error(f"could not repair the unfinished bag {str(path)!r}: {error}")

    def _on_timer(self) -> None:
        if self._bag is None:
            return
        if time.monotonic() - self._started > self.config.max_episode_s:
            self._fail(f"episode longer than max_episode_s={self.config.max_episode_s:g}")
            return
        try:
            self._bag.flush()
        except BagError as error:
            self._fail(str(error))

    def close(self) -> None:
        """Ctrl-C mid-episode: the bag is closed properly, so it stays readable."""
        if self._bag is not None:
            bag, self._bag = self._bag, None
            try:
                bag.close({"task_success": "unknown", "interrupted": "true"})
                self.get_logger().info(f"interrupted: episode kept in {str(bag.path)!r} ({bag.messages} messages)")
            except BagError as error:
                self.get_logger().error(str(error))


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
