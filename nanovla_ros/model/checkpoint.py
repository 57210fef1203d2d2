"""Self-describing NanoVLA checkpoints: one safetensors file holding the trainable weights and the
normalisation statistics (as tensors) plus, in its metadata, the config and the ids of the frozen
encoders it was trained with. The frozen encoders' own weights come from their packages.

Loading takes a device and never assumes CUDA; loading next to a different language encoder is a
clear error, since its vectors would mean nothing to this model.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
from nanovla_ros.model.modeling_nanovla import NanoVLA

FORMAT = "nanovla-checkpoint/1"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used here; the message says why (a node refuses to start with it)."""


def save_checkpoint(model: NanoVLA, path: str | Path, extra: dict | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model`` (weights in ``dtype``, e.g. float16 to ship) with its config and encoder ids."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() and not k.endswith(("_mean", "_std")) else v).contiguous().cpu()
               for k, v in model.state_dict().items()}
    c = model.config
    metadata = {
        "format": FORMAT,
        "config": json.dumps(c.to_dict()),
        "image_encoder_id": c.image_encoder_id,
        "language_encoder_id": c.language_encoder_id,
        "extra": json.dumps(extra or {}),
    }
    tmp = path.with_suffix(path.suffix + ".partial")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name
    return path


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a NanoVLA checkpoint (format {metadata.get('format')!r})")
    return metadata


DEFAULT_EXECUTE_STEPS = 10  # h for a checkpoint that declares none (long-short chunking of an H = 100 model)


def declared_execute_steps(extra: dict) -> int:
    """h, the actions of each chunk a checkpoint is meant to execute (what it was evaluated with: ``nanovla export
    --execute-steps``, kept in its "extra" metadata), else DEFAULT_EXECUTE_STEPS."""
    return int(extra.get("execute_steps") or DEFAULT_EXECUTE_STEPS)


def checkpoint_execute_steps(path: str | Path) -> int:
    """``declared_execute_steps`` of the checkpoint file at ``path`` (its metadata only, no weights loaded; an
    exported .onnx policy carries the checkpoint's)."""
    if str(path).endswith(".onnx"):
        from nanovla_ros.model.onnx_policy import read_onnx_metadata

        return declared_execute_steps(json.loads(read_onnx_metadata(path).get("extra", "{}")))
    from nanovla_ros.model.early_fusion import early_fusion_metadata

    metadata = early_fusion_metadata(path) or read_metadata(path)
    return declared_execute_steps(json.loads(metadata.get("extra", "{}")))


LANGUAGE_STATISTICS = ("language_mean", "language_std")  # instruction normalisation, added after the first checkpoints


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    expected_language_encoder_id: str | None = None) -> tuple[NanoVLA, dict]:
    """Rebuild the model from the file alone; return (model in eval mode, extra metadata)."""
    metadata = read_metadata(path)
    config = NanoVLAConfig.from_dict(json.loads(metadata["config"]))
    if expected_language_encoder_id is not None and config.language_encoder_id != expected_language_encoder_id:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was trained on instruction vectors from {config.language_encoder_id!r}, "
            f"but this node serves {expected_language_encoder_id!r}: use a checkpoint trained with that encoder")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' was asked for but torch sees no CUDA device; use device:=cpu")
    model = NanoVLA(config)
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in LANGUAGE_STATISTICS]  # older checkpoints: identity, as trained
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {str(path)!r} does not match its config: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval(), json.loads(metadata.get("extra", "{}"))


