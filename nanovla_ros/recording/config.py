"""Recorder configuration."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import param, require
from nanovla_ros.recording.bags import RECORDED_TOPICS


@dataclass(frozen=True)
class RecorderConfig:
    output_dir: str = param("bags", "Folder the episode bags go to (one rosbag2 MCAP folder per episode).")
    topics: tuple[str, ...] = param(tuple(RECORDED_TOPICS), "Relative topics recorded into each episode's bag.")
    robot: str = param("so101", "Robot name written into each bag's metadata.")
    calibration_file: str = param("", "LeRobot calibration JSON copied into each bag's metadata ('' = none).")
    max_episode_s: float = param(600.0, "An episode still recording after this long is closed (task_success "
                                        "unknown) so a forgotten stop cannot fill the disk.")

    def __post_init__(self) -> None:
        unknown = [t for t in self.topics if t not in RECORDED_TOPICS]
        require(not unknown, f"topics {unknown} are not recordable; known: {list(RECORDED_TOPICS)}")
        require(len(self.topics) > 0, "topics is empty")
        require(bool(self.output_dir), "output_dir is empty")
        require(self.max_episode_s > 0.0, f"max_episode_s={self.max_episode_s} must be > 0")
