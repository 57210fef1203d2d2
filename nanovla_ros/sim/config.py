"""Workcell process configuration."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import param, require, require_choice
from nanovla_ros.sim.perturbation import parse as parse_perturbation
from nanovla_ros.sim.tasks import KINDS


@dataclass(frozen=True)
class WorkcellNodeConfig:
    seed: int = param(0, "Seed of the scene layout (cube and square positions).")
    task: str = param("pick_place", f"Task the scene is laid out for (its instruction is logged): {list(KINDS)}.")
    split: str = param("train", "Instruction split: train or heldout.")
    camera: str = param("front", "Camera whose frames go to the camera node: front or wrist.")
    image_size: int = param(224, "Rendered frame size, pixels (square).")
    frames_name: str = param("nanovla_workcell_front", "Shared-memory block the camera node (source=sim) reads.")
    wrist_frames_name: str = param("", "Shared-memory block for the wrist camera's frames, read by a second camera "
                                       "node (empty: the wrist view is not rendered).")
    bus_link: str = param("/tmp/nanovla_workcell_bus", "Symlink to the emulated servo bus; the driver's port.")
    calibration_file: str = param("/tmp/nanovla_workcell_calibration.json",
                                  "Where the simulated arm's LeRobot-format calibration is written for the driver.")
    control_rate_hz: float = param(30.0, "Physics control rate, real time.")
    expert_teleop: bool = param(False, "Play the leader arm: publish the scripted expert's joint commands for the task.")
    look: str = param("", "How the scene looks: empty = the training workcell; FAMILY=STRENGTH = one perturbation of "
                          "nanovla_ros.sim.perturbation.SUITE (e.g. light=0.6); random = each episode's look drawn "
                          "from RandomisationConfig's ranges, seeded by the episode's seed; random_camera = only the front camera's "
                          "pose and field of view drawn so.")

    def __post_init__(self) -> None:
        require_choice("task", self.task, KINDS)
        require_choice("split", self.split, ("train", "heldout"))
        require_choice("camera", self.camera, ("front", "wrist"))
        require(32 <= self.image_size <= 1024, f"image_size={self.image_size} must be within [32, 1024]")
        require(bool(self.frames_name) and "/" not in self.frames_name, f"frames_name={self.frames_name!r} must be a plain name")
        require("/" not in self.wrist_frames_name and self.wrist_frames_name != self.frames_name,
                f"wrist_frames_name={self.wrist_frames_name!r} must be a plain name other than frames_name")
        require(bool(self.bus_link), "bus_link is empty")
        parse_perturbation(self.look)  # ConfigError naming the families if it is not one (or a random look)
        require(0.0 < self.control_rate_hz <= 200.0, f"control_rate_hz={self.control_rate_hz} must be within (0, 200]")
