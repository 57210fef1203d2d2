"""Training of the early-fusion baseline (``nanovla_ros.model.early_fusion``) on the same cached data as NanoVLA
(no ROS): the same episodes, the same frozen image features (the stride-32 map), the same validation split; each
sample's instruction as token ids of the language model's tokenizer. Only the projections, embeddings, action
queries and head train; the language model runs frozen forward and backward."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from nanovla_ros.configuration import require
from nanovla_ros.data.demos import load_demonstrations
from nanovla_ros.model.configuration_early_fusion import EarlyFusionConfig
from nanovla_ros.model.early_fusion import EarlyFusionPolicyModel, save_early_fusion, tokenize
from nanovla_ros.training.config import EarlyFusionTrainConfig
from nanovla_ros.training.trainer import DeviceBatches, split_episodes

log = logging.getLogger(__name__)


def train_early_fusion(data_dir: str | Path, out_dir: str | Path, model_config: EarlyFusionConfig,
                       config: EarlyFusionTrainConfig, tokenizer, lm: torch.nn.Module | None = None,
                       progress: bool = True) -> Path:
    """Train on ``data_dir``'s episodes and cached stride-32 features of ``model_config``'s cameras and image size
    (``nanovla_ros.training.pipeline.prepare_cache``); the best checkpoint (validation L1) is ``out_dir/best.safetensors``
    and the last ``out_dir/last.safetensors``. Returns the best's path (the last's without validation)."""
    return train_early_fusion_readouts(data_dir, {model_config.readout: out_dir}, model_config, config, tokenizer, lm,
                                       progress)[model_config.readout]


def train_early_fusion_readouts(data_dir: str | Path, outs: dict[str, str | Path], model_config: EarlyFusionConfig,
                                config: EarlyFusionTrainConfig, tokenizer, lm: torch.nn.Module | None = None,
                                progress: bool = True) -> dict[str, Path]:
    """One model per readout of ``outs`` ({readout: out_dir}), trained in lockstep: the same batches, one copy of the
    cached features and of the frozen language model on the device, each its own optimiser and checkpoints (as
    ``train_early_fusion``). Returns {readout: best checkpoint}."""
    from dataclasses import replace

    from nanovla_ros.model.configuration_nanovla import image_encoder_id
    from nanovla_ros.model.early_fusion import build_language_model
    from nanovla_ros.model.feature_cache import load_camera_features
    from nanovla_ros.training.pipeline import cache_dir_of

    device = torch.device(config.device)
    torch.manual_seed(config.seed)
    outs = {readout: Path(out) for readout, out in outs.items()}
    for out in outs.values():
        out.mkdir(parents=True, exist_ok=True)
    demos = load_demonstrations(data_dir, cameras=model_config.cameras)
    encoder = image_encoder_id("efficientnet-lite0", model_config.image_size, 32, False)
    features = [load_camera_features(cache_dir_of(data_dir), camera, len(demos.frames), encoder)
                for camera in model_config.cameras]
    require(features[0].shape[1] == model_config.image_channels and features[0].shape[-1] == model_config.grid,
            f"cached features {features[0].shape[1:]} do not fit the model ({model_config.image_channels} channels, "
            f"{model_config.grid} x {model_config.grid})")
    ids, mask = tokenize(list(demos.instructions), tokenizer, model_config.max_instruction_tokens)  # (E, T) each
    train_eps, val_eps = split_episodes(len(demos.instructions), config.val_fraction, config.seed)
    placeholder = np.zeros((len(demos.instructions), 1), np.float32)  # the instruction travels as tokens instead

    def batches(episodes: np.ndarray) -> tuple[DeviceBatches, torch.Tensor, torch.Tensor]:
        data = DeviceBatches(demos, features, placeholder, episodes, model_config.horizon, device)
        episode = demos.episode[np.flatnonzero(np.isin(demos.episode, episodes))]  # per sample, in DeviceBatches' order
        return data, torch.as_tensor(ids[episode], device=device), torch.as_tensor(mask[episode], device=device)

    train_data, train_ids, train_mask = batches(train_eps)
    val = batches(val_eps) if len(val_eps) else None
    lm = (lm if lm is not None else build_language_model(model_config)).to(device)
    samples = np.flatnonzero(np.isin(demos.episode, train_eps))
    actions = demos.actions[demos.action_index[samples]]
    generator = torch.Generator(device=device).manual_seed(config.seed)
    autocast = dict(device_type="cuda", dtype=torch.bfloat16, enabled=config.bf16 and device.type == "cuda")
    record = {"train": asdict(config), "data": str(data_dir),
              "episodes": len(demos.instructions), "samples": int(len(samples))}
    arms = []
    for readout, out in outs.items():
        torch.manual_seed(config.seed)  # each readout starts as it would alone
        model = EarlyFusionPolicyModel(replace(model_config, readout=readout), lm).to(device)
        model.set_normalization(demos.states[samples].mean(0), demos.states[samples].std(0) + 1e-3,
                                actions.mean(0), actions.std(0) + 1e-3)
        trained = [p for n, p in model.named_parameters() if not n.startswith("lm.")]
        optimiser = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps))
            * 0.5 * (1 + np.cos(np.pi * min(1.0, s / config.steps))))
        arms.append(dict(readout=readout, out=out, model=model, trained=trained, optimiser=optimiser,
                         schedule=schedule, history=[], best=float("inf"), seconds=0.0))

    def loss_of(model, data: DeviceBatches, ids_t: torch.Tensor, mask_t: torch.Tensor, idx: torch.Tensor):
        b = data.batch(idx)
        with torch.autocast(**autocast):
            _, loss = model(b["image_features"], ids_t[idx], mask_t[idx], b["state"], b["actions"], b["action_mask"])
        return loss

    def validate(model) -> float:
        data, ids_v, mask_v = val
        model.eval()
        with torch.no_grad():
            losses = [loss_of(model, data, ids_v, mask_v,
                              torch.arange(s, min(s + config.batch_size, data.n), device=device)).item()
                      for s in range(0, data.n, config.batch_size)]
        model.train()
        return float(np.mean(losses))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, desc=f"train early fusion ({', '.join(outs)})", unit="step")
    for arm in arms:
        arm["model"].train()
        if val is not None:  # where it starts, for the record
            arm["history"].append({"step": 0, "val_l1": validate(arm["model"]), "seconds": 0.0})
    for step in range(1, config.steps + 1):
        idx = torch.randint(0, train_data.n, (config.batch_size,), device=device, generator=generator)
        losses = []
        for arm in arms:
            start = time.monotonic()
            loss = loss_of(arm["model"], train_data, train_ids, train_mask, idx)
            arm["optimiser"].zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(arm["trained"], 10.0)
            arm["optimiser"].step()
            arm["schedule"].step()
            losses.append(loss.item())  # also waits for the step, so that its seconds are its own
            arm["seconds"] += time.monotonic() - start
        if bar is not None:
            bar.update(1)
            bar.set_postfix(l1=" ".join(f"{v:.3f}" for v in losses))
        if step % config.val_every == 0 or step == config.steps:
            for arm, loss in zip(arms, losses, strict=True):
                entry = {"step": step, "train_l1": loss, "seconds": arm["seconds"]}
                if val is not None:
                    entry["val_l1"] = validate(arm["model"])
                    if entry["val_l1"] < arm["best"]:
                        arm["best"] = entry["val_l1"]
                        save_early_fusion(arm["model"], arm["out"] / "best.safetensors",
                                          {**record, "step": step, "val_l1": arm["best"],
                                           "train_seconds": arm["seconds"]})
                arm["history"].append(entry)
                log.info(json.dumps({"readout": arm["readout"], **entry}))
    if bar is not None:
        bar.close()
    for arm in arms:
        save_early_fusion(arm["model"], arm["out"] / "last.safetensors",
                          {**record, "step": config.steps, "train_seconds": arm["seconds"]})
        (arm["out"] / "history.json").write_text(json.dumps(arm["history"], indent=1))
    return {arm["readout"]: arm["out"] / ("best.safetensors" if val is not None else "last.safetensors")
            for arm in arms}
