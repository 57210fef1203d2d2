"""Camera node configuration."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.camera.image_codec import CHANNELS_BY_ENCODING
from nanovla_ros.configuration import param, require, require_choice

CAMERA_SOURCES = ("test_pattern", "v4l2", "video", "folder", "sim")


@dataclass(frozen=True)
class CameraConfig:
    # --- where frames come from
    source: str = param("test_pattern", f"Frame source: one of {list(CAMERA_SOURCES)}.")
    device: str = param("/dev/video0", "V4L2 device path or index (source=v4l2).")
    path: str = param("", "Video file (source=video), image folder (source=folder) or the workcell's frame block (source=sim).")
    loop: bool = param(True, "Restart a video file or image folder when it ends.")
    # --- what is published
    width: int = param(640, "Frame width in pixels (requested from V4L2; files are resized to it).")
    height: int = param(480, "Frame height in pixels.")
    rate_hz: float = param(30.0, "Publishing rate; also requested from V4L2 as its frame rate.")
    encoding: str = param("rgb8", "Published encoding, cv_bridge names: rgb8, bgr8 or mono8.")
    frame_id: str = param("camera_optical_frame", "frame_id stamped on Image and CameraInfo.")
    hfov_deg: float = param(60.0, "Horizontal field of view used for the pinhole CameraInfo.")
    # --- freshness
    max_age_ms: float = param(100.0, "A frame older than this at publish time is dropped, never sent.")

    def __post_init__(self) -> None:
        require_choice("source", self.source, CAMERA_SOURCES)
        require_choice("encoding", self.encoding, tuple(CHANNELS_BY_ENCODING))
        require(16 <= self.width <= 8192, f"width={self.width} must be within [16, 8192] pixels")
        require(16 <= self.height <= 8192, f"height={self.height} must be within [16, 8192] pixels")
        require(0.0 < self.rate_hz <= 1000.0, f"rate_hz={self.rate_hz} must be within (0, 1000]")
        require(0.0 < self.hfov_deg < 180.0, f"hfov_deg={self.hfov_deg} must be within (0, 180)")
        require(self.max_age_ms > 0.0, f"max_age_ms={self.max_age_ms} must be positive")
        require(
            self.source not in ("video", "folder", "sim") or bool(self.path),
            f"source={self.source!r} needs `path` (a video file, an image folder or the workcell's frame block)",
        )
        require(self.source != "v4l2" or bool(self.device), "source='v4l2' needs `device`")
