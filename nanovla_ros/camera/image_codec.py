"""Image buffers <-> numpy, with cv_bridge's encoding names (rgb8, bgr8, mono8).

ROS 2's cv_bridge cannot be installed on pip-only hosts, so conversion is done with numpy. The
fields produced here are exactly those of sensor_msgs/Image (height, width, encoding,
is_bigendian, step, data), so images interoperate with cv_bridge users on ROS hosts. The node
layer copies them into the message; nothing here imports ROS.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# encoding -> channels, for the 8-bit encodings cv_bridge users exchange most.
CHANNELS_BY_ENCODING = {"rgb8": 3, "bgr8": 3, "mono8": 1}


class ImageEncodingError(ValueError):
    """An image buffer whose encoding, size or layout cannot be converted."""


@dataclass(frozen=True)
class ImageFields:
    """The payload fields of a sensor_msgs/Image."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def _check_encoding(encoding: str) -> int:
    if encoding not in CHANNELS_BY_ENCODING:
        raise ImageEncodingError(
            f"unsupported image encoding {encoding!r}; supported: {sorted(CHANNELS_BY_ENCODING)}"
        )
    return CHANNELS_BY_ENCODING[encoding]


def convert_color(image: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert an (H, W, C) or (H, W) uint8 array between rgb8, bgr8 and mono8."""
    _check_encoding(src)
    _check_encoding(dst)
    if src == dst:
        return image
    if src == "mono8":
        rgb = np.repeat(image[:, :, None], 3, axis=2)  # (H, W, 3)
        return rgb if dst == "rgb8" else rgb[:, :, ::-1]
    rgb = image if src == "rgb8" else image[:, :, ::-1]
    if dst == "mono8":
        # ITU-R BT.601 luma, as OpenCV's RGB2GRAY.
        luma = rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114  # (H, W)
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    return rgb if dst == "rgb8" else rgb[:, :, ::-1]


def array_to_fields(image: np.ndarray, encoding: str) -> ImageFields:
    """Pack a uint8 array whose channel order already matches ``encoding``."""
    channels = _check_encoding(encoding)
    if image.dtype != np.uint8:
        raise ImageEncodingError(f"expected a uint8 image, got dtype {image.dtype}")
    expected_ndim = 2 if channels == 1 else 3
    if image.ndim != expected_ndim or (channels > 1 and image.shape[2] != channels):
        raise ImageEncodingError(
            f"array of shape {image.shape} does not match encoding {encoding!r} ({channels} channel(s))"
        )
    height, width = image.shape[:2]
    contiguous = np.ascontiguousarray(image)
    return ImageFields(height, width, encoding, 0, width * channels, contiguous.tobytes())


def fields_to_array(fields: ImageFields, desired_encoding: str = "passthrough") -> np.ndarray:
    """Unpack an image message payload, honouring row padding (step > width * channels)."""
    channels = _check_encoding(fields.encoding)
    row_bytes = fields.width * channels
    if fields.step < row_bytes:
        raise ImageEncodingError(f"step {fields.step} is smaller than width*channels = {row_bytes}")
    if len(fields.data) < fields.step * fields.height:
        raise ImageEncodingError(
            f"image data has {len(fields.data)} bytes, expected step*height = {fields.step * fields.height}"
        )
    flat = np.frombuffer(fields.data, dtype=np.uint8, count=fields.step * fields.height)
    rows = flat.reshape(fields.height, fields.step)[:, :row_bytes]  # (H, W*C)
    shape = (fields.height, fields.width) if channels == 1 else (fields.height, fields.width, channels)
    image = rows.reshape(shape)
    if desired_encoding == "passthrough":
        return image
    return convert_color(image, fields.encoding, desired_encoding)
