"""NanoVLA configuration: every size of the paper's architecture (appendix A.1) in one dataclass."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from nanovla_ros.configuration import ConfigError, param, require, require_choice

IMAGE_ENCODERS = ("efficientnet-lite0", "resnet18")
IMAGE_STRIDES = (32, 16)
# Channels of each encoder's feature map per stride: 32 is its final map (EfficientNet-Lite0's 1x1 head
# convolution, ResNet-18's layer4), 16 the output of its last stride-16 stage (block 10 / layer3).
IMAGE_FEATURE_DIMS = {("efficientnet-lite0", 32): 1280, ("efficientnet-lite0", 16): 112,
                      ("resnet18", 32): 512, ("resnet18", 16): 256}


@dataclass(frozen=True)
class NanoVLAConfig:
    # --- frozen encoders (their ids are recorded in checkpoints)
    image_encoder: str = param("efficientnet-lite0", f"Frozen image encoder: {list(IMAGE_ENCODERS)}.")
    image_weights_path: str = param("", "Local weights for resnet18 (EfficientNet-Lite0's ship in a package).")
    image_size: int = param(224, "Square input resolution of the image encoder, pixels.")
    image_stride: int = param(32, "Which feature map of the frozen encoder becomes tokens, by its downsampling: 32 "
                                  "(the final map: 10x10 tokens at 320 px) or 16 (the last stride-16 stage: 20x20 "
                                  "tokens, placing the cubes about twice as precisely).")
    fine_features: bool = param(False, "With image_stride 32 (EfficientNet-Lite0): each token also reads the 2x2 "
                                       "cells of the stride-16 map under it (space to depth: 4 x 112 channels more), "
                                       "standardised per channel (statistics of the training features, in the "
                                       "checkpoint), through projection weights that start at zero, so a model "
                                       "fine-tuned from one without them starts where it was. For placement finer "
                                       "than a 10x10 grid's 32 px cells.")
    cameras: tuple[str, ...] = param(("front",), "Cameras whose frames the model reads, in token order (each one's "
                                                 "feature map becomes tokens; several get a learned camera embedding).")
    language_encoder_id: str = param("", "Id of the frozen language encoder whose pooled vectors this model reads.")
    language_dim: int = param(768, "Width of the pooled instruction vector (768 MiniLM: two layers' means; 640 "
                                   "Gemma-3-270M).")
    language_film: bool = param(False, "Condition the image tokens on the instruction before fusion (FiLM: a per-channel "
                                       "scale and shift from the instruction vector, as RT-1's FiLM-EfficientNet but "
                                       "after the frozen encoder), so that the instruction can single out the asked "
                                       "cube's colour. Off unless asked for (TrainConfig.language_film).")
    # --- late-fusion transformer
    d_model: int = param(256, "Token width D.")
    n_heads: int = param(8, "Attention heads.")
    ffn_dim: int = param(1024, "Feed-forward width.")
    enc_layers: int = param(4, "L_enc: pre-norm encoder layers over image, instruction, state and latent tokens.")
    dec_layers: int = param(4, "Decoder layers (self-attention, cross-attention to the encoder memory, FFN).")
    dropout: float = param(0.1, "Dropout in attention and FFN.")
    state_dim: int = param(6, "Joint-state width (SO-101: 6, radians).")
    use_state: bool = param(True, "Feed the joint state as a token. False leaves it at zero (an experiment against "
                                  "copycat behaviour: commands at 30 Hz are predictable from the state alone).")
    state_dropout: float = param(0.0, "Training only: the probability that a sample's joint-state token is zeroed, "
                                      "so that the commands must also be read from the images and the instruction "
                                      "(against the copycat shortcut).")
    action_dim: int = param(6, "Action width: joint position targets (radians).")
    env_dim: int = param(0, "Width of an optional environment vector (0 = no env token).")
    horizon: int = param(100, "H_train: actions predicted per pass.")
    # --- CVAE (ACT-style)
    latent_dim: int = param(32, "Width of the latent z.")
    vae_layers: int = param(4, "Layers of the posterior encoder over (state, action chunk).")
    kl_weight: float = param(10.0, "beta: weight of KL(q || N(0, I)).")
    loss: str = param("l1", "Reconstruction loss over valid steps: l1 or l2.")
    # --- auxiliary task head (training signal only; inference does not need it)
    task_loss_weight: float = param(0.0, "Weight of an auxiliary loss: a head on the encoded instruction token predicts "
                                         "the x, y of the cube the instruction names and of its goal (L1, normalised), "
                                         "so that the fused tokens must single out the asked cube (without it, trained "
                                         "policies ignored the colour word). 0: no head.")
    task_token: bool = param(False, "Feed the task head's answer (the named cube's and its goal's x, y) to the action "
                                    "decoder: a projection of it starts every action slot, so the actions are told "
                                    "where to go by the part of the model that reads the instruction against the "
                                    "scene. The head is trained by its own loss only (the answer is detached). Needs "
                                    "task_loss_weight > 0.")

    def __post_init__(self) -> None:
        require_choice("image_encoder", self.image_encoder, IMAGE_ENCODERS)
        require(len(self.cameras) >= 1 and len(set(self.cameras)) == len(self.cameras),
                f"cameras={self.cameras!r} must name at least one camera, each once")
        require(self.image_size >= 32, f"image_size={self.image_size} must be >= 32")
        require_choice("image_stride", self.image_stride, IMAGE_STRIDES)
        require(self.d_model % self.n_heads == 0, f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        require(self.d_model % 4 == 0, f"d_model={self.d_model} must be divisible by 4 (2D sinusoidal embeddings)")
        for name in ("language_dim", "d_model", "ffn_dim", "enc_layers", "dec_layers", "state_dim", "action_dim",
                     "horizon", "latent_dim", "vae_layers"):
            require(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        require(not self.task_token or self.task_loss_weight > 0, "task_token needs a task head (task_loss_weight > 0)")
        require(self.env_dim >= 0, f"env_dim={self.env_dim} must be >= 0")
        require(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be within [0, 1)")
        require(0.0 <= self.state_dropout <= 1.0, f"state_dropout={self.state_dropout} must be within [0, 1]")
        require(self.kl_weight >= 0.0, f"kl_weight={self.kl_weight} must be >= 0")
        require(self.task_loss_weight >= 0.0, f"task_loss_weight={self.task_loss_weight} must be >= 0")
        require_choice("loss", self.loss, ("l1", "l2"))
        require(not self.fine_features or (self.image_stride == 32 and self.image_encoder == "efficientnet-lite0"),
                "fine_features adds the stride-16 map to the stride-32 tokens of efficientnet-lite0: it needs "
                f"image_stride=32 and that encoder (got {self.image_stride}, {self.image_encoder!r})")
        require(not self.fine_features or self.image_size % 32 == 0,
                f"fine_features needs image_size a multiple of 32 (got {self.image_size})")
        require(self.image_encoder != "resnet18" or bool(self.image_weights_path),
                "image_encoder='resnet18' needs image_weights_path (no ResNet weights ship in a package)")

    @property
    def image_feature_dim(self) -> int:
        return IMAGE_FEATURE_DIMS[(self.image_encoder, self.image_stride)] + self.fine_feature_dim

    @property
    def fine_feature_dim(self) -> int:
        """Channels of the stride-16 cells folded into each token (``fine_features``), else 0."""
        return 4 * IMAGE_FEATURE_DIMS[(self.image_encoder, 16)] if self.fine_features else 0

    @property
    def image_encoder_id(self) -> str:
        return image_encoder_id(self.image_encoder, self.image_size, self.image_stride, self.fine_features)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> NanoVLAConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"checkpoint config has fields this code does not know: {unknown}")
        if "cameras" in known:
            known["cameras"] = tuple(known["cameras"])  # JSON holds a list
        return cls(**known)


def image_encoder_id(name: str, image_size: int, stride: int = 32, fine: bool = False) -> str:
    """The id feature caches and checkpoints record: encoder@size, with /s16 for the stride-16 map and +s16 for
    the final map with the stride-16 one folded into its channels (``fine_features``)."""
    return f"{name}@{image_size}" + ("" if stride == 32 else f"/s{stride}") + ("+s16" if fine else "")


def nanovla_s(**overrides) -> NanoVLAConfig:
    """NanoVLA-S: MiniLM instruction features (768-d: its first and last layers' means)."""
    from nanovla_ros.language.encoders import encoder_id

    return NanoVLAConfig(**{"language_encoder_id": encoder_id("small"), "language_dim": 768, **overrides})


def nanovla_l(**overrides) -> NanoVLAConfig:
    """NanoVLA-L: Gemma-3-270M instruction features (640-d)."""
    from nanovla_ros.language.encoders import encoder_id

    return NanoVLAConfig(**{"language_encoder_id": encoder_id("large"), "language_dim": 640, **overrides})
