"""SO-101 driver configuration (the bus, calibration and executor land with issue #3)."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import param, require

# LeRobot's SO-101 motor names, servo ids 1-6 in this order.
SO101_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


@dataclass(frozen=True)
class DriverConfig:
    # --- bus
    sim: bool = param(True, "true: the emulated STS3215 bus / simulated workcell; false: the serial port.")
    port: str = param("/dev/ttyACM0", "Serial device of the Feetech bus (sim=false).")
    baudrate: int = param(1_000_000, "Bus baud rate (SO-101: 1,000,000).")
    calibration_file: str = param("", "LeRobot-format SO-101 calibration JSON; torque is refused without one.")
    # --- loops
    state_rate_hz: float = param(100.0, "JointState publishing rate.")
    control_rate_hz: float = param(30.0, "Chunk execution rate.")
    # --- safety (on by default)
    chunk_timeout_ms: float = param(500.0, "Hold position when no valid chunk is current for this long.")
    max_step_rad: float = param(0.05, "Largest change of a joint target per control step.")
    joint_names: tuple[str, ...] = param(SO101_JOINTS, "Joint order of commands and states (LeRobot motor names).")

    def __post_init__(self) -> None:
        require(self.baudrate > 0, f"baudrate={self.baudrate} must be positive")
        require(0.0 < self.state_rate_hz <= 1000.0, f"state_rate_hz={self.state_rate_hz} must be within (0, 1000]")
        require(0.0 < self.control_rate_hz <= 1000.0, f"control_rate_hz={self.control_rate_hz} must be within (0, 1000]")
        require(self.chunk_timeout_ms > 0.0, f"chunk_timeout_ms={self.chunk_timeout_ms} must be positive")
        require(0.0 < self.max_step_rad <= 1.0, f"max_step_rad={self.max_step_rad} must be within (0, 1] rad")
        require(len(self.joint_names) == len(set(self.joint_names)) > 0, f"joint_names={list(self.joint_names)} must be non-empty and unique")
