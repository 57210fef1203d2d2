"""Image augmentation before the frozen encoder, for features cached K times per frame (no ROS).

The encoder is frozen, so an augmented view of a frame is just another cached feature map: ``prepare_cache(...,
augment_copies=K)`` stores K augmented copies of every frame's features beside the plain ones, and training draws
one of the K + 1 per sample (``TrainConfig.augment_copies``). The cached-feature design keeps its speed; the policy
sees other light, colour and small camera motions than the one render it was recorded in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nanovla_ros.configuration import param, require


@dataclass(frozen=True)
class AugmentConfig:
    brightness: float = param(0.4, "Brightness factor drawn in [1 - this, 1 + this].")
    contrast: float = param(0.3, "Contrast factor drawn in [1 - this, 1 + this] (about the frame's mean grey).")
    saturation: float = param(0.3, "Saturation factor drawn in [1 - this, 1 + this].")
    shift_fraction: float = param(0.04, "Translation up to this fraction of the frame along each axis.")
    rotate_deg: float = param(3.0, "Rotation up to this either way, degrees.")
    noise_std: float = param(4.0, "Gaussian pixel noise up to this std, in 0-255 units.")

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            require(0.0 <= getattr(self, name) < 1.0, f"{name}={getattr(self, name)} must be within [0, 1)")
        require(0.0 <= self.shift_fraction < 0.5, f"shift_fraction={self.shift_fraction} must be within [0, 0.5)")
        require(self.rotate_deg >= 0.0 and self.noise_std >= 0.0, "rotate_deg and noise_std must be >= 0")


def augment_frames(frames: torch.Tensor, generator: torch.Generator, config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, H, W, 3) uint8: each frame with its own colour jitter, shift, rotation, noise."""
    b, device = frames.shape[0], frames.device

    def draw(spread: float) -> torch.Tensor:  # (B,) uniform in [-spread, spread]
        return (torch.rand(b, device=device, generator=generator) * 2.0 - 1.0) * spread

    x = frames.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
    x = x * (1.0 + draw(config.brightness))[:, None, None, None]
    grey = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    x = grey + (x - grey) * (1.0 + draw(config.saturation))[:, None, None, None]
    x = x.mean(dim=(1, 2, 3), keepdim=True) + (x - x.mean(dim=(1, 2, 3), keepdim=True)) * (
        1.0 + draw(config.contrast))[:, None, None, None]
    angle = draw(math.radians(config.rotate_deg))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, draw(2 * config.shift_fraction)], dim=1),
                         torch.stack([sin, cos, draw(2 * config.shift_fraction)], dim=1)], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    noise = torch.randn(x.shape, device=device, generator=generator) * (draw(1.0).abs() * config.noise_std / 255.0
                                                                       )[:, None, None, None]
    x = (x + noise).clamp(0.0, 1.0)
    return (x * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
