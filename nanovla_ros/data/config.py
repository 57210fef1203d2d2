"""Dataset building configuration (bags -> training samples)."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import param, require


@dataclass(frozen=True)
class DatasetBuildConfig:
    max_image_age_s: float = param(0.25, "A sample whose newest frame is older than this is dropped (stale camera).")
    max_gap_s: float = param(0.5, "A silence longer than this in a required topic marks the bag as gapped.")
    max_stamp_skew_s: float = param(0.5, "Header stamps further than this (median) from the recording clock mark "
                                         "the bag as unsynchronised.")
    include_failed: bool = param(False, "Also use episodes whose task_success is not true.")
    jpeg_quality: int = param(90, "JPEG quality of the stored frames.")
    min_samples: int = param(10, "Episodes with fewer samples are skipped.")
    sample_every: int = param(1, "Keep every n-th command as a sample (all commands stay targets): 2 halves the "
                                 "frames stored at 30 Hz control with little loss, the samples being near-duplicates.")

    def __post_init__(self) -> None:
        require(self.max_image_age_s > 0 and self.max_gap_s > 0 and self.max_stamp_skew_s > 0,
                "max_image_age_s, max_gap_s and max_stamp_skew_s must be > 0")
        require(self.sample_every >= 1, f"sample_every={self.sample_every} must be >= 1")
        require(1 <= self.jpeg_quality <= 100, f"jpeg_quality={self.jpeg_quality} must be within [1, 100]")
