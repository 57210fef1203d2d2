"""Dataset -> feature cache -> training -> shipped checkpoint, as functions the CLI calls (no ROS)."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nanovla_ros import phrasings
from nanovla_ros.configuration import ConfigError
from nanovla_ros.data.demos import load_demonstrations
from nanovla_ros.model.augment import AugmentConfig, augment_frames
from nanovla_ros.model.configuration_nanovla import image_encoder_id
from nanovla_ros.model.feature_cache import (
    augmented_cache_dir,
    build_image_features,
    camera_cache_dir,
    instruction_vectors,
    load_camera_features,
    read_instruction_table,
    write_instruction_table,
)
from nanovla_ros.training.config import TrainConfig

BACKBONE_OF_VARIANT = {"s": "small", "l": "large"}

log = logging.getLogger(__name__)


def write_instruction_tables(cache_dir: str | Path, texts: list[str], backbones=("small", "large")) -> None:
    """Embed ``texts`` with each frozen language encoder once (the training machine may lack the encoders)."""
    from nanovla_ros.language.encoders import encoder_id, load_encoder

    for backbone in backbones:
        encoder = load_encoder(backbone)
        vectors = np.concatenate([encoder.encode(list(texts[i:i + 256])) for i in range(0, len(texts), 256)])
        write_instruction_table(cache_dir, encoder_id(backbone), list(texts), vectors)
        log.info(f"{len(texts)} instructions embedded with {encoder_id(backbone)} ({vectors.shape[1]}-d)")


def cache_dir_of(data_dir: str | Path) -> Path:
    return Path(data_dir) / "cache"


def prepare_cache(data_dir: str | Path, device: str = "cpu", batch_size: int = 64, with_instructions: bool = True,
                  image_size: int = 224, cameras: tuple[str, ...] = ("front",), image_stride: int = 32,
                  fine_features: bool = False, augment_copies: int = 0) -> Path:
    """Image features of every frame of each camera (once; and ``augment_copies`` augmented copies of them,
    ``nanovla_ros.model.augment``) and, unless the tables exist, both encoders' instruction tables for every
    workcell instruction plus the dataset's own."""
    from nanovla_ros.model.modeling_nanovla import FrozenImageEncoder

    demos = load_demonstrations(data_dir, cameras=cameras)
    cache = cache_dir_of(data_dir)
    if with_instructions and not (cache / "instructions").is_dir():
        from nanovla_ros.tasks import all_instructions

        write_instruction_tables(cache, sorted(set(all_instructions()) | set(demos.instructions)
                                               | set(phrasings.all_sentences())))
    encoder = FrozenImageEncoder("efficientnet-lite0", image_size, stride=image_stride, fine=fine_features)
    for camera in cameras:
        folder = camera_cache_dir(cache, camera, image_stride, fine_features)
        build_image_features(demos.frames_of(camera), folder, encoder, batch_size=batch_size, device=device)
        for copy in range(1, augment_copies + 1):
            def transform(frames, start, copy=copy, camera=camera):  # seeded by copy, camera and batch
                seed = int.from_bytes(f"{copy}/{camera}/{start}".encode(), "little") % (2 ** 62)
                return augment_frames(frames, torch.Generator(device=frames.device).manual_seed(seed))

            build_image_features(demos.frames_of(camera), augmented_cache_dir(folder, copy), encoder,
                                 batch_size=batch_size, device=device, transform=transform,
                                 transform_id=f"augment/{copy}/{json.dumps(asdict(AugmentConfig()))}")
    return cache


def fine_tune_defaults(values: dict) -> dict:
    """TrainConfig fields a fine-tune takes from its starting point (``init_from``) where the run does not set them:
    the variant (its language encoder), cameras, image size and stride, horizon and whether it reads the fine cells
    (``fine_features``), so that `nanovla train --data DIR --init-from CHECKPOINT --out OUT` fine-tunes any checkpoint
    as it is. Reads the checkpoint's metadata only."""
    if "init_from" not in values:
        return values
    from nanovla_ros.language.encoders import ENCODER_SPECS
    from nanovla_ros.model.checkpoint import read_metadata

    start = json.loads(read_metadata(values["init_from"])["config"])
    inherited = {"horizon": start["horizon"], "fine_features": bool(start.get("fine_features", False)),
                 "cameras": tuple(start["cameras"]), "image_size": start["image_size"],
                 "image_stride": start["image_stride"]}
    encoder = start["language_encoder_id"].split("@")[0]
    variants = [v for v, backbone in BACKBONE_OF_VARIANT.items() if ENCODER_SPECS[backbone].name == encoder]
    if variants:
        inherited["variant"] = variants[-1]
    return {**inherited, **values}


def run_training(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, resume: bool = True) -> Path:
    from nanovla_ros.language.encoders import ENCODER_SPECS
    from nanovla_ros.model.feature_cache import table_id_for
    from nanovla_ros.training.trainer import train

    demos = load_demonstrations(data_dir, cameras=config.cameras)
    if int(os.environ.get("RANK", "0")) == 0:
        cache = prepare_cache(data_dir, config.device, image_size=config.image_size, cameras=config.cameras,
                              image_stride=config.image_stride, fine_features=config.fine_features,
                              augment_copies=config.augment_copies)
    else:  # under torchrun, rank 0 builds the cache; the others wait for it instead of writing it too
        cache = cache_dir_of(data_dir)
        # cameras are built in order
        last = camera_cache_dir(cache, config.cameras[-1], config.image_stride, config.fine_features)
        index = (augmented_cache_dir(last, config.augment_copies) if config.augment_copies else last) / "index.json"
        deadline = time.monotonic() + 3600.0
        while not (index.is_file() and json.loads(index.read_text()).get("frames") == len(demos.frames)
                   and json.loads(index.read_text()).get("complete")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {os.environ['RANK']}: no feature cache in {cache} after an hour")
            time.sleep(1.0)
    language_id = table_id_for(cache, ENCODER_SPECS[BACKBONE_OF_VARIANT[config.variant]].name)
    # the vectors alone: the final map's own cache need not exist (a stride-16 or fine_features run)
    vectors = instruction_vectors(demos.instructions, cache, language_id)
    assert vectors.shape[1] == ENCODER_SPECS[BACKBONE_OF_VARIANT[config.variant]].dim
    encoder_id = image_encoder_id("efficientnet-lite0", config.image_size, config.image_stride, config.fine_features)
    features = [load_camera_features(cache, c, len(demos.frames), encoder_id, config.image_stride,
                                     config.fine_features)
                for c in config.cameras]
    copies = [[load_camera_features(cache, c, len(demos.frames), encoder_id, config.image_stride,
                                    config.fine_features, copy=k) for c in config.cameras]
              for k in range(1, config.augment_copies + 1)]
    log.info(f"{len(demos.instructions)} episodes, {len(demos.states)} samples, {len(demos.frames)} frames of "
             f"{list(config.cameras)}; NanoVLA-{config.variant.upper()} on {language_id}")
    init_vectors = None
    if config.refit_language:  # the same instructions as the checkpoint's encoder saw them (its table, same id)
        from nanovla_ros.model.checkpoint import read_metadata

        init_id = json.loads(read_metadata(config.init_from)["config"])["language_encoder_id"]
        init_vectors = np.asarray(instruction_vectors(demos.instructions, cache, init_id))
    said = phrasing_rows(demos, cache, language_id) if config.phrasings == "bank" else None
    return train(demos, features, np.asarray(vectors), language_id, config, out_dir, resume=resume,
                 init_instruction_vectors=init_vectors, phrasings=said, augmented_features=copies)


def phrasing_rows(demos, cache: str | Path, language_id: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The instruction table of ``language_id`` and, per episode, the rows that say its task: its own instruction
    and the phrasing bank's training-family sentences of the same kind, cube and target (none for an episode
    without task metadata, e.g. a real arm's bag)."""
    texts, table = read_instruction_table(cache, language_id)
    row = {t: i for i, t in enumerate(texts)}
    rows, missing = [], set()
    for instruction, meta in zip(demos.instructions, demos.meta, strict=True):
        sentences = phrasings.sentences_of(meta.get("task_kind", ""), meta.get("cube", ""), meta.get("target", ""))
        missing |= {t for t in sentences if t not in row}
        rows.append(np.array([row[instruction]] + [row[t] for t in sentences if t in row], np.int64))
    if missing:
        raise ConfigError(f"{len(missing)} phrasing-bank sentences (e.g. {sorted(missing)[0]!r}) have no {language_id!r} "
                          "vector in the cache: write_instruction_tables(cache, texts) with the bank's sentences")
    return np.asarray(table), rows


def export_checkpoint(source: str | Path, destination: str | Path, execute_steps: int | None = None) -> Path:
    """fp16 copy of a trained checkpoint (the normalisation statistics stay fp32), for shipping; ``execute_steps``:
    the h it is meant to run with, declared in it (the policy node and the evaluation take it unless told otherwise)."""
    import torch

    from nanovla_ros.model.checkpoint import load_checkpoint, save_checkpoint

    model, extra = load_checkpoint(source)
    if execute_steps is not None:
        if not 1 <= execute_steps <= model.config.horizon:
            raise ConfigError(f"execute_steps={execute_steps} must be within [1, {model.config.horizon}] (the horizon)")
        extra = {**extra, "execute_steps": execute_steps}
    path = save_checkpoint(model, destination, {**extra, "exported_from": Path(source).name}, dtype=torch.float16)
    log.info(f"{path}: {path.stat().st_size / 1e6:.1f} MB (fp16)")
    return path
