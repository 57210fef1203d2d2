"""The training loop: cached features on the device, batches gathered there (no data-loader workers), AdamW
with warm-up and cosine decay, periodic validation loss and checkpoints, resume, fixed seeds, and several
GPUs through torchrun (DistributedDataParallel; each process draws its own batches).

Checkpoints (``out_dir``): ``last.safetensors`` (the model, self-describing), ``last_state.pt`` (optimiser,
step, RNG) for resume, ``best.safetensors`` (lowest validation L1 over the first
``select_first_steps`` actions of each chunk), ``history.json`` (loss curves).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from nanovla_ros.configuration import ConfigError
from nanovla_ros.data.demos import Demonstrations
from nanovla_ros.model.checkpoint import save_checkpoint
from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
from nanovla_ros.model.modeling_nanovla import NanoVLA, fine_statistics, language_statistics
from nanovla_ros.training.config import TrainConfig

TINY = dict(d_model=32, n_heads=4, ffn_dim=64, enc_layers=1, dec_layers=1, vae_layers=1, latent_dim=8)

log = logging.getLogger(__name__)


class DeviceBatches:
    """Samples of some episodes with their cached features, held on one device; ``batch(idx)`` gathers."""

    def __init__(self, demos: Demonstrations, features: np.ndarray | list[np.ndarray], instruction_vectors: np.ndarray,
                 episodes: np.ndarray, horizon: int, device: torch.device, phrasing_table: np.ndarray | None = None,
                 episode_rows: list[np.ndarray] | None = None,
                 augmented: list[np.ndarray | list[np.ndarray]] | None = None) -> None:
        """``phrasing_table`` (M, L) and ``episode_rows`` (per episode, the rows of the table that say its task, its
        own instruction included): ``batch(..., rephrase=g)`` then gives each sample one of them at random.
        ``augmented``: K augmented copies of ``features`` (each like it): ``batch(..., augment=g)`` gives each
        sample the plain features or one of the copies at random."""
        samples = np.flatnonzero(np.isin(demos.episode, episodes))
        frames = demos.frame_index[samples]
        used, local = np.unique(frames, return_inverse=True)
        to = lambda a, dtype=None: torch.as_tensor(np.ascontiguousarray(a), device=device, dtype=dtype)  # noqa: E731
        versions = [features] + list(augmented or [])  # the plain features, then the augmented copies
        versions = [[v] if isinstance(v, np.ndarray) else v for v in versions]  # one (F, C, h', w') per camera
        # Copied in slices into (K + 1, F', N, C, h', w'): no host copy of the whole set.
        self.versions = torch.empty((len(versions), len(used), len(versions[0])) + versions[0][0].shape[1:],
                                    dtype=torch.float16, device=device)
        for v, cameras in enumerate(versions):
            for k, camera in enumerate(cameras):
                for s in range(0, len(used), 4096):
                    self.versions[v, s:s + 4096, k] = to(np.asarray(camera[used[s:s + 4096]]), torch.float16)
        self.features = self.versions[0]  # (F', N, C, h', w'): the plain ones
        self.frame = to(local, torch.long)
        self.instruction = to(instruction_vectors[demos.episode[samples]], torch.float32)  # (N, L)
        self.state = to(demos.states[samples], torch.float32)
        self.actions = to(demos.actions, torch.float32)  # (M, A), all episodes
        self.start = to(demos.action_index[samples], torch.long)
        self.end = to(demos.action_end[samples], torch.long)
        task_xy_m = demos.task_xy_m[samples] if demos.task_xy_m is not None else np.full((len(samples), 4), np.nan)
        self.task_xy_m = to(task_xy_m, torch.float32)  # (N, 4), NaN rows unknown
        # Colour queries for the task head: every cube's x, y per sample, and the episodes' instructions with the
        # index of the cube each names (those that name a known one).
        cubes = demos.cubes_xy_m[samples] if demos.cubes_xy_m is not None and demos.cubes_xy_m.shape[1] else None
        self.cubes_xy_m = to(cubes.reshape(len(samples), -1, 2), torch.float32) if cubes is not None else None
        named = demos.named_cube[episodes] if demos.named_cube is not None else np.zeros(0, np.int64)
        self.query_instruction = to(instruction_vectors[episodes[named >= 0]], torch.float32)  # (Q, L)
        self.query_cube = to(named[named >= 0], torch.long)  # (Q,)
        # Goal queries: where that instruction's goal is in this scene (a square, or a cube), -1 unknown; the squares
        # of each sample's episode (they do not move).
        no_goal = np.full(len(demos.instructions), -1, np.int64)
        goal_cube = demos.goal_cube if demos.goal_cube is not None else no_goal
        goal_square = demos.goal_square if demos.goal_square is not None else no_goal
        self.query_goal_cube = to(goal_cube[episodes[named >= 0]], torch.long)  # (Q,)
        self.query_goal_square = to(goal_square[episodes[named >= 0]], torch.long)  # (Q,)
        squares = demos.squares_xy_m[demos.episode[samples]] if demos.squares_xy_m is not None else None
        self.squares_xy_m = to(squares, torch.float32) if squares is not None else None  # (N, S, 2)
        self.steps = torch.arange(horizon, device=device)
        self.n = len(samples)
        self.phrasing_table = None
        if phrasing_table is not None:
            width = max(len(r) for r in episode_rows)
            rows = np.zeros((len(episode_rows), width), np.int64)  # (E, K); picks stay below each count
            for e, candidates in enumerate(episode_rows):
                rows[e, :len(candidates)] = candidates
            self.phrasing_table = to(phrasing_table, torch.float32)  # (M, L)
            self.sample_episode = to(demos.episode[samples], torch.long)  # (N,)
            self.episode_rows = to(rows, torch.long)
            self.episode_count = to([len(r) for r in episode_rows], torch.long)  # (E,)

    @property
    def has_queries(self) -> bool:
        return self.cubes_xy_m is not None and len(self.query_cube) > 0

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None,
              rephrase: torch.Generator | None = None, augment: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The samples ``idx``; with a ``generator`` and cube positions, a colour query for each (a random
        episode's instruction and where the cube it names is in this sample's scene); with ``rephrase`` and a
        phrasing table, each sample's instruction is one of its task's sentences, drawn at random."""
        rows = self.start[idx, None] + self.steps[None]  # (B, H)
        end = self.end[idx, None]
        if augment is not None and len(self.versions) > 1:
            version = torch.randint(0, len(self.versions), (len(idx),), device=idx.device, generator=augment)
            image_features = self.versions[version, self.frame[idx]]
        else:
            image_features = self.features[self.frame[idx]]
        out = {"image_features": image_features.float(), "instruction": self.instruction[idx],
               "state": self.state[idx], "actions": self.actions[torch.minimum(rows, end)],
               "action_mask": rows <= end, "task_xy_m": self.task_xy_m[idx]}
        if rephrase is not None and self.phrasing_table is not None:
            episode = self.sample_episode[idx]
            pick = (torch.rand(len(idx), device=idx.device, generator=rephrase) * self.episode_count[episode]).long()
            out["instruction"] = self.phrasing_table[self.episode_rows[episode, pick]]  # (B, L)
        if generator is not None and self.has_queries:
            q = torch.randint(0, len(self.query_cube), (len(idx),), device=idx.device, generator=generator)
            out["query_instruction"] = self.query_instruction[q]
            out["query_xy_m"] = torch.cat([self.cubes_xy_m[idx, self.query_cube[q]], self.query_goal(idx, q)], dim=-1)
            out["query_cube"] = self.query_cube[q]
        return out

    def query_goal(self, idx: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """(B, 2) metres: where query instruction q's goal is in sample idx's scene (the other cube of a stack, the
        named cube of a touch, the square of a pick-and-place), NaN where unknown (a push, no recorded squares)."""
        goal = torch.full((len(idx), 2), float("nan"), device=idx.device)
        cube, square = self.query_goal_cube[q], self.query_goal_square[q]
        by_cube = cube >= 0
        goal[by_cube] = self.cubes_xy_m[idx[by_cube], cube[by_cube]]
        if self.squares_xy_m is not None:
            by_square = square >= 0
            goal[by_square] = self.squares_xy_m[idx[by_square], square[by_square]]
        return goal


def kind_sample_weights(demos: Demonstrations, episodes: np.ndarray, weights: dict[str, float]) -> np.ndarray | None:
    """Sampling weight of each sample of ``episodes`` (in ``DeviceBatches``' order) from its episode's task kind
    (``weights``: {kind: weight}, other kinds 1); None when ``weights`` is empty. A kind named but absent from
    ``episodes`` is an error (a typo would otherwise change nothing)."""
    if not weights:
        return None
    kinds = np.array([(demos.meta[e].get("task_kind") if e < len(demos.meta) else None) or ""
                      for e in range(len(demos.instructions))], dtype=object)  # per episode; "" unknown
    samples = np.flatnonzero(np.isin(demos.episode, episodes))
    sample_kinds = kinds[demos.episode[samples]]
    missing = sorted(k for k in weights if not np.any(sample_kinds == k))
    if missing:
        present = sorted(set(sample_kinds.tolist()) - {""})
        raise ConfigError(f"kind_weights names {missing}, which no training episode has (kinds here: {present})")
    weight = np.ones(len(samples))
    for kind, w in weights.items():
        weight[sample_kinds == kind] = w
    if weight.sum() <= 0:
        raise ConfigError("kind_weights leave every training sample with weight 0")
    return weight


def model_config(config: TrainConfig, language_encoder_id: str, language_dim: int) -> NanoVLAConfig:
    extra = TINY if config.tiny else {}
    return NanoVLAConfig(language_encoder_id=language_encoder_id, language_dim=language_dim, horizon=config.horizon,
                         kl_weight=config.kl_weight, use_state=config.use_state, state_dropout=config.state_dropout,
                         task_loss_weight=config.task_loss_weight, task_token=config.task_token,
                         image_size=config.image_size,
                         image_stride=config.image_stride, fine_features=config.fine_features,
                         language_film=config.language_film,
                         dropout=config.dropout, cameras=config.cameras, **extra)


def noisy_instructions(vectors: torch.Tensor, scale: float, generator: torch.Generator | None) -> torch.Tensor:
    """``vectors`` (B, L) plus Gaussian noise of std ``scale`` times each row's rms."""
    rms = vectors.float().pow(2).mean(dim=-1, keepdim=True).sqrt()
    noise = torch.randn(vectors.shape, device=vectors.device, generator=generator)
    return (vectors.float() + scale * rms * noise).to(vectors.dtype)


def _lr(config: TrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def split_episodes(n_episodes: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n_episodes)
    n_val = int(round(n_episodes * val_fraction)) if val_fraction > 0 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train(demos: Demonstrations, features: np.ndarray | list[np.ndarray], instruction_vectors: np.ndarray,
          language_encoder_id: str, config: TrainConfig, out_dir: str | Path, resume: bool = True,
          progress: bool = True, init_instruction_vectors: np.ndarray | None = None,
          phrasings: tuple[np.ndarray, list[np.ndarray]] | None = None,
          augmented_features: list[list[np.ndarray]] | None = None) -> Path:
    """Train; return the path of the best checkpoint (lowest validation L1 over the chunks' first
    ``config.select_first_steps`` actions; the last without validation). ``init_instruction_vectors``: with
    ``config.refit_language``, each episode's instruction vector from the encoder that ``init_from`` read."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    if distributed:
        torch.distributed.init_process_group("nccl" if config.device == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if config.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    train_eps, val_eps = split_episodes(len(demos.instructions), config.val_fraction, config.seed)
    camera_features = features if isinstance(features, list) else [features]
    # phrasings: (table (M, L), per episode its task's rows): training draws each sample's instruction from them
    train_data = DeviceBatches(demos, features, instruction_vectors, train_eps, config.horizon, device,
                               *(phrasings or (None, None)), augmented=augmented_features or None)
    val_data = DeviceBatches(demos, features, instruction_vectors, val_eps, config.horizon, device) if len(val_eps) else None
    weights = kind_sample_weights(demos, train_eps, config.kind_weight_map())
    sample_weight = None if weights is None else torch.as_tensor(weights, dtype=torch.float32, device=device)
    action_weight = None
    if config.gripper_loss_weight != 1.0:
        action_weight = torch.ones(demos.actions.shape[1], device=device)
        action_weight[-1] = config.gripper_loss_weight  # the gripper is the last joint (LeRobot's SO-101 order)
    if config.init_from:  # fine-tuning: the checkpoint's weights and normalisation
        from nanovla_ros.model.checkpoint import load_checkpoint

        model, lineage = load_checkpoint(config.init_from)  # lineage: how the starting point was made
        if config.refit_language and model.config.language_encoder_id != language_encoder_id:
            if init_instruction_vectors is None:
                raise ConfigError(f"refit_language: the training instructions' {model.config.language_encoder_id!r} "
                                  "vectors are needed (run_training reads them from the cache)")
            model = model.with_other_language_encoder(language_encoder_id, instruction_vectors[train_eps],
                                                init_instruction_vectors[train_eps])
        c = model.config
        mismatched = {k: (getattr(c, k), v) for k, v in (("language_encoder_id", language_encoder_id),
                      ("image_stride", config.image_stride), ("cameras", config.cameras)) if getattr(c, k) != v}
        if config.horizon > c.horizon:
            mismatched["horizon"] = (c.horizon, config.horizon)
        if c.fine_features and not config.fine_features:
            mismatched["fine_features"] = (True, False)
        if mismatched:
            raise ConfigError(f"init_from={config.init_from!r} does not match this run (checkpoint, run): {mismatched}")
        # a fine-tune runs as its starting point declared it does (nanovla export --execute-steps), unless its
        # horizon changed (the fixed-chunking arms: exported with their own h)
        inherited_h = lineage.get("execute_steps") if config.horizon == c.horizon else None
        if config.horizon < c.horizon:
            model = model.shorter_horizon(config.horizon)
        if config.image_size != c.image_size:  # e.g. a cheaper input for a slow host (no weight depends on it)
            model = model.with_image_size(config.image_size)
        fine_is_new = config.fine_features and not c.fine_features
        if fine_is_new:
            model = model.with_fine_features()
        if config.task_token and not c.task_token:
            model = model.with_task_token()
    else:
        inherited_h = None
        lineage = None
        model = NanoVLA(model_config(config, language_encoder_id, instruction_vectors.shape[1]))
        samples = np.flatnonzero(np.isin(demos.episode, train_eps))
        targets = demos.actions[demos.action_index[samples]]
        task_stats = (None, None)
        if config.task_loss_weight > 0:
            known = demos.task_xy_m[samples] if demos.task_xy_m is not None else np.zeros((0, 4))
            known = known[np.isfinite(known).all(axis=1)]
            if len(known) == 0:
                raise ConfigError("task_loss_weight > 0 needs episodes that record the task's positions (task_xy_m: "
                                  "simulated episodes do, bags of a real arm do not)")
            task_stats = (known.mean(0), known.std(0))
        model.set_normalization(demos.states[samples].mean(0), demos.states[samples].std(0), targets.mean(0),
                                targets.std(0), *language_statistics(instruction_vectors[train_eps]), *task_stats)
        fine_is_new = config.fine_features
    if fine_is_new:  # the fine cells' standardisation, from this run's features (a fine-tune of a fine model keeps its)
        fine_mean, fine_std = fine_statistics(camera_features, model.config.fine_feature_dim)
        model.set_normalization(None, None, None, None, fine_mean=fine_mean, fine_std=fine_std)
    model.to(device)
    # the fine cells' projection may learn faster than the rest (fine_lr_scale): a group of its own, whose lr the
    # schedule scales
    fine_params = [] if model.fine_proj is None else list(model.fine_proj.parameters())
    token_params = [] if model.task_token_proj is None else list(model.task_token_proj.parameters())
    own_ids = {id(p) for p in fine_params + token_params}
    groups = [{"params": [p for p in model.parameters() if id(p) not in own_ids], "lr_scale": 1.0}]
    if fine_params:
        groups.append({"params": fine_params, "lr_scale": config.fine_lr_scale})
    if token_params:
        groups.append({"params": token_params, "lr_scale": config.task_token_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    # "model": the settings in force; fine-tuning keeps the checkpoint's (task head, dropout, ...), whatever the
    # run's own fields say, so "config" alone would misreport such a run.
    history = {"train": [], "val": [], "config": config.to_dict(), "model": model.config.to_dict(),
               "train_episodes": len(train_eps),
               "val_episodes": len(val_eps), "train_samples": train_data.n}
    step, best = 0, float("inf")
    state_path = out / "last_state.pt"
    if resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best, history = state["step"], state["best"], state["history"]
        torch.set_rng_state(state["rng_cpu"].cpu())  # map_location moved it to the device
        if rank == 0:
            log.info(f"resumed at step {step} from {state_path}")
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else model
    generator = torch.Generator(device=device).manual_seed(config.seed * 1000 + rank + step)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (config.bf16 and device.type == "cuda") else _Null()

    query_generator = torch.Generator(device=device).manual_seed(config.seed)  # the same queries each validation
    first = min(config.select_first_steps or model.config.horizon, model.config.horizon)
    selection_key = f"l1_first_{first}"  # best.safetensors is chosen on it

    def validate() -> tuple[float, dict]:
        """(action L1, normalised, z = 0 as deployed; the task head's figures: median error to the named cube and to
        its goal, cm, and for colour queries the median error, how often the answer is nearest the asked cube, and
        the median error to the queried instruction's goal)."""
        model.eval()
        losses, first_losses = [], []
        cube_errors, goal_errors, query_errors, query_hits, query_goal_errors = [], [], [], [], []
        query_generator.manual_seed(config.seed)
        with torch.no_grad(), autocast:
            for start in range(0, val_data.n, 512):
                idx = torch.arange(start, min(val_data.n, start + 512), device=device)
                b = val_data.batch(idx, query_generator if model.task_head is not None else None)
                pred_n, _ = model(b["image_features"], b["instruction"], b["state"])  # z = 0, as deployed
                target_n = (b["actions"] - model.action_mean) / model.action_std
                mask = b["action_mask"][..., None].float()
                error = (pred_n.float() - target_n).abs() * mask  # (b, H, A)
                losses.append(float(error.sum() / (mask.sum() * target_n.shape[-1])) * len(idx))
                first_mask = mask[:, :first].sum().clamp(min=1) * target_n.shape[-1]
                first_losses.append(float(error[:, :first].sum() / first_mask) * len(idx))
                if model.task_head is None:
                    continue
                placed = torch.isfinite(b["task_xy_m"]).all(dim=-1)  # samples that recorded positions
                if bool(placed.any()):
                    xy = model.predict_task_xy(b["image_features"][placed], b["instruction"][placed],
                                               b["state"][placed])  # (b, 4)
                    cube_errors.append((xy[:, :2].float() - b["task_xy_m"][placed, :2]).norm(dim=-1))
                    goal_errors.append((xy[:, 2:].float() - b["task_xy_m"][placed, 2:]).norm(dim=-1))
                if "query_xy_m" in b:
                    cubes = val_data.cubes_xy_m[idx]  # (b, K, 2)
                    placed = torch.isfinite(cubes).all(dim=-1).all(dim=-1)
                    answer = model.predict_task_xy(b["image_features"][placed], b["query_instruction"][placed],
                                                   b["state"][placed]).float()  # (b, 4)
                    distances = (answer[:, None, :2] - cubes[placed]).norm(dim=-1)  # (b, K)
                    asked = b["query_cube"][placed]
                    query_errors.append(distances.gather(1, asked[:, None])[:, 0])
                    query_hits.append((distances.argmin(dim=1) == asked).float())
                    goal = b["query_xy_m"][placed, 2:]
                    known = torch.isfinite(goal).all(dim=-1)  # not for pushes, nor squares never recorded
                    query_goal_errors.append((answer[known, 2:] - goal[known]).norm(dim=-1))
        model.train()
        head = {}
        if cube_errors:
            head["task_cube_cm"] = float(torch.cat(cube_errors).median()) * 100
            head["task_goal_cm"] = float(torch.cat(goal_errors).median()) * 100
        if query_errors:
            head["query_cube_cm"] = float(torch.cat(query_errors).median()) * 100
            head["query_nearest"] = float(torch.cat(query_hits).mean())
        if query_goal_errors and len(torch.cat(query_goal_errors)):
            head["query_goal_cm"] = float(torch.cat(query_goal_errors).median()) * 100
        head[selection_key] = sum(first_losses) / val_data.n
        return sum(losses) / val_data.n, head

    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=step, desc=f"train NanoVLA-{config.variant.upper()}", unit="step")
    model.train()
    started = time.time()
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step) * group.get("lr_scale", 1.0)  # a state saved before groups had one
        if sample_weight is None:
            idx = torch.randint(0, train_data.n, (config.batch_size,), device=device, generator=generator)
        else:
            idx = torch.multinomial(sample_weight, config.batch_size, replacement=True, generator=generator)
        b = train_data.batch(idx, generator if model.task_head is not None else None,
                             rephrase=generator if train_data.phrasing_table is not None else None,
                             augment=generator if len(train_data.versions) > 1 else None)
        if config.instruction_noise > 0:
            b["instruction"] = noisy_instructions(b["instruction"], config.instruction_noise, generator)
        with autocast:
            _, loss = ddp(b["image_features"], b["instruction"], b["state"], b["actions"], b["action_mask"],
                          task_xy_m=b["task_xy_m"], query_instruction=b.get("query_instruction"),
                          query_xy_m=b.get("query_xy_m"), action_weight=action_weight)
        optimizer.zero_grad(set_to_none=True)
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        if step % 50 == 0:
            recon, kl = float(loss["recon"]), float(loss["kl"])
            head = {k: float(loss[k]) for k in ("task", "query") if k in loss}
            fine = {} if model.fine_proj is None else {  # how far the fine cells' weights have come from zero
                "fine_weight_rms": float(model.fine_proj.weight.pow(2).mean().sqrt())}
            history["train"].append({"step": step, "recon_l1": recon, "kl": kl,
                                     **{f"{k}_l1": v for k, v in head.items()}, **fine})
            if bar is not None:
                bar.set_postfix(l1=f"{recon:.3f}", kl=f"{kl:.3f}", **{k: f"{v:.3f}" for k, v in head.items()})
        if bar is not None:
            bar.update(1)
        if step % config.val_every == 0 or step == config.steps:
            if rank == 0:
                extra = {"train": config.to_dict(), "step": step}
                if lineage is not None:  # fine-tuned: the model's settings are the starting checkpoint's
                    extra["init"] = lineage
                if config.execute_steps or inherited_h:  # the h this checkpoint declares it executes
                    extra["execute_steps"] = config.execute_steps or inherited_h
                if val_data is not None:
                    val, head = validate()
                    history["val"].append({"step": step, "l1": val, **head})
                    extra["val_l1"] = val
                    selected = head[selection_key]
                    extra["val_selected"] = {"metric": selection_key, "value": selected}
                    if selected < best:
                        best = selected
                        save_checkpoint(model, out / "best.safetensors", extra)
                    if bar is not None:
                        words = ""
                        if "task_cube_cm" in head:
                            words += (f"; task head: named cube within {head['task_cube_cm']:.1f} cm, its goal within "
                                      f"{head['task_goal_cm']:.1f} cm (medians)")
                        if "query_cube_cm" in head:
                            words += (f", colour queries {head['query_cube_cm']:.1f} cm, nearest the asked cube "
                                      f"{100 * head['query_nearest']:.0f} %")
                        if "query_goal_cm" in head:
                            words += f", their goals {head['query_goal_cm']:.1f} cm"
                        bar.write(f"[train] step {step}: validation L1 {val:.4f}, over the first actions "
                                  f"{selected:.4f} (best {best:.4f}){words}")
                save_checkpoint(model, out / "last.safetensors", extra)
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                            "best": best, "history": history, "rng_cpu": torch.get_rng_state()}, state_path)
                (out / "history.json").write_text(json.dumps(history, indent=1))
    if bar is not None:
        bar.close()
        log.info(f"{config.steps} steps in {time.time() - started:.0f} s")
    if distributed:
        torch.distributed.destroy_process_group()
    return out / ("best.safetensors" if (out / "best.safetensors").is_file() else "last.safetensors")


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
