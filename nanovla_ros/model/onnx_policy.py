"""The policy's per-step path as an ONNX graph, and a policy that runs it with ONNX Runtime.

The exported graph is what ``NanoVLAPolicy`` runs each step after pre-processing: the frozen image encoder on every
camera's frame, the fusion transformer (CVAE latent at zero, as at inference) and the de-normalisation of the
action chunk. Inputs ``pixels`` (N cameras, 3, S, S) float32 (resized and normalised frames, as
``FrozenImageEncoder.preprocess`` makes them), ``state`` (1, state_dim) radians, ``instruction`` (1, language_dim);
output ``actions`` (1, H, A) joint targets in radians. The checkpoint's metadata (model config, the record of its
training, the h it declares) travels in the ONNX file's metadata, so the file describes itself as the checkpoint
does.

``OnnxPolicy`` has ``NanoVLAPolicy``'s ``predict_chunk`` and ``config``, so the policy node and the evaluation take
either. Providers: CPU, CUDA, TensorRT (``onnxruntime-gpu``; TensorRT also needs ``tensorrt``); a missing package is
named in the error.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
from nanovla_ros.model.modeling_nanovla import (
    IMAGE_MEAN,
    IMAGE_STD,
    NanoVLAPolicy,
    policy_frames,
)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}
OPSET = 17
# int8: dynamic quantisation of the matrix products (quantize_dynamic_int8), for the CPU; fp16: the fp32 graph
# built by TensorRT into an fp16 engine (the tensorrt backend only)
PRECISIONS = ("fp32", "int8", "fp16")


def providers(device: str, fp16: bool = False, engine_cache: str | Path | None = None) -> list:
    """ONNX Runtime's execution providers for ``device`` (cpu, cuda, tensorrt), best first. TensorRT: ``fp16``
    engines, built once and kept in ``engine_cache`` (building one takes minutes)."""
    if device not in PROVIDERS:
        raise ValueError(f"device {device!r} is not one of {list(PROVIDERS)}")
    wanted: list = list(PROVIDERS[device])
    if device == "tensorrt":
        options = {"trt_fp16_enable": fp16}
        if engine_cache is not None:
            options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engine_cache)}
        wanted[0] = (wanted[0], options)
    elif fp16:
        raise ValueError("fp16 runs on the tensorrt device (ONNX Runtime's TensorRT provider)")
    return wanted


class OnnxExportError(RuntimeError):
    pass


class _Step(torch.nn.Module):
    def __init__(self, policy: NanoVLAPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, pixels: torch.Tensor, state: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        return self.policy._chunk(pixels, state, instruction)


def export_onnx(policy: NanoVLAPolicy, destination: str | Path, metadata: dict[str, str]) -> Path:
    """Write ``policy``'s per-step path (fp32) to ``destination`` with ``metadata`` (string values) in it."""
    import onnx

    c = policy.config
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    pixels = torch.zeros(len(c.cameras), 3, c.image_size, c.image_size)
    state, instruction = torch.zeros(1, c.state_dim), torch.zeros(1, c.language_dim)
    step = _Step(policy.float().eval()).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on constant folding and tracing
        torch.onnx.export(step, (pixels, state, instruction), str(destination), input_names=["pixels", "state",
                          "instruction"], output_names=["actions"], opset_version=OPSET, dynamo=False)
    graph = onnx.load(str(destination))
    for key, value in {**metadata, "config": json.dumps(c.to_dict())}.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(destination))
    return destination


def export_checkpoint_onnx(checkpoint: str | Path, destination: str | Path) -> Path:
    """``nanovla export CKPT --onnx OUT``: the checkpoint's policy (its own image encoder, cameras and sizes from
    its metadata) as ONNX, with the checkpoint's metadata beside the config."""
    from nanovla_ros.model.checkpoint import load_checkpoint, read_metadata

    model, _ = load_checkpoint(checkpoint)
    metadata = {k: v for k, v in read_metadata(checkpoint).items() if k != "config"}
    metadata["exported_from"] = Path(checkpoint).name
    return export_onnx(NanoVLAPolicy(model), destination, metadata)


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata an exported policy carries (the checkpoint's: config, extra, encoder ids)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}


def _session(path: str | Path, device: str, threads: int, fp16: bool = False):
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise OnnxExportError("backend onnxruntime needs the onnxruntime package (pip install onnxruntime; on a "
                              "GPU host onnxruntime-gpu)") from err
    wanted = providers(device, fp16, Path(path).parent / "tensorrt_engines")
    missing = [p for p in PROVIDERS[device][:1] if p not in ort.get_available_providers()]
    if missing:
        package = "tensorrt and onnxruntime-gpu" if device == "tensorrt" else "onnxruntime-gpu"
        raise OnnxExportError(f"ONNX Runtime here has no {missing[0]} (it has {ort.get_available_providers()}): "
                              f"install {package}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=wanted)


class FramePreprocessor:
    """Frames (h, w, 3) uint8 -> (N, 3, S, S) float32, what ``preprocess_frames`` gives (bilinear, half-pixel
    centres, then EfficientNet-Lite's normalisation; equal within 1e-6) at a fraction of its cost: per frame one
    uint8 -> float copy, one OpenCV resize and one fused scale-and-shift per channel, all into buffers kept from
    call to call (the returned array is overwritten by the next call)."""

    def __init__(self, image_size: int) -> None:
        self.size = image_size
        self.scale = np.float32(1.0 / (255.0 * IMAGE_STD))
        self.offset = np.float32(-IMAGE_MEAN / IMAGE_STD)
        self._small = np.empty((image_size, image_size, 3), np.float32)
        self._float: dict[tuple[int, ...], np.ndarray] = {}  # by frame shape
        self._out = np.empty((0, 3, image_size, image_size), np.float32)

    def __call__(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        import cv2

        if self._out.shape[0] != len(frames):
            self._out = np.empty((len(frames), 3, self.size, self.size), np.float32)
        for i, frame in enumerate(frames):
            if frame.shape[:2] == (self.size, self.size):
                np.copyto(self._small, frame, casting="unsafe")
            else:
                as_float = self._float.get(frame.shape)
                if as_float is None:
                    as_float = self._float[frame.shape] = np.empty(frame.shape, np.float32)
                np.copyto(as_float, frame, casting="unsafe")
                cv2.resize(as_float, (self.size, self.size), dst=self._small, interpolation=cv2.INTER_LINEAR)
            for channel in range(3):
                plane = self._out[i, channel]
                np.multiply(self._small[..., channel], self.scale, out=plane)
                plane += self.offset
        return self._out


class OnnxPolicy:
    """An exported policy (``export_onnx``) run by ONNX Runtime: ``predict_chunk`` as ``NanoVLAPolicy``'s.
    ``device``: cpu, cuda or tensorrt (the execution provider); ``threads``: ONNX Runtime's intra-op threads
    (0: its default)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int = 0, fp16: bool = False) -> None:
        providers(device, fp16)  # a bad device or precision is refused before anything loads
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxExportError(f"ONNX policy {str(path)!r} does not exist (nanovla export CKPT --onnx OUT)")
        self.session = _session(self.path, device, threads, fp16)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "config" not in self.metadata:
            raise OnnxExportError(f"{str(path)!r} has no NanoVLA config in its metadata: export it with nanovla export")
        self.config = NanoVLAConfig.from_dict(json.loads(self.metadata["config"]))
        self.extra = json.loads(self.metadata.get("extra", "{}"))
        self.preprocess = FramePreprocessor(self.config.image_size)
        if threads > 0:
            import cv2

            cv2.setNumThreads(threads)  # the pre-processing's resize too (this process's OpenCV)


    def predict_chunk(self, image: np.ndarray | dict[str, np.ndarray], state: np.ndarray,
                      instruction_embedding: np.ndarray) -> np.ndarray:
        frames = policy_frames(self.config, image, state, instruction_embedding)
        feeds = {"pixels": self.preprocess(frames), "state": state.astype(np.float32)[None],
                 "instruction": instruction_embedding.astype(np.float32)[None]}
        return self.session.run(["actions"], feeds)[0][0]  # (H, A)


def quantize_dynamic_int8(source: str | Path, destination: str | Path) -> Path:
    """``source`` with the weights of its matrix products (the transformer's and the projections') in int8 and
    their activations quantised per call (ONNX Runtime's dynamic quantisation: no calibration data); the image
    encoder's convolutions stay fp32. The metadata travels along."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(destination), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"], per_channel=True)
    graph = onnx.load(str(destination))
    kept = {p.key for p in graph.metadata_props}
    for prop in onnx.load(str(source), load_external_data=False).metadata_props:
        if prop.key not in kept:
            graph.metadata_props.add(key=prop.key, value=prop.value)
    graph.metadata_props.add(key="precision", value="int8-dynamic")
    onnx.save(graph, str(destination))
    return Path(destination)


def cached_export(checkpoint: str | Path, cache_dir: str | Path | None = None, precision: str = "fp32") -> Path:
    """The ONNX export of ``checkpoint`` (``precision`` fp32, or int8: ``quantize_dynamic_int8``), made once and
    kept under ``cache_dir`` (default: $NANOVLA_CACHE_DIR/onnx or ~/.cache/nanovla_ros/onnx) by the checkpoint's
    content hash, torch's and the exporter's versions."""
    import hashlib

    from nanovla_ros.language.encoders import default_cache_dir

    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir else default_cache_dir() / "onnx"
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    path = folder / f"{Path(checkpoint).stem}-{digest}-torch{torch.__version__.split('+')[0]}-opset{OPSET}.onnx"
    if not path.is_file():
        partial = path.with_suffix(".partial")
        export_checkpoint_onnx(checkpoint, partial)
        partial.replace(path)  # a killed export never leaves a file that looks finished
    if precision == "int8":  # (fp16: TensorRT builds it from the fp32 graph)
        quantized = path.with_name(path.stem + "-int8.onnx")
        if not quantized.is_file():
            partial = quantized.with_suffix(".partial")
            quantize_dynamic_int8(path, partial)
            partial.replace(quantized)
        return quantized
    return path


def load_policy(checkpoint: str | Path, backend: str = "torch", device: str = "cpu", threads: int = 0,
                image_encoder=None, precision: str = "fp32", expected_language_encoder_id: str | None = None):
    """(policy, the checkpoint's record) for ``backend``: torch (``NanoVLAPolicy`` on ``device``, sharing
    ``image_encoder`` if given), onnxruntime (``OnnxPolicy`` on the CPU or CUDA provider for ``device``) or tensorrt
    (ONNX Runtime's TensorRT provider). A .safetensors checkpoint is exported to ONNX once (``cached_export``); an
    .onnx file runs as it is (not with torch). ``expected_language_encoder_id``: refuse a policy that reads
    another encoder's vectors."""
    from nanovla_ros.configuration import ConfigError
    from nanovla_ros.model.checkpoint import load_checkpoint

    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    from nanovla_ros.model.early_fusion import EarlyFusionPolicy, is_early_fusion_checkpoint, load_early_fusion

    if is_early_fusion_checkpoint(checkpoint):  # the baseline: torch, fp32, the instruction's words
        if backend != "torch" or precision != "fp32":
            raise ConfigError(f"{checkpoint} is an early-fusion checkpoint: it runs on the torch backend in fp32")
        model, extra = load_early_fusion(checkpoint)
        return EarlyFusionPolicy(model, str(device)), extra
    is_onnx = str(checkpoint).endswith(".onnx")
    if precision == "int8" and backend != "onnxruntime":
        raise ConfigError("precision int8 runs on the onnxruntime backend")
    if precision == "fp16" and backend == "onnxruntime":
        raise ConfigError("precision fp16 runs on the tensorrt backend (TensorRT builds an fp16 engine) or on the "
                          "torch backend on cuda (autocast)")
    if precision == "fp16" and backend == "torch" and not str(device).startswith("cuda"):
        raise ConfigError("precision fp16 with the torch backend runs on cuda (on a CPU use onnxruntime int8)")
    if precision == "fp16-weights" and (backend != "torch" or not str(device).startswith("cuda")):
        raise ConfigError("precision fp16-weights runs on the torch backend on cuda")
    if backend == "torch":
        if is_onnx:
            raise ConfigError(f"{checkpoint} is an ONNX policy: run it with backend onnxruntime or tensorrt")
        model, extra = load_checkpoint(checkpoint, device, expected_language_encoder_id)
        return NanoVLAPolicy(model, image_encoder, fp16=precision == "fp16",
                             half_weights=precision == "fp16-weights").to(device), extra
    policy = OnnxPolicy(checkpoint if is_onnx else cached_export(checkpoint, precision=precision),
                        "tensorrt" if backend == "tensorrt" else device, threads, fp16=precision == "fp16")
    found = policy.config.language_encoder_id
    if expected_language_encoder_id is not None and found != expected_language_encoder_id:
        raise ConfigError(f"{checkpoint} was trained on instruction vectors from {found!r}, but this node serves "
                          f"{expected_language_encoder_id!r}: use a checkpoint trained with that encoder")
    return policy, policy.extra
