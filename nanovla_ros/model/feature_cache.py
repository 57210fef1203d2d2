"""Frozen-feature cache for training: each frame's image features and each instruction's embedding are
computed once and kept on disk, so a training step touches only the trainable part.

Layout of a cache directory:
  image_features.npy   (N, C, h', w') float16, memory-mapped; row i = frame i
  instructions.npy     (M, L) float32; row j = instruction j
  index.json           encoder ids, shapes, and the instruction texts (so a cache built with another
                       encoder is refused instead of silently mixed)

The dataset of episodes (frames, states, commanded actions, instruction per episode) is given as arrays;
turning rosbag2 bags into those arrays is the data-loop issue (#6).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from nanovla_ros.model.modeling_nanovla import FrozenImageEncoder


class FeatureCacheError(ValueError):
    """The cache does not match the encoders or the data it is used with."""


@dataclass
class EpisodeData:
    """Frames of several episodes, in order. ``episode`` gives each frame's episode index."""

    images: np.ndarray  # (N, h, w, 3) uint8 RGB
    states: np.ndarray  # (N, S) radians
    actions: np.ndarray  # (N, A) commanded joint targets, radians
    episode: np.ndarray  # (N,) int
    instructions: list[str]  # one per episode


def build_feature_cache(data: EpisodeData, cache_dir: str | Path, image_encoder: FrozenImageEncoder,
                        encode_text: Callable[[list[str]], np.ndarray], language_encoder_id: str,
                        batch_size: int = 32, progress: bool = True) -> Path:
    """Compute the frozen features once; reuse an existing cache that matches (resumable by design)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_path = cache_dir / "index.json"
    n = len(data.images)
    wanted = {"image_encoder_id": f"{image_encoder.name}@{image_encoder.image_size}",
              "language_encoder_id": language_encoder_id, "frames": n, "instructions": list(data.instructions)}
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if {k: index.get(k) for k in wanted} == wanted and index.get("complete"):
            return cache_dir
    with torch.no_grad():
        probe = image_encoder(torch.from_numpy(data.images[:1]))  # (1, C, h', w')
    features = np.lib.format.open_memmap(cache_dir / "image_features.npy", mode="w+", dtype=np.float16,
                                         shape=(n,) + tuple(probe.shape[1:]))
    batches = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="image features", unit="batch")
    for start in batches:
        with torch.no_grad():
            chunk = image_encoder(torch.from_numpy(data.images[start:start + batch_size]))  # (b, C, h', w')
        features[start:start + len(chunk)] = chunk.numpy().astype(np.float16)
    features.flush()
    np.save(cache_dir / "instructions.npy", np.asarray(encode_text(list(data.instructions)), dtype=np.float32))
    index_path.write_text(json.dumps({**wanted, "feature_shape": list(probe.shape[1:]), "complete": True}, indent=1))
    return cache_dir


class CachedChunkDataset(Dataset):
    """Samples for frame t: cached image features, instruction embedding, state, and the next H
    commanded actions of the same episode (padded with the last action, mask False past the end)."""

    def __init__(self, data: EpisodeData, cache_dir: str | Path, horizon: int,
                 language_encoder_id: str | None = None) -> None:
        cache_dir = Path(cache_dir)
        index = json.loads((cache_dir / "index.json").read_text())
        if language_encoder_id is not None and index["language_encoder_id"] != language_encoder_id:
            raise FeatureCacheError(f"cache {str(cache_dir)!r} holds {index['language_encoder_id']!r} embeddings, "
                                    f"the model reads {language_encoder_id!r}")
        if index["frames"] != len(data.images):
            raise FeatureCacheError(f"cache has {index['frames']} frames, the data {len(data.images)}")
        self.features = np.load(cache_dir / "image_features.npy", mmap_mode="r")  # (N, C, h', w')
        self.instructions = np.load(cache_dir / "instructions.npy")  # (M, L)
        self.data, self.horizon = data, horizon
        ends = {}
        for i, e in enumerate(data.episode):
            ends[int(e)] = i
        self._episode_end = np.array([ends[int(e)] for e in data.episode])  # last frame of each frame's episode

    def __len__(self) -> int:
        return len(self.data.images)

    def __getitem__(self, t: int) -> dict[str, torch.Tensor]:
        end = self._episode_end[t]
        steps = np.arange(t, t + self.horizon)
        mask = steps <= end  # (H,)
        actions = self.data.actions[np.minimum(steps, end)]  # (H, A)
        return {
            "image_features": torch.from_numpy(np.asarray(self.features[t], dtype=np.float32)),
            "instruction": torch.from_numpy(self.instructions[int(self.data.episode[t])]),
            "state": torch.from_numpy(self.data.states[t].astype(np.float32)),
            "actions": torch.from_numpy(actions.astype(np.float32)),
            "action_mask": torch.from_numpy(mask),
        }


def normalization_stats(data: EpisodeData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(state mean, state std, action mean, action std) over all frames."""
    return (data.states.mean(0), data.states.std(0), data.actions.mean(0), data.actions.std(0))


def train_step(model, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               grad_clip: float = 10.0) -> dict[str, float]:
    """One optimisation step of the trainable part on cached features; returns the loss parts."""
    model.train()
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    _, loss = model(batch["image_features"], batch["instruction"], batch["state"], batch["actions"], batch["action_mask"])
    optimizer.zero_grad(set_to_none=True)
    loss["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return {k: float(v.detach()) for k, v in loss.items()}
