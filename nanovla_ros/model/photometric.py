"""Software auto-exposure and white balance for the policy's frames (no ROS).

A policy trained in one room sees its light: a dimmer lamp, a warmer bulb or another exposure moves every pixel,
and the frozen image encoder's features with them (the shipped policy fell from 20 to 4 of 24 episodes with the
light at 60 %). ``FrameGain`` does what a camera's auto-exposure and auto-white-balance do, against the room the
policy was trained in: the gains that bring the reference camera's mean colour to ``reference_rgb`` (that
camera's mean over training scenes) multiply every camera's frame, since one light falls on all of them. "rgb"
balances each channel (exposure, brightness and colour temperature); "luma" one gain for all (exposure and
brightness only). Gains are clipped to [``min_gain``, ``max_gain``]; a frame that is already saturated cannot be
brought back (overexposure stays a failure). Measured closed loop: ``scripts/eval/probe_frame_gain.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GAIN_MODES = ("off", "luma", "rgb")
# The simulated workcell's front camera: its mean colour (RGB, 0-255) over 24 nominal scenes with the arm at home,
# as rendered for the policy (scripts/eval/probe_frame_gain.py prints it). The reference of the shipped checkpoint.
WORKCELL_REFERENCE_RGB = (210.2, 175.5, 124.3)
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class FrameGain:
    mode: str = "rgb"
    reference_rgb: tuple[float, float, float] = WORKCELL_REFERENCE_RGB
    min_gain: float = 1.0 / 3.0
    max_gain: float = 3.0

    def __post_init__(self) -> None:
        if self.mode not in GAIN_MODES:
            raise ValueError(f"frame gain mode {self.mode!r} is not one of {list(GAIN_MODES)}")
        if len(self.reference_rgb) != 3 or not all(0.0 < v <= 255.0 for v in self.reference_rgb):
            raise ValueError(f"reference_rgb={self.reference_rgb} must be three mean values in (0, 255]")
        if not 0.0 < self.min_gain <= 1.0 <= self.max_gain:
            raise ValueError(f"gain limits [{self.min_gain}, {self.max_gain}] must hold 1")

    def gains(self, frame: np.ndarray) -> np.ndarray:
        """(3,) float32: the per-channel gains that bring ``frame``'s (h, w, 3) mean colour to the reference."""
        mean = frame.reshape(-1, 3).mean(0)
        reference = np.asarray(self.reference_rgb)
        if self.mode == "off":
            g = np.ones(3)
        elif self.mode == "luma":
            g = np.full(3, float(_LUMA @ reference) / max(float(_LUMA @ mean), 1.0))
        else:
            g = reference / np.maximum(mean, 1.0)
        return np.clip(g, self.min_gain, self.max_gain).astype(np.float32)

    def __call__(self, frames: dict[str, np.ndarray], reference_camera: str) -> dict[str, np.ndarray]:
        """Every frame of ``frames`` ({camera: (h, w, 3) uint8}) times the gains ``reference_camera``'s asks for."""
        if self.mode == "off":
            return frames
        g = self.gains(frames[reference_camera])
        return {name: np.clip(frame.astype(np.float32) * g, 0, 255).astype(np.uint8) for name, frame in frames.items()}


DENOISE_MODES = ("off", "gaussian", "median")


@dataclass(frozen=True)
class FrameDenoise:
    """Sensor-noise suppression before the policy: a Gaussian blur (``sigma_px``, pixels of a 224-pixel-wide frame,
    scaled with the frame) or a median filter (3 x 3 at 224 pixels, wider for wider frames) on every camera's frame.
    Same call as ``FrameGain`` (``mode`` "off": the frames unchanged)."""

    mode: str = "gaussian"
    sigma_px: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in DENOISE_MODES:
            raise ValueError(f"denoise mode {self.mode!r} is not one of {list(DENOISE_MODES)}")
        if not 0.0 < self.sigma_px <= 5.0:
            raise ValueError(f"denoise sigma_px={self.sigma_px} must be within (0, 5]")

    def __call__(self, frames: dict[str, np.ndarray], reference_camera: str = "") -> dict[str, np.ndarray]:
        import cv2

        if self.mode == "off":
            return frames
        out = {}
        for name, frame in frames.items():
            scale = frame.shape[1] / 224.0
            if self.mode == "gaussian":
                out[name] = cv2.GaussianBlur(frame, (0, 0), sigmaX=self.sigma_px * scale)
            else:
                out[name] = cv2.medianBlur(np.ascontiguousarray(frame), 2 * max(1, int(round(scale))) + 1)
        return out


class GainNormalisedPolicy:
    """``policy`` (anything with ``predict_chunk`` and ``config``) reading its frames through ``gain`` (a
    ``FrameGain``, or any frame transform with its call: ``FrameDenoise``, ``view_warp.ViewWarp``), called with the
    policy's first camera as the reference (the workcell's front camera, which sees the scene whatever the arm
    does)."""

    def __init__(self, policy, gain) -> None:
        self.policy, self.gain = policy, gain

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    def predict_chunk(self, image, state, instruction_embedding):
        if isinstance(image, dict):
            image = self.gain(image, self.policy.config.cameras[0])
        else:
            image = self.gain({"frame": image}, "frame")["frame"]
        return self.policy.predict_chunk(image, state, instruction_embedding)


def read_through(policy, transforms) -> object:
    """``policy`` reading its frames through ``transforms`` (frame transforms or None; the first applied first;
    those whose ``mode`` is "off" left out): the policy node's and the evaluation's one order of corrections."""
    for transform in reversed(tuple(transforms)):  # the outermost wrapper sees the frames first
        if transform is not None and transform.mode != "off":
            policy = GainNormalisedPolicy(policy, transform)
    return policy

