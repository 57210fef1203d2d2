"""Pinhole intrinsics for CameraInfo when no calibration is available."""
from __future__ import annotations

import math


def pinhole_k(width: int, height: int, hfov_deg: float) -> list[float]:
    """Row-major 3x3 K of an ideal pinhole camera with square pixels and a centred principal point."""
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
