"""policy_node in process: image + state + task -> one ActionChunk of H x 6 with the observation's stamp."""
import math
import time

import numpy as np
import pytest
import torch
from conftest import wait_until
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from test_nodes_inprocess import Graph

from nanovla_ros.configuration import ConfigError
from nanovla_ros.language.encoders import encoder_id
from nanovla_ros.model.checkpoint import save_checkpoint
from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
from nanovla_ros.model.modeling_nanovla import NanoVLA
from nanovla_ros.msg import ActionChunk, CurrentTask
from nanovla_ros.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, stamp_from_ns
from nanovla_ros.nodes.policy_node import PolicyNode

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
TINY = dict(d_model=32, n_heads=4, ffn_dim=64, enc_layers=1, dec_layers=1, vae_layers=1, horizon=12,
            latent_dim=4, image_size=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(language_dim=384, language_encoder_id=encoder_id("small"), **TINY))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "nanovla_s_tiny.safetensors")


@pytest.fixture
def graph():
    g = Graph(threads=1)
    yield g
    g.close()


def _image(stamp_ns: int) -> Image:
    msg = Image(height=48, width=64, encoding="rgb8", step=64 * 3, data=bytes(48 * 64 * 3))
    msg.header.stamp = stamp_from_ns(stamp_ns)
    return msg


def _state(stamp_ns: int) -> JointState:
    msg = JointState(name=JOINTS, position=[0.1] * 6)
    msg.header.stamp = stamp_from_ns(stamp_ns)
    return msg


def _task() -> CurrentTask:
    return CurrentTask(instruction_id=7, text="touch the red cube", backbone="small", encoder_id=encoder_id("small"),
                       embedding=np.ones(384, np.float32))


def _policy_with_inputs(graph, checkpoint, max_obs_age_ms: float, backend: str = "torch"):
    """A policy node with a latched task, plus the probe's chunk list and image / state publishers."""
    chunks = []
    graph.probe.create_subscription(ActionChunk, "action_chunk", chunks.append, COMMAND_QOS)
    images = graph.probe.create_publisher(Image, "camera/image_raw", SENSOR_QOS)
    states = graph.probe.create_publisher(JointState, "joint_states", SENSOR_QOS)
    tasks = graph.probe.create_publisher(CurrentTask, "current_task", LATCHED_QOS)
    tasks.publish(_task())
    policy = graph.add(PolicyNode(context=graph.context, parameter_overrides=[
        Parameter("checkpoint_small", value=str(checkpoint)), Parameter("replan_rate_hz", value=20.0),
        Parameter("max_obs_age_ms", value=max_obs_age_ms), Parameter("backend", value=backend)]))
    return policy, chunks, images, states


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_policy_publishes_a_chunk_stamped_with_the_observation(graph, checkpoint, backend, tmp_path, monkeypatch):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    monkeypatch.setenv("NANOVLA_CACHE_DIR", str(tmp_path))  # where the ONNX export is cached
    diagnostics = []
    graph.probe.create_subscription(DiagnosticArray, "diagnostics", diagnostics.append, COMMAND_QOS)
    policy, chunks, images, states = _policy_with_inputs(graph, checkpoint, max_obs_age_ms=1000.0, backend=backend)
    assert wait_until(lambda: images.get_subscription_count() > 0 and states.get_subscription_count() > 0, 10)
    stamps = []

    def observation_arrived() -> bool:  # keep the observation fresh until a chunk comes back
        now = time.time_ns()
        stamps.append(now)
        images.publish(_image(now))
        states.publish(_state(now))
        return len(chunks) > 0

    assert wait_until(observation_arrived, 20, interval_s=0.05)
    chunk = chunks[0]
    assert chunk.horizon == 12 and len(chunk.positions) == 12 * 6 and list(chunk.joint_names) == JOINTS
    assert chunk.instruction_id == 7 and chunk.backbone == "small"
    assert 12 - 10 <= chunk.execute_steps <= 10  # h = 10 (none declared), less by the steps the chunk came late
    assert chunk.dt_s == pytest.approx(1 / 30) and chunk.inference_latency_ms > 0
    stamp_ns = chunk.header.stamp.sec * 1_000_000_000 + chunk.header.stamp.nanosec
    assert stamp_ns in stamps  # the observation's time, not the publish time
    assert policy.runner.policies["small"].config.horizon == 12
    assert type(policy.runner.policies["small"]).__name__ == {"torch": "NanoVLAPolicy",
                                                               "onnxruntime": "OnnxPolicy"}[backend]
    # its diagnostics say it is ready (what the demo and graph evaluation wait for) and how it runs
    def reported() -> dict | None:
        for status in (s for msg in diagnostics for s in msg.status if s.name == "policy: inference"):
            values = {kv.key: kv.value for kv in status.values}
            if status.level == DiagnosticStatus.OK and int(values["chunks_published"]) >= 1:
                return values
        return None

    assert wait_until(lambda: reported() is not None, 10)
    assert reported()["checkpoints"] == "small" and reported()["execute_steps"] == "10"
    # inference has a thread of its own (not an executor callback); close() stops it
    assert policy._inference.is_alive() and policy._inference.name == "policy_inference"
    policy.close()
    assert not policy._inference.is_alive()


def test_the_node_spins_on_the_events_executor_where_rclpy_has_one():
    """The policy's process spins on rclpy's EventsExecutor (6 % of a core for ~160 messages a second, against 42 %
    on the multi-threaded executor it used, measured through the workcell graph)."""
    from nanovla_ros.nodes.common import _events_executor

    executor = _events_executor()
    try:
        assert type(executor).__name__ == "EventsExecutor"
    finally:
        executor.shutdown()


def test_h_is_what_the_checkpoint_declares_unless_the_parameter_says(checkpoint, tmp_path):
    from nanovla_ros.configuration import ConfigError as Refused
    from nanovla_ros.policy.config import PolicyNodeConfig
    from nanovla_ros.policy.runner import PolicyRunner
    from nanovla_ros.training.pipeline import export_checkpoint

    declaring = export_checkpoint(checkpoint, tmp_path / "h7.safetensors", execute_steps=7)
    auto = PolicyRunner(PolicyNodeConfig(checkpoint_small=str(declaring)))  # execute_steps: 0, the default
    assert auto.execute_steps == 7 and auto.period_s == pytest.approx(7 / 30)
    assert PolicyRunner(PolicyNodeConfig(checkpoint_small=str(declaring), execute_steps=5)).execute_steps == 5
    assert PolicyRunner(PolicyNodeConfig(checkpoint_small=str(checkpoint))).execute_steps == 10  # declares none
    with pytest.raises(Refused, match="execute_steps=13"):  # more than its horizon (12)
        export_checkpoint(checkpoint, tmp_path / "h13.safetensors", execute_steps=13)


def test_num_threads_sets_the_inference_threads(checkpoint):
    from nanovla_ros.policy.config import PolicyNodeConfig
    from nanovla_ros.policy.runner import PolicyRunner

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        PolicyRunner(PolicyNodeConfig(checkpoint_small=str(checkpoint)))  # 0: torch's default stays
        assert torch.get_num_threads() == 2
        PolicyRunner(PolicyNodeConfig(checkpoint_small=str(checkpoint), num_threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="num_threads=-1"):
        PolicyNodeConfig(num_threads=-1)


def test_the_default_backend_is_onnx_runtime_on_a_cpu_and_torch_where_it_cannot_be():
    """backend auto: ONNX Runtime on a CPU (faster there, the same closed-loop success), torch on cuda or with
    compile; precision auto: int8 there, fp16 weights with torch on cuda, fp32 elsewhere."""
    from nanovla_ros.policy.config import PolicyNodeConfig

    assert PolicyNodeConfig().backend == "auto" and PolicyNodeConfig().resolved_backend == "onnxruntime"
    assert PolicyNodeConfig(device="cuda").resolved_backend == "torch"
    assert PolicyNodeConfig(compile=True).resolved_backend == "torch"
    assert PolicyNodeConfig(backend="torch").resolved_backend == "torch"
    assert PolicyNodeConfig().resolved_precision == "int8"  # auto: int8 on ONNX Runtime on a CPU, else fp32
    assert PolicyNodeConfig(backend="torch").resolved_precision == "fp32"
    assert PolicyNodeConfig(device="cuda").resolved_precision == "fp16-weights"
    assert PolicyNodeConfig(device="cuda", backend="onnxruntime").resolved_precision == "fp32"
    with pytest.raises(ConfigError, match="int8 runs on the onnxruntime backend"):
        PolicyNodeConfig(backend="torch", precision="int8")
    with pytest.raises(ConfigError, match="tensorrt runs on device cuda"):
        PolicyNodeConfig(backend="tensorrt")
    with pytest.raises(ConfigError, match="compile applies to the torch backend"):
        PolicyNodeConfig(backend="onnxruntime", compile=True)


def test_a_chunk_that_arrives_late_runs_fewer_actions_so_the_next_comes_in_time(checkpoint, tmp_path):
    from nanovla_ros.policy.config import PolicyNodeConfig
    from nanovla_ros.policy.runner import Observation, PolicyRunner, Task
    from nanovla_ros.training.pipeline import export_checkpoint

    fixed = export_checkpoint(checkpoint, tmp_path / "h12.safetensors", execute_steps=12)  # H = 12, runs all 12
    runner = PolicyRunner(PolicyNodeConfig(checkpoint_small=str(fixed)))
    assert (runner.execute_steps, runner.effective_steps, runner.delay_steps) == (12, 12, 0)  # nothing measured yet
    task = Task(7, "small", encoder_id("small"), np.ones(384, np.float32))
    now_s = 1000.0
    image_ns = int((now_s - 0.1) * 1e9)  # 100 ms old: 3 control steps at 30 Hz, plus the inference
    observation = Observation(np.zeros((48, 64, 3), np.uint8), image_ns, np.zeros(6), image_ns, tuple(JOINTS))
    result = runner.step(observation, task, now_s)
    assert result.positions.shape == (12, 6)
    late = math.ceil((0.1 + result.latency_ms / 1e3) * 30)  # 4 unless the (warmed-up) pass took over 33 ms
    assert late >= 4 and runner.delay_steps == late and runner.effective_steps == max(1, 12 - late)
    assert runner.period_s == pytest.approx(max(1, 12 - late) / 30)
    asked = PolicyRunner(PolicyNodeConfig(checkpoint_small=str(fixed), execute_steps=5))
    result = asked.step(observation, task, now_s)
    late = math.ceil((0.1 + result.latency_ms / 1e3) * 30)
    assert asked.effective_steps == max(1, min(5, 12 - late))  # 5 unless the chunk comes over 7 steps late


def test_a_fine_features_checkpoint_gets_the_folding_encoder(tmp_path):
    """A checkpoint whose tokens read the stride-16 cells too (fine_features) runs in the node: the runner builds
    the encoder that folds them in (a final-map encoder would be refused by the policy)."""
    from nanovla_ros.policy.config import PolicyNodeConfig
    from nanovla_ros.policy.runner import Observation, PolicyRunner, Task

    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(language_dim=384, language_encoder_id=encoder_id("small"), fine_features=True,
                                  **TINY))
    runner = PolicyRunner(PolicyNodeConfig(checkpoint_small=str(save_checkpoint(model, tmp_path / "fine.safetensors")),
                                           backend="torch"))
    assert runner.policies["small"].image_encoder.encoder_id.endswith("+s16")
    task = Task(7, "small", encoder_id("small"), np.ones(384, np.float32))
    now_ns = 1_000_000_000_000
    observation = Observation(np.zeros((48, 64, 3), np.uint8), now_ns, np.zeros(6), now_ns, tuple(JOINTS))
    result = runner.step(observation, task, now_ns / 1e9)
    assert result.positions.shape == (TINY["horizon"], 6) and np.isfinite(result.positions).all()


def test_stale_observation_or_missing_checkpoint_publish_nothing(graph, checkpoint):
    policy, chunks, images, states = _policy_with_inputs(graph, checkpoint, max_obs_age_ms=100.0)
    assert wait_until(lambda: images.get_subscription_count() > 0, 10)
    old = time.time_ns() - 2_000_000_000  # two seconds old
    assert wait_until(lambda: (images.publish(_image(old)), states.publish(_state(time.time_ns())),
                               "ms old" in policy._last_skip)[-1], 10), policy._last_skip
    assert "camera image" in policy._last_skip and chunks == []

    no_large = graph.add(PolicyNode(context=graph.context, parameter_overrides=[
        Parameter("checkpoint_small", value=str(checkpoint))]))
    large_task = CurrentTask(instruction_id=8, text="x", backbone="large", encoder_id=encoder_id("large"),
                             embedding=np.ones(640, np.float32))
    from nanovla_ros.policy.runner import Task
    skip = no_large.runner.step(None, Task(8, "large", large_task.encoder_id, np.ones(640)), time.time())
    assert "no checkpoint for the large backbone" in skip.reason


def test_checkpoint_for_another_encoder_is_refused(graph, checkpoint):
    with pytest.raises(ConfigError, match="trained on instruction vectors"):
        PolicyNode(context=graph.context, parameter_overrides=[Parameter("checkpoint_large", value=str(checkpoint))])


def test_a_wrist_camera_checkpoint_waits_for_both_views_then_publishes(graph, tmp_path):
    model = NanoVLA(NanoVLAConfig(language_dim=384, language_encoder_id=encoder_id("small"), cameras=("front", "wrist"),
                                  **TINY))
    path = save_checkpoint(model, tmp_path / "wrist.safetensors")
    policy, chunks, images, states = _policy_with_inputs(graph, path, max_obs_age_ms=1000.0)
    wrist = graph.probe.create_publisher(Image, "wrist_camera/image_raw", SENSOR_QOS)
    assert policy.runner.other_cameras == ["wrist"]
    assert wait_until(lambda: wrist.get_subscription_count() > 0 and images.get_subscription_count() > 0, 10)
    # Front view and state only: no chunk, and the reason names the missing topic.
    assert wait_until(lambda: (images.publish(_image(time.time_ns())), states.publish(_state(time.time_ns())),
                               "wrist_camera/image_raw" in policy._last_skip)[-1], 10), policy._last_skip
    assert chunks == []

    def with_wrist() -> bool:
        now = time.time_ns()
        images.publish(_image(now))
        wrist.publish(_image(now))
        states.publish(_state(now))
        return len(chunks) > 0

    assert wait_until(with_wrist, 20, interval_s=0.05)
    assert chunks[0].horizon == 12


def test_the_runner_grounds_a_paraphrase_to_the_training_phrasing_of_its_task(minilm):
    """ground_instructions (default on) with the shipped checkpoint: until the candidates' vectors come the policy acts
    on the instruction's own vector; then each new task's first chunk is grounded, on the scene, as the training
    phrasing of the task its head places where it places the user's words."""
    from nanovla_ros.graph import SHIPPED_CHECKPOINT
    from nanovla_ros.model.grounding import candidate_instructions
    from nanovla_ros.policy.config import PolicyNodeConfig
    from nanovla_ros.policy.runner import Observation, PolicyRunner, Task
    from nanovla_ros.sim.tasks import scene_observation

    runner = PolicyRunner(PolicyNodeConfig(checkpoint_small=str(SHIPPED_CHECKPOINT)))
    assert runner.wants_candidates() == ["small"]
    assert not PolicyRunner(PolicyNodeConfig(checkpoint_small=str(SHIPPED_CHECKPOINT),
                                             ground_instructions=False)).grounders
    frames, state = scene_observation(1000)
    state = state.astype(np.float64)
    stamp_ns = time.time_ns()
    observation = Observation(frames["front"], stamp_ns, state, stamp_ns, tuple(JOINTS),
                              {"wrist": (frames["wrist"], stamp_ns)})
    text = "could you pick up the red block and set it down on the blue one"
    task = Task(1, "small", encoder_id("small"), minilm.encode([text])[0], text)
    assert runner.step(observation, task, stamp_ns / 1e9).grounded_as is None  # no candidates yet: its own vector
    candidates = candidate_instructions()
    vectors = dict(zip(candidates, minilm.encode(candidates), strict=True))
    with pytest.raises(ConfigError, match="reads"):
        runner.set_candidates("small", vectors, "another-encoder")
    runner.set_candidates("small", vectors, encoder_id("small"))
    assert runner.wants_candidates() == []
    result = runner.step(observation, Task(2, "small", encoder_id("small"), task.embedding, text), stamp_ns / 1e9)
    assert result.grounded_as == "stack the red cube on the blue cube"
    touch = "go and poke the green one"
    result = runner.step(observation, Task(3, "small", encoder_id("small"), minilm.encode([touch])[0], touch),
                         stamp_ns / 1e9)
    assert result.grounded_as == "touch the green cube"
