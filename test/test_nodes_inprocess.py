"""Nodes in process, each test with its own rclpy Context, talking over real DDS."""
import threading
import time

import numpy as np
import pytest
import rclpy
from conftest import wait_until
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from nanovla_ros.camera.image_codec import ImageFields, fields_to_array
from nanovla_ros.configuration import ConfigError
from nanovla_ros.language.config import EncoderConfig
from nanovla_ros.language.service import InstructionEncoderService
from nanovla_ros.msg import CurrentTask, RouteDecision
from nanovla_ros.nodes.camera_node import CameraNode
from nanovla_ros.nodes.common import (
    CAMERA_INFO_TOPIC,
    COMMAND_QOS,
    CURRENT_TASK_TOPIC,
    IMAGE_TOPIC,
    LATCHED_QOS,
    ROUTE_DECISION_TOPIC,
    SENSOR_QOS,
    ns_from_stamp,
)
from nanovla_ros.nodes.instruction_encoder_node import InstructionEncoderNode
from nanovla_ros.nodes.router_node import RouterNode
from nanovla_ros.srv import EncodeInstruction, SetInstruction


class Graph:
    """A private context with a background executor; nodes added to it spin until close()."""

    def __init__(self, threads: int = 4) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        # rclpy's MultiThreadedExecutor busy-waits while a high-rate subscription's callback group is
        # taken; a node publishing at 100 Hz (the driver) is tested on a single-threaded executor.
        self.executor = (MultiThreadedExecutor(num_threads=threads, context=self.context) if threads > 1
                         else SingleThreadedExecutor(context=self.context))
        self.nodes = []
        self.probe = rclpy.create_node("test_probe", context=self.context)
        self.add(self.probe)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def call(self, srv_type, name, request, timeout_s=30.0):
        client = self.probe.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout_s), f"{name} never appeared"
        future = client.call_async(request)
        assert wait_until(future.done, timeout_s), f"{name} did not answer"
        return future.result()

    def close(self):
        for node in self.nodes:
            if hasattr(node, "close"):
                node.close()
        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture
def graph():
    g = Graph()
    yield g
    g.close()


def test_camera_node_publishes_stamped_frames_and_info(graph):
    images, infos = [], []
    graph.probe.create_subscription(Image, IMAGE_TOPIC, images.append, SENSOR_QOS)
    graph.probe.create_subscription(CameraInfo, CAMERA_INFO_TOPIC, infos.append, SENSOR_QOS)
    camera = graph.add(CameraNode(context=graph.context, parameter_overrides=[
        Parameter("width", value=64), Parameter("height", value=48), Parameter("encoding", value="bgr8"),
        Parameter("frame_id", value="front_cam"), Parameter("rate_hz", value=50.0)]))
    assert wait_until(lambda: len(images) >= 3 and len(infos) >= 1, 15.0)
    msg = images[-1]
    assert (msg.width, msg.height, msg.encoding, msg.step, msg.header.frame_id) == (64, 48, "bgr8", 192, "front_cam")
    age_ms = (time.time_ns() - ns_from_stamp(msg.header.stamp)) / 1e6
    assert 0 <= age_ms < 5_000
    assert ns_from_stamp(images[-1].header.stamp) > ns_from_stamp(images[0].header.stamp)
    bgr = fields_to_array(ImageFields(msg.height, msg.width, msg.encoding, 0, msg.step, bytes(msg.data)))
    assert bgr.shape == (48, 64, 3)
    assert infos[-1].header.frame_id == "front_cam" and infos[-1].k[0] > 0 and infos[-1].width == 64
    assert camera.get_parameter("max_age_ms").value == 100.0


def test_camera_node_refuses_bad_parameters_and_missing_devices(graph):
    with pytest.raises(ConfigError, match="width=4"):
        CameraNode(context=graph.context, parameter_overrides=[Parameter("width", value=4)])
    from nanovla_ros.camera.sources import CameraOpenError
    with pytest.raises(CameraOpenError, match="/dev/video_missing"):
        CameraNode(context=graph.context, parameter_overrides=[
            Parameter("source", value="v4l2"), Parameter("device", value="/dev/video_missing")])


def test_parameters_carry_descriptions(graph):
    camera = graph.add(CameraNode(context=graph.context))
    descriptor = camera.describe_parameter("max_age_ms")
    assert "older than" in descriptor.description


@pytest.fixture
def encoder_node(graph, cache_dir, minilm):
    service = InstructionEncoderService(EncoderConfig(backbones=("small",), cache_dir=str(cache_dir)),
                                        loader=lambda backbone: minilm)
    node = graph.add(InstructionEncoderNode(service=service, context=graph.context, parameter_overrides=[
        Parameter("backbones", value=["small"]), Parameter("cache_dir", value=str(cache_dir))]))
    assert service.wait_loaded(30)
    return node


def test_encoder_node_serves_cached_embeddings(graph, encoder_node):
    first = graph.call(EncodeInstruction, "encode_instruction", EncodeInstruction.Request(text="Touch the red cube", backbone="small"))
    second = graph.call(EncodeInstruction, "encode_instruction", EncodeInstruction.Request(text="touch the red cube", backbone="small"))
    assert first.success and second.success
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert len(first.embedding) == 768 and first.encoder_id.startswith("all-MiniLM-L6-v2")
    np.testing.assert_array_equal(np.asarray(first.embedding), np.asarray(second.embedding))
    bad = graph.call(EncodeInstruction, "encode_instruction", EncodeInstruction.Request(text=" ", backbone="small"))
    assert not bad.success and "empty" in bad.message
    large = graph.call(EncodeInstruction, "encode_instruction", EncodeInstruction.Request(text="hi", backbone="large"))
    assert not large.success and "not served here" in large.message


def test_router_publishes_decision_and_latched_task(graph, encoder_node):
    decisions = []
    graph.probe.create_subscription(RouteDecision, ROUTE_DECISION_TOPIC, decisions.append, COMMAND_QOS)
    graph.add(RouterNode(context=graph.context))
    reply = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="Put the red cube in the yellow square"))
    assert reply.accepted, reply.message
    assert reply.backbone == "small" and not reply.cache_hit

    # A subscriber that joins after publication still gets the task: it is latched.
    tasks = []
    graph.probe.create_subscription(CurrentTask, CURRENT_TASK_TOPIC, tasks.append, LATCHED_QOS)
    assert wait_until(lambda: len(tasks) == 1 and len(decisions) == 1, 10.0)
    task = tasks[0]
    assert task.instruction_id == reply.instruction_id and task.text == "put the red cube in the yellow square"
    assert len(task.embedding) == 768 and task.encoder_id.startswith("all-MiniLM-L6-v2")
    assert decisions[0].reason == "default" and decisions[0].backbone == "small"

    again = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="put the red cube in the yellow square"))
    assert again.accepted and again.cache_hit and again.instruction_id == reply.instruction_id + 1
    assert wait_until(lambda: len(tasks) == 2, 10.0)  # the new instruction preempts the old one

    for text, backbone, why in (("", "auto", "empty"), ("x" * 1000, "auto", "characters long"),
                                ("touch the cube", "medium", "medium"), ("touch the cube", "large", "not served here")):
        rejected = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text=text, backbone=backbone))
        assert not rejected.accepted and why in rejected.message
    assert len(tasks) == 2  # nothing was published for rejected instructions


def test_router_refuses_text_that_was_cut_or_damaged_on_the_way(graph, encoder_node):
    tasks = []
    graph.probe.create_subscription(CurrentTask, CURRENT_TASK_TOPIC, tasks.append, LATCHED_QOS)
    graph.add(RouterNode(context=graph.context))
    sent = "touch the red cube\x00 and sweep the table clear"
    cut = graph.call(SetInstruction, "set_instruction",
                     SetInstruction.Request(text=sent, text_bytes=len(sent.encode())))  # ROS delivers up to the NUL
    assert not cut.accepted and "cut short" in cut.message
    damaged = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="touch the \ufffd cube"))
    assert not damaged.accepted and "U+FFFD" in damaged.message
    plain = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="touch the red cube"))
    hidden = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="touch the\u200b red\u202e cube"))
    assert plain.accepted and hidden.accepted and hidden.cache_hit  # one instruction, one cache entry
    assert wait_until(lambda: len(tasks) >= 1, 10.0) and tasks[-1].text == "touch the red cube"


def test_router_refuses_out_of_scope_requests_and_a_parameter_turns_that_off(graph, encoder_node):
    tasks = []
    graph.probe.create_subscription(CurrentTask, CURRENT_TASK_TOPIC, tasks.append, LATCHED_QOS)
    graph.add(RouterNode(context=graph.context))
    for text, why in (("make me a coffee", "names none of them"), ("put the red cube in the fridge", "fridge")):
        reply = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text=text))
        assert not reply.accepted and reply.message.startswith("out of scope") and why in reply.message, reply.message
    polite = graph.call(SetInstruction, "set_instruction",
                        SetInstruction.Request(text="could you slide the blue brick over to the left, please?"))
    assert polite.accepted, polite.message
    assert wait_until(lambda: len(tasks) == 1, 10.0)  # only the accepted one was published
    permissive = graph.add(RouterNode(context=graph.context, namespace="open",
                                      parameter_overrides=[Parameter("scope_check", value=False)]))
    assert permissive.scope is None


def test_router_waits_for_a_loading_backbone_instead_of_failing(graph, cache_dir, minilm):
    release = threading.Event()

    def slow_loader(backbone):
        release.wait(30)
        return minilm

    service = InstructionEncoderService(EncoderConfig(backbones=("small",), cache_dir=str(cache_dir)), loader=slow_loader)
    graph.add(InstructionEncoderNode(service=service, context=graph.context, parameter_overrides=[
        Parameter("backbones", value=["small"])]))
    # The encoder itself answers at once with STATUS_LOADING ...
    loading = graph.call(EncodeInstruction, "encode_instruction", EncodeInstruction.Request(text="touch the red cube", backbone="small"))
    assert not loading.success and loading.status == EncodeInstruction.Response.STATUS_LOADING
    # ... while the router keeps the user's request until the backbone is ready.
    graph.add(RouterNode(context=graph.context))
    client = graph.probe.create_client(SetInstruction, "set_instruction")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(SetInstruction.Request(text="touch the red cube"))
    assert not wait_until(future.done, 0.5)  # still waiting on the loading backbone
    release.set()
    assert wait_until(future.done, 30)
    assert future.result().accepted, future.result().message


def test_router_waits_for_an_encoder_that_went_away_instead_of_refusing(graph, encoder_node, cache_dir, minilm):
    """A respawning encoder (the launcher restarts a dead node) is waited for up to encode_timeout_s; an encoder
    never seen is reported missing after 5 s (test_e2e_launch)."""
    graph.add(RouterNode(context=graph.context, parameter_overrides=[Parameter("encode_timeout_s", value=30.0)]))
    first = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="touch the red cube"))
    assert first.accepted, first.message
    graph.executor.remove_node(encoder_node)
    graph.nodes.remove(encoder_node)
    encoder_node.destroy_node()
    client = graph.probe.create_client(SetInstruction, "set_instruction")
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(SetInstruction.Request(text="push the blue cube to the left"))
    assert not wait_until(future.done, 6.0), future.result()  # past the 5 s a never-seen encoder gets
    service = InstructionEncoderService(EncoderConfig(backbones=("small",), cache_dir=str(cache_dir)),
                                        loader=lambda backbone: minilm)
    graph.add(InstructionEncoderNode(service=service, context=graph.context, parameter_overrides=[
        Parameter("backbones", value=["small"]), Parameter("cache_dir", value=str(cache_dir))]))
    assert wait_until(future.done, 30)
    assert future.result().accepted, future.result().message


def test_router_node_escalates_with_a_trained_router_file(graph, encoder_node, minilm, tmp_path):
    """NanoVLA-R in the node: the small-encoder vector decides; 'touch' stays small, 'stack' escalates to
    large (which this test's encoder does not serve, so that request is refused after the decision)."""
    from nanovla_ros.language.encoders import encoder_id
    from nanovla_ros.routing.classifier import train_router

    texts = {"touch the red cube": ((9, 10), (5, 10)), "tap the blue block": ((9, 10), (6, 10)),
             "stack the red cube on the blue cube": ((1, 10), (9, 10)),
             "put the green block on top of the red block": ((2, 10), (9, 10))}
    vectors = dict(zip(texts, minilm.encode(list(texts)), strict=True))
    counts = {t: {"small": small, "large": large} for t, (small, large) in texts.items()}
    path = train_router(vectors, counts, encoder_id("small")).save(tmp_path / "router.safetensors")
    decisions = []
    graph.probe.create_subscription(RouteDecision, ROUTE_DECISION_TOPIC, decisions.append, COMMAND_QOS)
    graph.add(RouterNode(context=graph.context, parameter_overrides=[
        Parameter("router_weights", value=str(path)), Parameter("threshold", value=0.5)]))
    small = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="touch the green cube"))
    assert small.accepted and small.backbone == "small", small.message
    assert wait_until(lambda: decisions, 10.0)
    assert decisions[0].reason == "router" and decisions[0].predicted_success_large < 0.5
    large = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="stack the blue cube on the green cube"))
    assert not large.accepted and "large" in large.message, large.message
    forced = graph.call(SetInstruction, "set_instruction", SetInstruction.Request(text="stack the blue cube on the green cube",
                                                                                   backbone="small"))
    assert forced.accepted and forced.backbone == "small"
    with pytest.raises(Exception, match="router"):
        RouterNode(context=graph.context, parameter_overrides=[Parameter("router_weights", value=str(tmp_path / "no"))])


def test_a_reply_dds_could_not_deliver_yet_is_sent_again_and_one_never_deliverable_is_logged():
    import warnings

    from std_srvs.srv import Trigger

    from nanovla_ros.nodes.common import reply_patiently

    graph = Graph(threads=1)
    try:
        node = graph.probe
        attempts = {"ok": 0, "late": 0}

        def make_send(failures: int, key: str):
            def send(response, header) -> None:  # as rclpy does when rmw_fastrtps times out on a reply reader
                attempts[key] += 1
                if attempts[key] <= failures:
                    warnings.warn("failed to send response (timeout): client will not receive response",
                                  RuntimeWarning, stacklevel=1)
            return send

        ok = node.create_service(Trigger, "~/patient_ok", lambda req, resp: resp)
        ok.send_response = make_send(2, "ok")
        reply_patiently(node, ok, give_up_s=5.0, retry_s=0.01)
        ok.send_response(Trigger.Response(success=True), object())  # as the executor calls it
        assert wait_until(lambda: attempts["ok"] == 3, 5.0), attempts  # two timeouts, then delivered
        assert not wait_until(lambda: attempts["ok"] > 3, 0.1)  # delivered: no more attempts

        late = node.create_service(Trigger, "~/patient_late", lambda req, resp: resp)
        late.send_response = make_send(10**6, "late")
        reply_patiently(node, late, give_up_s=0.2, retry_s=0.01)
        late.send_response(Trigger.Response(), object())
        assert wait_until(lambda: attempts["late"] > 3, 5.0), attempts

        def stopped() -> bool:  # no attempt for 0.1 s
            before = attempts["late"]
            return not wait_until(lambda: attempts["late"] > before, 0.1)

        assert wait_until(stopped, 3.0), attempts  # given up (0.2 s): no more attempts
    finally:
        graph.close()
