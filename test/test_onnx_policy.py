"""The policy's per-step path exported to ONNX (`nanovla export CKPT --onnx OUT`) and run by ONNX Runtime: the
same chunk as PyTorch's, the checkpoint's metadata inside, clear errors for what cannot run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.checkpoint import checkpoint_execute_steps, save_checkpoint
from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
from nanovla_ros.model.modeling_nanovla import NanoVLA, NanoVLAPolicy
from nanovla_ros.model.onnx_policy import (
    OnnxExportError,
    OnnxPolicy,
    cached_export,
    export_checkpoint_onnx,
    load_policy,
    read_onnx_metadata,
)

TINY = dict(d_model=32, n_heads=4, ffn_dim=64, enc_layers=1, dec_layers=1, vae_layers=1, horizon=12, latent_dim=4,
            image_size=64, language_dim=16, language_encoder_id="enc")
PARITY_RAD = 1e-4


def _inputs(config: NanoVLAConfig, rng: np.random.Generator, height: int = 48, width: int = 80):
    frames = {c: rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for c in config.cameras}
    image = frames if len(config.cameras) > 1 else frames[config.cameras[0]]
    return image, rng.normal(0, 0.5, config.state_dim).astype(np.float32), rng.normal(size=config.language_dim).astype(np.float32)


@pytest.mark.parametrize("cameras, task_token", [(("front",), False), (("front", "wrist"), False),
                                                 (("front", "wrist"), True)])
def test_an_exported_policy_gives_torchs_chunk_and_describes_itself(tmp_path, cameras, task_token):
    torch.manual_seed(0)
    extra = dict(task_loss_weight=1.0, task_token=True) if task_token else {}
    model = NanoVLA(NanoVLAConfig(cameras=cameras, **extra, **TINY))
    if task_token:  # the task head's answer reaches the actions
        torch.nn.init.normal_(model.task_token_proj.weight)
    source = save_checkpoint(model, tmp_path / "tiny.safetensors", {"step": 3, "execute_steps": 6})
    path = export_checkpoint_onnx(source, tmp_path / "tiny.onnx")
    reference, exported = NanoVLAPolicy(model.eval()), OnnxPolicy(path, threads=1)
    rng = np.random.default_rng(0)
    for _ in range(3):  # frames of another size than the model's input: resized alike
        image, state, instruction = _inputs(model.config, rng)
        want, got = reference.predict_chunk(image, state, instruction), exported.predict_chunk(image, state, instruction)
        assert got.shape == (12, 6) and np.abs(got - want).max() <= PARITY_RAD
    assert exported.config == model.config and exported.extra["step"] == 3
    assert checkpoint_execute_steps(path) == 6  # the h the checkpoint declares travels with the export
    assert json.loads(read_onnx_metadata(path)["config"])["cameras"] == list(cameras)
    with pytest.raises(ValueError, match="instruction embedding has shape"):
        exported.predict_chunk(image, state, np.zeros(5, np.float32))  # checked as the torch policy checks


def test_the_backend_loader_exports_once_and_refuses_what_cannot_run(tmp_path):
    torch.manual_seed(0)
    source = save_checkpoint(NanoVLA(NanoVLAConfig(**TINY)), tmp_path / "tiny.safetensors", {"step": 1})
    first = cached_export(source, tmp_path / "cache")
    assert cached_export(source, tmp_path / "cache") == first and len(list((tmp_path / "cache").iterdir())) == 1
    policy, extra = load_policy(first, "onnxruntime")
    assert isinstance(policy, OnnxPolicy) and extra["step"] == 1
    assert isinstance(load_policy(source, "torch")[0], NanoVLAPolicy)
    with pytest.raises(ConfigError, match="ONNX policy"):
        load_policy(first, "torch")
    with pytest.raises(ConfigError, match="backend"):
        load_policy(source, "tflite")
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(OnnxExportError, match="install tensorrt and onnxruntime-gpu"):
            OnnxPolicy(first, "tensorrt")
    with pytest.raises(OnnxExportError, match="does not exist"):
        OnnxPolicy(tmp_path / "missing.onnx")


def test_int8_quantises_the_matrix_products_and_keeps_the_policy_close(tmp_path):
    """precision int8: the transformer's MatMul / Gemm weights in int8 (dynamic quantisation, no calibration);
    the file still describes itself, says its precision, and its chunks stay near fp32's."""
    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(**TINY))
    source = save_checkpoint(model, tmp_path / "tiny.safetensors", {"step": 2, "execute_steps": 6})
    fp32 = cached_export(source, tmp_path / "cache")
    int8 = cached_export(source, tmp_path / "cache", precision="int8")
    assert int8 != fp32 and read_onnx_metadata(int8)["precision"] == "int8-dynamic"
    assert checkpoint_execute_steps(int8) == 6 and OnnxPolicy(int8).config == model.config
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops  # it is quantised, not a copy
    rng = np.random.default_rng(0)
    image, state, instruction = _inputs(model.config, rng)
    a, b = OnnxPolicy(fp32).predict_chunk(image, state, instruction), OnnxPolicy(int8).predict_chunk(image, state,
                                                                                                     instruction)
    assert np.isfinite(b).all() and np.abs(a - b).max() < 0.05
    with pytest.raises(ConfigError, match="onnxruntime backend"):
        load_policy(source, "torch", precision="int8")


@pytest.mark.parametrize("shape", [(480, 640), (64, 64), (32, 48), (90, 70)])
def test_the_frame_preprocessor_gives_the_torch_preprocessing_with_reused_buffers(shape):
    from nanovla_ros.model.modeling_nanovla import preprocess_frames
    from nanovla_ros.model.onnx_policy import FramePreprocessor

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    preprocess = FramePreprocessor(64)
    first = preprocess(list(frames))
    expected = preprocess_frames(torch.from_numpy(frames), 64).numpy()
    assert first.shape == (2, 3, 64, 64) and np.abs(first - expected).max() < 1e-5, shape
    again = preprocess([frames[1], frames[0]])
    assert again is first and np.abs(again[0] - expected[1]).max() < 1e-5  # the same buffer, refilled


def test_fp16_is_a_tensorrt_engine_or_torch_autocast_on_cuda_and_refused_elsewhere(tmp_path):
    from nanovla_ros.model.onnx_policy import providers
    from nanovla_ros.policy.config import PolicyNodeConfig

    first = providers("tensorrt", fp16=True, engine_cache=tmp_path)[0]
    assert first[0] == "TensorrtExecutionProvider" and first[1]["trt_fp16_enable"] is True
    assert first[1]["trt_engine_cache_path"] == str(tmp_path)  # built once, kept beside the export
    assert providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="tensorrt"):
        providers("cuda", fp16=True)
    with pytest.raises(ConfigError, match="tensorrt"):
        load_policy(tmp_path / "x.safetensors", "onnxruntime", precision="fp16")
    with pytest.raises(ConfigError, match="tensorrt"):
        PolicyNodeConfig(precision="fp16", backend="onnxruntime")
    assert PolicyNodeConfig(precision="fp16", backend="tensorrt", device="cuda").resolved_precision == "fp16"
    assert PolicyNodeConfig(precision="fp16", backend="torch", device="cuda").resolved_precision == "fp16"
    assert PolicyNodeConfig(precision="fp16", device="cuda").resolved_backend == "torch"  # auto on cuda: torch
    with pytest.raises(ConfigError, match="cuda"):
        PolicyNodeConfig(precision="fp16", backend="torch")  # a CPU has no fp16 autocast worth having
    with pytest.raises(ConfigError, match="cuda"):
        load_policy(tmp_path / "x.safetensors", "torch", precision="fp16")
    assert PolicyNodeConfig(precision="fp16-weights", device="cuda").resolved_precision == "fp16-weights"
    for refused in (dict(backend="torch"), dict(backend="tensorrt", device="cuda")):
        with pytest.raises(ConfigError, match="fp16-weights"):
            PolicyNodeConfig(precision="fp16-weights", **refused)
    with pytest.raises(ConfigError, match="fp16-weights"):
        load_policy(tmp_path / "x.safetensors", "torch", precision="fp16-weights")


def test_torch_fp16_runs_the_step_under_autocast_and_returns_fp32():
    """The torch policy's fp16 switch wraps the step in CUDA autocast; the chunk comes back fp32. On a CPU the
    autocast context is inert, so this checks the wiring (the GPU bench measures the speed)."""
    import torch

    from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy

    config = NanoVLAConfig(**TINY)
    plain = NanoVLAPolicy(NanoVLA(config))
    half = NanoVLAPolicy(plain.model, plain.image_encoder, fp16=True)
    assert half.fp16 and not plain.fp16
    frame = np.zeros((64, 64, 3), np.uint8)
    state, vector = np.zeros(config.state_dim, np.float32), np.ones(config.language_dim, np.float32)
    with pytest.warns(UserWarning, match="CUDA"):  # autocast names the device it cannot use here
        out = half.predict_chunk(frame, state, vector)
    assert out.dtype == np.float32 and np.allclose(out, plain.predict_chunk(frame, state, vector), atol=1e-6)
    assert torch.is_autocast_enabled() is False


def test_half_weights_run_the_whole_step_in_fp16_and_stay_close_to_fp32():
    """`half_weights`: every weight and activation fp16 (the GPU bench's `shipped_s_half`), the actions
    de-normalised in fp32; on a CPU too, so the step's dtype handling is checked here, including a feature map of
    another size than the model's own (its positions computed in the weights' dtype)."""
    import copy

    import torch

    from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy

    torch.manual_seed(0)
    config = NanoVLAConfig(**TINY)
    plain = NanoVLAPolicy(NanoVLA(config))
    half = NanoVLAPolicy(copy.deepcopy(plain.model), copy.deepcopy(plain.image_encoder), half_weights=True)
    assert next(half.model.parameters()).dtype == torch.float16 and half.model.action_std.dtype == torch.float32
    rng = np.random.default_rng(0)
    state, vector = rng.normal(size=config.state_dim).astype(np.float32), np.ones(config.language_dim, np.float32)
    for size in (64, 96):  # 96: another feature-map size than the model's
        frame = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        plain.image_encoder.image_size = half.image_encoder.image_size = size
        out, ref = half.predict_chunk(frame, state, vector), plain.predict_chunk(frame, state, vector)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert np.abs(out - ref).max() < 0.03 * max(1.0, float(np.abs(ref).max()))  # fp16: ~3 digits; the shipped
        # model: 1.6e-3 rad at most on two camera frames


def test_channels_last_gives_the_same_chunk():
    """`channels_last` (the GPU's NHWC layout for the image encoder) changes memory layout, not results."""
    import copy

    import torch

    from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy

    torch.manual_seed(0)
    config = NanoVLAConfig(**TINY)
    plain = NanoVLAPolicy(NanoVLA(config))
    nhwc = NanoVLAPolicy(copy.deepcopy(plain.model), copy.deepcopy(plain.image_encoder), channels_last=True)
    conv = next(m for m in nhwc.image_encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    state, vector = rng.normal(size=config.state_dim).astype(np.float32), np.ones(config.language_dim, np.float32)
    assert np.allclose(nhwc.predict_chunk(frame, state, vector), plain.predict_chunk(frame, state, vector), atol=1e-5)
