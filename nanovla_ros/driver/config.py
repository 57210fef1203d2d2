"""SO-101 driver configuration (the bus, calibration and executor land with issue #3)."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import ConfigError, param, require


@dataclass(frozen=True)
class Motor:
    """One servo of the arm: its bus id and model (LeRobot's ``Motor(id, model, ...)``)."""

    id: int
    model: str


# The SO-101's motors as LeRobot names them: the one place servo ids are declared.
SO101_MOTORS: dict[str, Motor] = {
    "shoulder_pan": Motor(1, "sts3215"),
    "shoulder_lift": Motor(2, "sts3215"),
    "elbow_flex": Motor(3, "sts3215"),
    "wrist_flex": Motor(4, "sts3215"),
    "wrist_roll": Motor(5, "sts3215"),
    "gripper": Motor(6, "sts3215"),
}
SO101_JOINTS = tuple(SO101_MOTORS)  # the joint order of commands and states


def servo_id(joint: str) -> int:
    """The SO-101 servo id of ``joint``; a clear error for a name the table does not have."""
    if joint not in SO101_MOTORS:
        raise ConfigError(f"joint {joint!r} is not an SO-101 motor ({list(SO101_MOTORS)}); give a calibration file, "
                          "which names each motor's id")
    return SO101_MOTORS[joint].id


@dataclass(frozen=True)
class DriverConfig:
    # --- bus
    sim: bool = param(True, "true: the emulated STS3215 bus / simulated workcell; false: the serial port.")
    port: str = param("/dev/ttyACM0", "Serial device of the Feetech bus (sim=false).")
    baudrate: int = param(1_000_000, "Bus baud rate (SO-101: 1,000,000).")
    port_wait_s: float = param(0.0, "How long configure waits for `port` to appear (a USB adapter, the workcell's bus).")
    calibration_file: str = param("", "LeRobot-format SO-101 calibration JSON; torque is refused without one.")
    # --- loops
    state_rate_hz: float = param(100.0, "JointState publishing rate.")
    control_rate_hz: float = param(30.0, "Chunk execution rate.")
    bus_retries: int = param(2, "Retries of a failed read before it counts as a failure.")
    latency_timer_ms: float = param(
        4.0, "USB adapter latency in the reply timeout (2x this + 2 ms). 4 suits the SO-101's CH343 adapter; "
             "FTDI adapters need 16 (the SDK's value) unless their latency_timer is lowered.")
    sim_corrupt_rate: float = param(0.0, "sim only: fraction of emulated servo replies corrupted (fault injection).")
    sim_drop_rate: float = param(0.0, "sim only: fraction of emulated servo replies dropped (fault injection).")
    # --- modes
    autostart: bool = param(True, "Configure and activate at start-up (false: wait for lifecycle transitions).")
    leader_mode: bool = param(False, "Leader arm for teleoperation: torque stays off; joint positions are published as commands.")
    follow_topic: str = param("", "Follower for teleoperation: JointState topic of a leader arm to copy (empty = none).")
    torque_off_on_stop: bool = param(True, "Ctrl-C / SIGTERM: hold, then torque off (the arm goes limp: support a loaded "
                                           "arm). false: the servos keep holding the last target after the driver exits.")
    telemetry_rate_hz: float = param(2.0, "Rate of load / temperature / voltage / status reads and of diagnostics.")
    # --- safety (on by default)
    chunk_timeout_ms: float = param(500.0, "Chunks whose observation is older than this are rejected; the arm holds.")
    future_tolerance_ms: float = param(100.0, "Chunks stamped further than this ahead of the driver's clock are rejected.")
    limit_margin_rad: float = param(0.15, "Targets beyond the calibrated range by more than this reject the chunk; "
                                          "smaller overshoots are clamped to the range.")
    max_step_rad: float = param(0.05, "Largest change of a joint target per control step.")
    publish_description: bool = param(True, "Publish the SO-101's URDF, latched, on robot_description (false where "
                                            "robot_state_publisher does, as the ROS launch file sets it).")
    max_trajectory_s: float = param(30.0, "Longest JointTrajectory accepted on joint_trajectory, seconds (one "
                                          "faster than max_step_rad allows is refused too).")
    blend_steps: int = param(3, "Control steps over which a new chunk is cross-faded into the previous one.")
    overrun_steps: int = param(10, "Actions a chunk may run past its h (counted from its arrival) while the next "
                                   "chunk is late, before the arm holds; 0: hold right after h.")
    servo_timeout_ms: float = param(200.0, "A servo silent for this long is a fault: hold the others, refuse chunks.")
    joint_names: tuple[str, ...] = param(SO101_JOINTS, "Joint order of commands and states (LeRobot motor names).")

    def __post_init__(self) -> None:
        require(self.baudrate > 0, f"baudrate={self.baudrate} must be positive")
        require(0.0 < self.state_rate_hz <= 1000.0, f"state_rate_hz={self.state_rate_hz} must be within (0, 1000]")
        require(0.0 < self.control_rate_hz <= 1000.0, f"control_rate_hz={self.control_rate_hz} must be within (0, 1000]")
        require(self.chunk_timeout_ms > 0.0, f"chunk_timeout_ms={self.chunk_timeout_ms} must be positive")
        require(self.future_tolerance_ms >= 0.0, f"future_tolerance_ms={self.future_tolerance_ms} must be >= 0")
        require(self.limit_margin_rad >= 0.0, f"limit_margin_rad={self.limit_margin_rad} must be >= 0")
        require(0.0 < self.max_trajectory_s <= 600.0, f"max_trajectory_s={self.max_trajectory_s} must be within (0, 600]")
        require(0.0 < self.max_step_rad <= 1.0, f"max_step_rad={self.max_step_rad} must be within (0, 1] rad")
        require(len(self.joint_names) == len(set(self.joint_names)) > 0,
                f"joint_names={list(self.joint_names)} must be non-empty and unique")
        require(self.bus_retries >= 0, f"bus_retries={self.bus_retries} must be >= 0")
        require(self.port_wait_s >= 0.0, f"port_wait_s={self.port_wait_s} must be >= 0")
        require(self.latency_timer_ms >= 0.0, f"latency_timer_ms={self.latency_timer_ms} must be >= 0")
        for name in ("sim_corrupt_rate", "sim_drop_rate"):
            require(0.0 <= getattr(self, name) < 1.0, f"{name}={getattr(self, name)} must be within [0, 1)")
        require(0.0 < self.telemetry_rate_hz <= self.state_rate_hz,
                f"telemetry_rate_hz={self.telemetry_rate_hz} must be within (0, state_rate_hz]")
        require(self.control_rate_hz <= self.state_rate_hz,
                f"control_rate_hz={self.control_rate_hz} must not exceed state_rate_hz={self.state_rate_hz}")
        require(self.blend_steps >= 0, f"blend_steps={self.blend_steps} must be >= 0")
        require(self.overrun_steps >= 0, f"overrun_steps={self.overrun_steps} must be >= 0")
        require(self.servo_timeout_ms > 0.0, f"servo_timeout_ms={self.servo_timeout_ms} must be positive")
