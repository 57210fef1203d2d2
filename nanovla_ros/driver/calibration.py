"""SO-101 calibration, file-compatible with LeRobot's calibration JSON, and the unit conversion.

File format (LeRobot, e.g. ~/.cache/huggingface/lerobot/calibration/robots/so101_follower/<id>.json):

    {"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470, "range_min": 758, "range_max": 3292}, ...}

Units. Every joint, the gripper included, is in radians: 0 at the middle of the calibrated range,
positive in the servo's counting direction (inverted when drive_mode = 1), 2*pi per 4096 ticks. For
the gripper this is the jaw's rotation (about 0 rad half open; LeRobot's 0-100 % gripper scale is
range_min -> 0 %, range_max -> 100 %: ``gripper_percent`` converts). One unit everywhere keeps
action chunks, limits and the simulated arm consistent.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from nanovla_ros.driver.config import servo_id
from nanovla_ros.driver.control_table import HALF_TURN_TICKS, MAX_TICK, TICKS_PER_TURN

RAD_PER_TICK = 2.0 * math.pi / TICKS_PER_TURN


class CalibrationError(ValueError):
    """A calibration file that is missing, malformed, or does not match the arm."""


@dataclass(frozen=True)
class MotorCalibration:
    id: int
    drive_mode: int  # 0 = as the servo counts, 1 = inverted
    homing_offset: int  # written to the servo's Homing_Offset register (|x| <= 2047)
    range_min: int  # ticks, after homing offset
    range_max: int

    def __post_init__(self) -> None:
        if self.drive_mode not in (0, 1):
            raise CalibrationError(f"motor {self.id}: drive_mode={self.drive_mode} must be 0 or 1")
        if abs(self.homing_offset) > 2047:
            raise CalibrationError(f"motor {self.id}: homing_offset={self.homing_offset} exceeds +-2047")
        if not 0 <= self.range_min < self.range_max <= MAX_TICK:
            raise CalibrationError(
                f"motor {self.id}: range [{self.range_min}, {self.range_max}] must satisfy 0 <= min < max <= {MAX_TICK}")

    @property
    def mid_ticks(self) -> float:
        return (self.range_min + self.range_max) / 2.0

    def ticks_to_rad(self, ticks: float) -> float:
        sign = -1.0 if self.drive_mode else 1.0
        return sign * (ticks - self.mid_ticks) * RAD_PER_TICK

    def rad_to_ticks(self, rad: float) -> int:
        sign = -1.0 if self.drive_mode else 1.0
        return int(round(self.mid_ticks + sign * rad / RAD_PER_TICK))

    @property
    def limits_rad(self) -> tuple[float, float]:
        a, b = self.ticks_to_rad(self.range_min), self.ticks_to_rad(self.range_max)
        return (min(a, b), max(a, b))


@dataclass(frozen=True)
class ArmCalibration:
    motors: dict[str, MotorCalibration]

    @classmethod
    def load(cls, path: str | Path, joint_names: tuple[str, ...] | None = None) -> ArmCalibration:
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"calibration file {str(path)!r} does not exist; run `nanovla calibrate`")
        return cls.from_json(path.read_text(), joint_names, source=f"calibration file {str(path)!r}")

    @classmethod
    def from_json(cls, text: str, joint_names: tuple[str, ...] | None = None,
                  source: str = "calibration") -> ArmCalibration:
        try:
            raw = json.loads(text)
            motors = {name: MotorCalibration(**{k: int(v) for k, v in entry.items()}) for name, entry in raw.items()}
        except (json.JSONDecodeError, TypeError, AttributeError) as error:
            raise CalibrationError(f"{source} is not LeRobot calibration JSON: {error}") from None
        calibration = cls(motors)
        if joint_names is not None:
            calibration.check_joints(joint_names)
        return calibration

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({name: asdict(m) for name, m in self.motors.items()}, indent=4) + "\n")

    def check_joints(self, joint_names: tuple[str, ...]) -> None:
        missing = [n for n in joint_names if n not in self.motors]
        if missing:
            raise CalibrationError(f"calibration has no entry for joint(s) {missing}; it covers {sorted(self.motors)}")

    def limits_rad(self, joint_names: tuple[str, ...]) -> list[tuple[float, float]]:
        return [self.motors[n].limits_rad for n in joint_names]


def gripper_percent(calibration: MotorCalibration, rad: float) -> float:
    """LeRobot's RANGE_0_100 gripper scale for a gripper angle in radians."""
    ticks = calibration.rad_to_ticks(rad)
    return 100.0 * (ticks - calibration.range_min) / (calibration.range_max - calibration.range_min)


def default_calibration(joint_names: tuple[str, ...]) -> ArmCalibration:
    """A symmetric calibration for the emulated arm (the SO-101's servo ids, offset 0, ranges about the half turn).

    Ranges follow the SO-101's mechanical travel roughly: +-110 deg for the arm joints, the gripper
    from -10 to +100 deg. Only for the simulated arm: a real arm must be calibrated.
    """
    motors = {}
    for name in joint_names:
        low_deg, high_deg = (-10.0, 100.0) if name == "gripper" else (-110.0, 110.0)
        motors[name] = MotorCalibration(
            id=servo_id(name), drive_mode=0, homing_offset=0,
            range_min=int(round(HALF_TURN_TICKS + math.radians(low_deg) / RAD_PER_TICK)),
            range_max=int(round(HALF_TURN_TICKS + math.radians(high_deg) / RAD_PER_TICK)))
    return ArmCalibration(motors)
