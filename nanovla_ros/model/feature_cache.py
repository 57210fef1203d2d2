"""Frozen-feature cache for training: each frame's image features and each instruction's embedding are
computed once and kept on disk, so a training step touches only the trainable part.

Layout of a cache directory:
  image_features.npy        (F, C, h', w') float16, memory-mapped; row f = frame f
  index.json                image encoder id, frame count, complete flag
  instructions/<key>.npy    (M, L) float32, one table per language encoder (NanoVLA-S and -L share the images)
  instructions/<key>.json   the encoder id and the instruction texts, in row order
  cameras/<name>/           image_features.npy and index.json of a further camera (``wrist``), same frame rows

Samples and frames are separate: a camera at 15 Hz and a control loop at 30 Hz give two samples per frame,
so ``EpisodeData.frame_index`` maps each sample to its frame (identity when absent).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nanovla_ros.model.modeling_nanovla import FrozenImageEncoder


class FeatureCacheError(ValueError):
    """The cache does not match the encoders or the data it is used with."""


@dataclass
class EpisodeData:
    """Samples of several episodes, in order; ``episode`` gives each sample's episode index.

    ``images`` is anything indexable by a slice that returns (n, h, w, 3) uint8 RGB (an array, or a store
    that decodes JPEG frames); ``frame_index[i]`` is sample i's row of ``images``."""

    images: Sequence  # (F, h, w, 3) uint8 RGB
    states: np.ndarray  # (N, S) radians
    actions: np.ndarray  # (N, A) commanded joint targets, radians; actions[i] is sent at sample i
    episode: np.ndarray  # (N,) int
    instructions: list[str]  # one per episode
    frame_index: np.ndarray | None = None  # (N,) int; None = sample i uses frame i

    def frames_of_samples(self) -> np.ndarray:
        return np.arange(len(self.states)) if self.frame_index is None else self.frame_index


def _key(encoder_id: str) -> str:
    return hashlib.sha1(encoder_id.encode()).hexdigest()[:12]


def write_instruction_table(cache_dir: str | Path, language_encoder_id: str, texts: list[str],
                            vectors: np.ndarray, dtype=np.float32) -> None:
    """Add (or replace) one language encoder's embeddings of ``texts`` in the cache (stored as ``dtype``: float16
    halves a table that has to travel; readers take either)."""
    folder = Path(cache_dir) / "instructions"
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, dtype=dtype)
    if vectors.shape[0] != len(texts):
        raise FeatureCacheError(f"{len(texts)} instructions but {vectors.shape[0]} vectors")
    np.save(folder / f"{_key(language_encoder_id)}.npy", vectors)
    (folder / f"{_key(language_encoder_id)}.json").write_text(
        json.dumps({"language_encoder_id": language_encoder_id, "texts": list(texts)}, indent=1))


def instruction_table_ids(cache_dir: str | Path) -> list[str]:
    folder = Path(cache_dir) / "instructions"
    return sorted(json.loads(p.read_text())["language_encoder_id"] for p in folder.glob("*.json")) if folder.is_dir() else []


def table_id_for(cache_dir: str | Path, encoder_name: str) -> str:
    """The id of the cache's instruction table made by the encoder called ``encoder_name`` (ids start with the
    model's name). Read from the cache, since the training machine may not have the encoders installed."""
    ids = [i for i in instruction_table_ids(cache_dir) if i.lower().startswith(encoder_name.lower())]
    if not ids:
        raise FeatureCacheError(f"the cache {str(cache_dir)!r} has no {encoder_name} instruction table: run "
                                f"`nanovla dataset --cache` (or write_instruction_tables) where the encoders are installed")
    return ids[0]


def read_instruction_table(cache_dir: str | Path, language_encoder_id: str) -> tuple[list[str], np.ndarray]:
    folder = Path(cache_dir) / "instructions"
    meta = folder / f"{_key(language_encoder_id)}.json"
    if not meta.is_file():
        raise FeatureCacheError(f"cache {str(cache_dir)!r} holds instruction embeddings of {instruction_table_ids(cache_dir)}, "
                                f"not of {language_encoder_id!r}")
    texts = json.loads(meta.read_text())["texts"]
    # float32 whatever the file holds (a table carried to a lent machine may be stored in fp16 to fit a call)
    return texts, np.load(folder / f"{_key(language_encoder_id)}.npy").astype(np.float32, copy=False)


def camera_cache_dir(cache_dir: str | Path, camera: str, image_stride: int = 32, fine: bool = False) -> Path:
    """Where a camera's image features live: the cache itself for the front camera, ``cameras/<name>`` else;
    features of the stride-16 map in ``s16/`` below that, the final map with the stride-16 one folded in
    (``fine_features``) in ``s32+s16/`` (all can sit side by side)."""
    folder = Path(cache_dir) if camera == "front" else Path(cache_dir) / "cameras" / camera
    if fine:
        return folder / "s32+s16"
    return folder if image_stride == 32 else folder / f"s{image_stride}"


def load_camera_features(cache_dir: str | Path, camera: str, n_frames: int, image_encoder_id: str,
                         image_stride: int = 32, fine: bool = False, copy: int = 0) -> np.ndarray:
    """One camera's features (memory-mapped (F, C, h', w')), checked against the frame count and the encoder;
    ``copy`` > 0: its augmented copy of that number."""
    folder = camera_cache_dir(cache_dir, camera, image_stride, fine)
    folder = augmented_cache_dir(folder, copy) if copy else folder
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise FeatureCacheError(f"no image features of camera {camera!r} in {str(cache_dir)!r}")
    index = json.loads(index_path.read_text())
    if index["frames"] != n_frames or index.get("image_encoder_id") != image_encoder_id or not index.get("complete"):
        raise FeatureCacheError(f"the {camera!r} features in {str(folder)!r} are of {index['frames']} frames from "
                                f"{index.get('image_encoder_id')!r}; wanted {n_frames} from {image_encoder_id!r}")
    return np.load(folder / "image_features.npy", mmap_mode="r")


def augmented_cache_dir(camera_dir: str | Path, copy: int) -> Path:
    """Where the ``copy``-th (1, 2, ...) augmented copy of a camera's features lives."""
    return Path(camera_dir) / f"aug{copy}"


def build_image_features(images: Sequence, cache_dir: str | Path, image_encoder: FrozenImageEncoder,
                         batch_size: int = 64, progress: bool = True, device: str | torch.device = "cpu",
                         transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                         transform_id: str = "") -> Path:
    """Compute every frame's features once; an existing complete cache for the same encoder, frame count and
    transform is reused. ``transform(frames, start)``: applied to each decoded (b, h, w, 3) uint8 batch on the
    device before the encoder (an augmented copy, ``augmented_cache_dir``); ``transform_id`` names it."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_path = cache_dir / "index.json"
    n = len(images)
    wanted = {"image_encoder_id": image_encoder.encoder_id, "frames": n, "transform": transform_id}
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        if {k: index.get(k, "" if k == "transform" else None) for k in wanted} == wanted and index.get("complete"):
            return cache_dir
    image_encoder = image_encoder.to(device)
    with torch.no_grad():
        probe = image_encoder(torch.from_numpy(np.asarray(images[0:1])).to(device))  # (1, C, h', w')
    features = np.lib.format.open_memmap(cache_dir / "image_features.npy", mode="w+", dtype=np.float16,
                                         shape=(n,) + tuple(probe.shape[1:]))
    starts = list(range(0, n, batch_size))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(starts), desc="image features", unit="batch")
    # On a GPU the encoder is the cheap part; the CPU bounds this loop. Threads decode the next batches' JPEG
    # frames (cv2 and PIL release the GIL) while the encoder runs, and the features are cast to fp16 on the
    # device (numpy's float32 -> float16 cast took 5 s per 512 frames at 320 px, 20x the encoder).
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead = deque(pool.submit(_decode_batch, images, s, batch_size) for s in starts[:workers])
        for k, start in enumerate(starts):
            batch = ahead.popleft().result()  # (b, h, w, 3) uint8
            if k + workers < len(starts):
                ahead.append(pool.submit(_decode_batch, images, starts[k + workers], batch_size))
            with torch.no_grad():
                pixels = torch.from_numpy(batch).to(device)  # (b, h, w, 3) uint8
                if transform is not None:
                    pixels = transform(pixels, start)
                chunk = image_encoder(pixels)  # (b, C, h', w')
            features[start:start + len(chunk)] = chunk.half().cpu().numpy()
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    features.flush()
    index_path.write_text(json.dumps({**wanted, "feature_shape": list(probe.shape[1:]), "complete": True}, indent=1))
    return cache_dir


def _decode_batch(images: Sequence, start: int, batch_size: int) -> np.ndarray:
    return np.asarray(images[start:start + batch_size])  # (b, h, w, 3) uint8; JPEG stores decode here


def build_feature_cache(data: EpisodeData, cache_dir: str | Path, image_encoder: FrozenImageEncoder,
                        encode_text: Callable[[list[str]], np.ndarray], language_encoder_id: str,
                        batch_size: int = 32, progress: bool = True, device: str | torch.device = "cpu") -> Path:
    """Image features (once per frame) plus this language encoder's table of the episodes' instructions."""
    cache_dir = build_image_features(data.images, cache_dir, image_encoder, batch_size, progress, device)
    texts = sorted(set(data.instructions))
    try:
        held, _ = read_instruction_table(cache_dir, language_encoder_id)
        if set(texts) <= set(held):
            return cache_dir
    except FeatureCacheError:
        pass
    write_instruction_table(cache_dir, language_encoder_id, texts, encode_text(texts))
    return cache_dir


def load_cache(data: EpisodeData, cache_dir: str | Path, language_encoder_id: str | None):
    """(image features memmap (F, C, h', w'), per-episode instruction vectors (E, L) or None)."""
    cache_dir = Path(cache_dir)
    index = json.loads((cache_dir / "index.json").read_text())
    if index["frames"] != len(data.images):
        raise FeatureCacheError(f"cache has {index['frames']} frames, the data {len(data.images)}")
    features = np.load(cache_dir / "image_features.npy", mmap_mode="r")
    if language_encoder_id is None:
        return features, None
    return features, instruction_vectors(data.instructions, cache_dir, language_encoder_id)


def instruction_vectors(instructions: Sequence[str], cache_dir: str | Path, language_encoder_id: str) -> np.ndarray:
    """(E, L): each episode's instruction vector from the cache's table of ``language_encoder_id``."""
    texts, table = read_instruction_table(cache_dir, language_encoder_id)
    row = {t: i for i, t in enumerate(texts)}
    missing = sorted(set(instructions) - set(row))
    if missing:
        raise FeatureCacheError(f"instructions {missing[:3]} have no {language_encoder_id!r} embedding in the cache")
    return table[[row[t] for t in instructions]]


def episode_ends(episode: np.ndarray) -> np.ndarray:
    """For each sample, the index of its episode's last sample."""
    ends: dict[int, int] = {}
    for i, e in enumerate(episode):
        ends[int(e)] = i
    return np.array([ends[int(e)] for e in episode], dtype=np.int64)


class CachedChunkDataset(Dataset):
    """Sample t: cached image features of its frame, instruction embedding, state, and the next H commanded
    actions of the same episode (padded with the last action, mask False past the end)."""

    def __init__(self, data: EpisodeData, cache_dir: str | Path, horizon: int, language_encoder_id: str) -> None:
        self.features, self.instructions = load_cache(data, cache_dir, language_encoder_id)  # (F, ...), (E, L)
        self.data, self.horizon = data, horizon
        self._frames = data.frames_of_samples()
        self._episode_end = episode_ends(data.episode)

    def __len__(self) -> int:
        return len(self.data.states)

    def __getitem__(self, t: int) -> dict[str, torch.Tensor]:
        end = self._episode_end[t]
        steps = np.arange(t, t + self.horizon)
        mask = steps <= end  # (H,)
        actions = self.data.actions[np.minimum(steps, end)]  # (H, A)
        return {
            "image_features": torch.from_numpy(np.asarray(self.features[self._frames[t]], dtype=np.float32)),
            "instruction": torch.from_numpy(self.instructions[int(self.data.episode[t])]),
            "state": torch.from_numpy(self.data.states[t].astype(np.float32)),
            "actions": torch.from_numpy(actions.astype(np.float32)),
            "action_mask": torch.from_numpy(mask),
        }


def normalization_stats(data: EpisodeData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(state mean, state std, action mean, action std) over all samples."""
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
