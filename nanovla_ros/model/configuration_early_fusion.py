"""The early-fusion baseline's configuration (``nanovla_ros.model.early_fusion``); no torch, so that the CLI's
flags are built without it."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from nanovla_ros.configuration import param, require

READOUTS = ("joint", "autoregressive")


@dataclass(frozen=True)
class EarlyFusionConfig:
    horizon: int = param(40, "H: actions predicted per chunk, all at once.")
    action_dim: int = param(6, "Joint targets per action (radians).")
    state_dim: int = param(6, "Joint positions read per step (radians).")
    cameras: tuple[str, ...] = param(("front", "wrist"), "Cameras whose feature maps become prefix tokens, in order.")
    image_size: int = param(320, "Pixels of the square input of the frozen image encoder.")
    image_channels: int = param(1280, "Channels of the frozen encoder's stride-32 map (EfficientNet-Lite0: 1280).")
    readout: str = param("joint", "joint: the H action queries read the whole chunk at once (EdgeVLA's non-autoregressive "
                                  "joint prediction); autoregressive: one language-model step per action, each fed "
                                  "the one before (causal, key-value cached at inference).")
    max_instruction_tokens: int = param(32, "Instruction tokens read (longer instructions are refused).")
    lm_dir: str = param("", "Folder of the language model (config, weights, tokenizer); empty: the packaged "
                            "Gemma-3-270M (nanovla_ros.language.encoders.prepare_gemma).")
    lm_config: str = param("", "JSON of a Gemma3TextConfig to build a randomly initialised language model instead "
                               "(tests, timing); empty: load lm_dir's weights.")

    def __post_init__(self) -> None:
        for name in ("horizon", "action_dim", "state_dim", "image_size", "image_channels", "max_instruction_tokens"):
            require(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        require(self.image_size % 32 == 0, f"image_size={self.image_size} must be a multiple of 32")
        require(self.readout in READOUTS, f"readout={self.readout!r} must be one of {READOUTS}")
        require(len(self.cameras) >= 1 and len(set(self.cameras)) == len(self.cameras),
                f"cameras={self.cameras!r} must name at least one camera, each once")

    @property
    def grid(self) -> int:
        """Cells per side of the stride-32 map."""
        return self.image_size // 32

    def to_dict(self) -> dict:
        return {**asdict(self), "cameras": list(self.cameras)}

    @classmethod
    def from_dict(cls, values: dict) -> EarlyFusionConfig:
        return cls(**{**values, "cameras": tuple(values["cameras"])})
