"""Training configuration."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from nanovla_ros.configuration import param, require, require_choice
from nanovla_ros.model.configuration_nanovla import IMAGE_STRIDES

# The fine cells' projection learns this many times faster than the rest by default: at the base lr its
# zero-initialised weights stay near zero through a fine-tune and the fine cells change nothing.
FINE_LR_SCALE = 30.0


@dataclass(frozen=True)
class TrainConfig:
    variant: str = param("s", "Model: s (NanoVLA-S, MiniLM instruction vectors) or l (NanoVLA-L, Gemma-3-270M).")
    horizon: int = param(100, "H: actions predicted per pass (the chunk).")
    augment_copies: int = param(0, "K augmented copies of every frame's features (nanovla_ros.model.augment: colour "
                                   "jitter, small shifts and rotations, noise, before the frozen encoder), cached "
                                   "once; training draws one of the K + 1 per sample. 0: the plain features only.")
    phrasings: str = param("templates", "Instructions the model is trained on: templates (each episode's own) or "
                                        "bank: each sample's drawn at random from its own and the phrasing bank's "
                                        "training-family sentences of the same task (nanovla_ros.phrasings; their "
                                        "vectors must be in the cache's instruction table).")
    instruction_noise: float = param(0.0, "Std of Gaussian noise added to each training sample's instruction "
                                          "vector, as a fraction of that vector's rms (0: none): the policy is "
                                          "made to act alike on vectors near the phrasings it saw, as an unseen "
                                          "phrasing of the same task gives.")
    execute_steps: int = param(0, "h: actions of each chunk the trained checkpoint declares it executes before the "
                                  "next (the policy node and the evaluation run it); <= horizon. 0: the init_from "
                                  "checkpoint's when the horizon is unchanged, else none declared (10 is used).")
    steps: int = param(20000, "Optimiser steps.")
    batch_size: int = param(128, "Samples per step (per process under torchrun).")
    lr: float = param(1e-4, "Peak learning rate (AdamW), after linear warm-up, cosine decay to 10 %.")
    weight_decay: float = param(1e-4, "AdamW weight decay.")
    warmup_steps: int = param(500, "Linear warm-up steps.")
    grad_clip: float = param(10.0, "Gradient-norm clip.")
    kl_weight: float = param(10.0, "CVAE KL weight (ACT's 10).")
    val_fraction: float = param(0.1, "Fraction of episodes held out for the validation loss.")
    val_every: int = param(1000, "Steps between validation losses (and checkpoints).")
    select_first_steps: int = param(20, "best.safetensors is the checkpoint with the lowest validation L1 over the "
                                        "first this many actions of each chunk (what the driver executes: h plus the "
                                        "chunk's delay), not over the whole horizon, whose far end dominates it "
                                        "and picks early, undertrained steps. 0: all H.")
    seed: int = param(0, "Seed of the split, the initialisation and the batches.")
    device: str = param("cuda", "cuda or cpu.")
    bf16: bool = param(True, "bfloat16 autocast on CUDA.")
    tiny: bool = param(False, "A tiny randomly initialised transformer (tests, CPU smoke runs).")
    use_state: bool = param(True, "Feed the joint state to the model (False: image and instruction only).")
    state_dropout: float = param(0.0, "Probability of zeroing a sample's joint-state token in training (0: never).")
    task_loss_weight: float = param(0.0, "Weight of the auxiliary task head's losses (NanoVLAConfig.task_loss_weight): "
                                         "the named cube's and its goal's x, y from the fused instruction token, and "
                                         "colour queries (where another instruction's cube is in the same scene). "
                                         "Needs episodes that record positions (simulated ones do); 0: no head; the "
                                         "shipped checkpoint used 1.")
    image_size: int = param(224, "Image encoder input, pixels (frames are resized to it). 320 gives a 10x10 "
                                 "feature map instead of 7x7: finer cube positions.")
    image_stride: int = param(32, "Frozen feature map the model reads: 32 (final) or 16 (the last stride-16 stage: "
                                  "a 20x20 grid at 320 px, finer cube positions at a quarter of the channels).")
    fine_features: bool = param(False, "Tokens also read the stride-16 map under them (NanoVLAConfig.fine_features; "
                                       "image_stride 32). From a checkpoint without them (init_from) the new input "
                                       "weights start at zero: the fine-tune starts as the checkpoint was.")
    fine_lr_scale: float = param(FINE_LR_SCALE, "Learning rate of the fine cells' projection (fine_features) as a "
                                 "multiple of lr. At 1 (lr 5e-5, 3000 steps) those zero-initialised weights grow "
                                 "to an rms of about 0.003 against the final map's projection's 0.02 and change "
                                 "nothing in closed loop; at 30 they reach about 0.04 and lift every task.")
    task_token: bool = param(False, "The task head's answer (the named cube's and its goal's x, y) starts every action "
                                    "slot of the decoder (NanoVLAConfig.task_token; needs the task head). From a "
                                    "checkpoint without it (init_from) the new projection starts at zero: the "
                                    "fine-tune starts as the checkpoint was.")
    task_token_lr_scale: float = param(30.0, "Learning rate of the task token's projection as a multiple of lr (a "
                                             "zero-initialised input, as fine_lr_scale).")
    refit_language: bool = param(False, "init_from read another language encoder (NanoVLA-S -> -L or back): keep "
                                         "every other weight and refit the instruction projection by ridge "
                                         "regression, so that this run's encoder's vectors of the training "
                                         "instructions give the tokens the checkpoint's encoder's gave "
                                         "(NanoVLA.with_other_language_encoder).")
    language_film: bool = param(False, "FiLM-condition the image tokens on the instruction (NanoVLAConfig.language_film). "
                                       "Off by default: it learned the colour faster but ended no better, and with "
                                       "the task head it did worse in closed loop.")
    dropout: float = param(0.1, "Dropout in the transformer (attention and FFN).")
    init_from: str = param("", "Checkpoint to start from (fine-tuning, e.g. on DAgger data): its weights, its "
                               "normalisation and its model settings (task head, dropout, FiLM, ...: history.json's "
                               "\"model\" records them) are kept; cameras must match it (image_size may differ: the "
                               "image tokens' positions are a sinusoidal table), and "
                               "horizon may be shorter than its (the fixed-chunking arm of the chunking ablation: "
                               "the first horizon action slots are kept).")
    cameras: tuple[str, ...] = param(("front",), "Cameras the model reads (front; front and wrist: the wrist view "
                                                 "shows the cube between the jaws, where the front view is coarse).")
    gripper_loss_weight: float = param(1.0, "Weight of the gripper (the last action dimension) in the action loss, "
                                            "against 1 for each arm joint; the loss is divided by the weights' sum. "
                                            "Above 1: the jaws' timing counts more (meant for stacking's early "
                                            "releases; at 3 the gain was within the evaluation's noise).")
    kind_weights: tuple[str, ...] = param((), "Sampling weight per task kind, as 'kind=weight' (e.g. 'stack=2': a "
                                              "stacking sample is drawn twice as often as one of a kind not named, "
                                              "weight 1); episodes without a task kind weigh 1. Validation is "
                                              "unweighted. Empty: every sample alike.")

    def __post_init__(self) -> None:
        require_choice("variant", self.variant, ("s", "l"))
        require(self.select_first_steps >= 0, f"select_first_steps={self.select_first_steps} must be >= 0")
        require(0 <= self.execute_steps <= self.horizon,
                f"execute_steps={self.execute_steps} must be within [0, horizon={self.horizon}] (0: inherited)")
        for name in ("horizon", "steps", "batch_size", "val_every"):
            require(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        require(self.lr > 0, f"lr={self.lr} must be > 0")
        require(self.image_size >= 32, f"image_size={self.image_size} must be >= 32")
        require(len(self.cameras) >= 1 and self.cameras[0] == "front" and len(set(self.cameras)) == len(self.cameras),
                f"cameras={self.cameras!r}: front first, each camera once")
        require_choice("image_stride", self.image_stride, IMAGE_STRIDES)
        require(not self.fine_features or self.image_stride == 32,
                f"fine_features adds the stride-16 map to the stride-32 tokens: image_stride={self.image_stride} "
                "must be 32")
        require(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be within [0, 1)")
        require(0.0 <= self.state_dropout <= 1.0, f"state_dropout={self.state_dropout} must be within [0, 1]")
        require(self.task_loss_weight >= 0.0, f"task_loss_weight={self.task_loss_weight} must be >= 0")
        require(self.task_token_lr_scale > 0, f"task_token_lr_scale={self.task_token_lr_scale} must be > 0")
        require(0.0 <= self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be within [0, 1)")
        require_choice("device", self.device, ("cuda", "cpu"))
        require_choice("phrasings", self.phrasings, ("templates", "bank"))
        require(0.0 <= self.instruction_noise <= 2.0, f"instruction_noise={self.instruction_noise} must be within [0, 2]")
        require(0 <= self.augment_copies <= 16, f"augment_copies={self.augment_copies} must be within [0, 16]")
        require(self.fine_lr_scale > 0.0, f"fine_lr_scale={self.fine_lr_scale} must be > 0")
        require(self.fine_features or self.fine_lr_scale in (1.0, FINE_LR_SCALE),  # the default and 1 say nothing
                f"fine_lr_scale={self.fine_lr_scale} scales the fine cells' learning rate: it needs fine_features")
        require(not self.refit_language or bool(self.init_from),
                "refit_language refits a checkpoint's instruction projection: it needs init_from")
        require(self.gripper_loss_weight > 0.0, f"gripper_loss_weight={self.gripper_loss_weight} must be > 0")
        self.kind_weight_map()  # validates

    def kind_weight_map(self) -> dict[str, float]:
        """``kind_weights`` as {kind: weight}."""
        weights = {}
        for item in self.kind_weights:
            kind, sep, value = item.partition("=")
            try:
                weight = float(value)
            except ValueError:
                weight = float("nan")
            require(sep == "=" and kind != "" and weight >= 0.0,
                    f"kind_weights entry {item!r} is not 'kind=weight' with a weight >= 0")
            require(kind not in weights, f"kind_weights names {kind!r} twice")
            weights[kind] = weight
        return weights

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EarlyFusionTrainConfig:
    steps: int = param(3000, "Optimiser steps.")
    batch_size: int = param(64, "Samples per step.")
    lr: float = param(3e-4, "AdamW learning rate of the trained parts (cosine decay after warm-up).")
    warmup_steps: int = param(100, "Linear warm-up steps.")
    weight_decay: float = param(1e-4, "AdamW weight decay.")
    val_fraction: float = param(0.1, "Episodes held out for validation (the same split as NanoVLA's at the same seed).")
    val_every: int = param(500, "Steps between validations; the best validation L1 is kept.")
    seed: int = param(0, "Seed of the split, the initialisation and the batches.")
    device: str = param("cpu", "cpu or cuda.")
    bf16: bool = param(True, "bf16 autocast on cuda.")

    def __post_init__(self) -> None:
        require(self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1")
        require(0.0 <= self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be within [0, 1)")
