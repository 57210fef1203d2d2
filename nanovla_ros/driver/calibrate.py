"""The calibration procedure (LeRobot's, for the SO-101): no prompts here; `nanovla calibrate` asks.

1. ``start``: torque off on every joint and Homing_Offset reset, so raw positions are read.
2. ``set_middle``: with the arm in the middle of every joint's range, write Homing_Offset so that this
   pose reads 2047 (half a turn).
3. ``record_ranges``: called repeatedly while the user moves each joint through its full travel.
4. ``finish``: the ranges become the servos' Min/Max_Position_Limit (EEPROM) and the calibration.
"""
from __future__ import annotations

from nanovla_ros.driver.bus import FeetechBus
from nanovla_ros.driver.calibration import ArmCalibration, CalibrationError, MotorCalibration
from nanovla_ros.driver.control_table import HALF_TURN_TICKS, MAX_TICK

# Joints that turn freely all the way round: their range is the whole encoder (LeRobot does the same).
FULL_TURN_JOINTS = ("wrist_roll",)


class Calibrator:
    def __init__(self, bus: FeetechBus, motor_ids: dict[str, int]) -> None:
        self.bus = bus
        self.motor_ids = motor_ids
        self.offsets: dict[str, int] = {}
        self.mins: dict[str, int] = {}
        self.maxs: dict[str, int] = {}

    def start(self) -> None:
        for servo_id in self.motor_ids.values():
            self.bus.write("Torque_Enable", servo_id, 0)
            self.bus.write_eeprom("Homing_Offset", servo_id, 0)

    def set_middle(self) -> dict[str, int]:
        raw = self.bus.sync_read("Present_Position", self.motor_ids.values())
        for name, servo_id in self.motor_ids.items():
            offset = raw[servo_id] - HALF_TURN_TICKS
            self.bus.write_eeprom("Homing_Offset", servo_id, offset)
            self.offsets[name] = offset
        return dict(self.offsets)

    def record_ranges(self) -> dict[str, tuple[int, int]]:
        positions = self.bus.sync_read("Present_Position", self.motor_ids.values())
        for name, servo_id in self.motor_ids.items():
            value = positions[servo_id]
            self.mins[name] = min(self.mins.get(name, value), value)
            self.maxs[name] = max(self.maxs.get(name, value), value)
        return {n: (self.mins[n], self.maxs[n]) for n in self.motor_ids}

    def finish(self) -> ArmCalibration:
        if not self.offsets:
            raise CalibrationError("set_middle() was not run: the homing offsets are unknown")
        motors = {}
        for name, servo_id in self.motor_ids.items():
            low, high = (0, MAX_TICK) if name in FULL_TURN_JOINTS else (self.mins.get(name), self.maxs.get(name))
            if low is None or high is None or high - low < 20:
                raise CalibrationError(
                    f"joint {name!r} moved over {0 if low is None else high - low} ticks only; "
                    "move every joint through its full range while ranges are recorded")
            motors[name] = MotorCalibration(servo_id, 0, self.offsets[name], low, high)
            self.bus.write_eeprom("Min_Position_Limit", servo_id, low)
            self.bus.write_eeprom("Max_Position_Limit", servo_id, high)
        return ArmCalibration(motors)
