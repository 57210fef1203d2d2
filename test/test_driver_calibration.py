"""Calibration files (LeRobot's format), unit conversion, and the calibration procedure on the emulator."""
import json
import math

import pytest

from nanovla_ros.driver.bus import FeetechBus
from nanovla_ros.driver.calibrate import Calibrator
from nanovla_ros.driver.calibration import (
    ArmCalibration,
    CalibrationError,
    MotorCalibration,
    default_calibration,
    gripper_percent,
)
from nanovla_ros.driver.config import SO101_JOINTS
from nanovla_ros.driver.emulator import Sts3215BusEmulator

# Written by LeRobot's `lerobot-calibrate` for an SO-101 follower (values from a real arm's file).
LEROBOT_FILE = {
    "shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470, "range_min": 758, "range_max": 3292},
    "shoulder_lift": {"id": 2, "drive_mode": 0, "homing_offset": 157, "range_min": 612, "range_max": 3401},
    "elbow_flex": {"id": 3, "drive_mode": 0, "homing_offset": -1276, "range_min": 881, "range_max": 3063},
    "wrist_flex": {"id": 4, "drive_mode": 0, "homing_offset": -1094, "range_min": 859, "range_max": 3211},
    "wrist_roll": {"id": 5, "drive_mode": 0, "homing_offset": 1305, "range_min": 0, "range_max": 4095},
    "gripper": {"id": 6, "drive_mode": 0, "homing_offset": -1379, "range_min": 1987, "range_max": 3527},
}


def test_lerobot_file_loads_and_round_trips(tmp_path):
    source = tmp_path / "so101_follower.json"
    source.write_text(json.dumps(LEROBOT_FILE, indent=4))
    calibration = ArmCalibration.load(source, SO101_JOINTS)
    assert calibration.motors["elbow_flex"] == MotorCalibration(3, 0, -1276, 881, 3063)
    copy = tmp_path / "copy.json"
    calibration.save(copy)
    assert json.loads(copy.read_text()) == LEROBOT_FILE


def test_ticks_radians_conversion_and_limits():
    motor = MotorCalibration(1, 0, 0, 1000, 3000)
    assert motor.ticks_to_rad(2000) == 0.0
    assert motor.ticks_to_rad(3024) == pytest.approx(math.pi / 2)
    assert motor.rad_to_ticks(motor.ticks_to_rad(2500)) == 2500
    inverted = MotorCalibration(1, 1, 0, 1000, 3000)
    assert inverted.ticks_to_rad(3024) == pytest.approx(-math.pi / 2)
    low, high = inverted.limits_rad
    assert low < 0 < high and low == pytest.approx(-high)
    assert gripper_percent(motor, motor.ticks_to_rad(1000)) == pytest.approx(0.0)
    assert gripper_percent(motor, motor.ticks_to_rad(3000)) == pytest.approx(100.0)


@pytest.mark.parametrize("content, message", [
    ("{not json", "not LeRobot calibration JSON"),
    (json.dumps({"shoulder_pan": {"id": 1}}), "not LeRobot calibration JSON"),
    (json.dumps({"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": 3000, "range_min": 0, "range_max": 10}}),
     "homing_offset=3000"),
    (json.dumps({"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": 0, "range_min": 10, "range_max": 5}}), "range"),
])
def test_bad_files_are_rejected_with_the_reason(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CalibrationError, match=message):
        ArmCalibration.load(path)


def test_missing_joints_and_files_are_errors(tmp_path):
    with pytest.raises(CalibrationError, match="does not exist"):
        ArmCalibration.load(tmp_path / "nope.json")
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"gripper": LEROBOT_FILE["gripper"]}))
    with pytest.raises(CalibrationError, match="shoulder_pan"):
        ArmCalibration.load(path, SO101_JOINTS)


def test_default_calibration_is_symmetric_for_arm_joints():
    calibration = default_calibration(SO101_JOINTS)
    low, high = calibration.motors["elbow_flex"].limits_rad
    assert low == pytest.approx(-high, abs=1e-3) and high == pytest.approx(math.radians(110), abs=2e-3)


def test_calibration_procedure_on_the_emulated_bus(tmp_path):
    ids = {name: i for i, name in enumerate(SO101_JOINTS, start=1)}
    with Sts3215BusEmulator() as emu:
        bus = FeetechBus(emu.port_name, latency_timer_ms=2.0)
        for servo_id in ids.values():  # the arm as the user left it: not centred
            emu.set_raw_position(servo_id, 1500 + 100 * servo_id)
        calibrator = Calibrator(bus, ids)
        calibrator.start()
        offsets = calibrator.set_middle()
        assert offsets["shoulder_pan"] == 1600 - 2047
        assert bus.read("Present_Position", 1) == 2047  # the middle pose now reads half a turn
        for servo_id in ids.values():  # the user sweeps every joint
            for raw in (1500 + 100 * servo_id - 700, 1500 + 100 * servo_id + 900):
                emu.set_raw_position(servo_id, raw)
                calibrator.record_ranges()
        calibration = calibrator.finish()
        assert calibration.motors["shoulder_pan"] == MotorCalibration(1, 0, -447, 2047 - 700, 2047 + 900)
        assert calibration.motors["wrist_roll"].range_max == 4095  # full-turn joint
        assert bus.read("Min_Position_Limit", 1) == 2047 - 700 and bus.read("Lock", 1) == 1
        calibration.save(tmp_path / "arm.json")
        assert ArmCalibration.load(tmp_path / "arm.json", SO101_JOINTS) == calibration
        bus.close()


def test_calibration_refuses_joints_that_were_not_moved():
    ids = {"shoulder_pan": 1}
    with Sts3215BusEmulator(ids=(1,)) as emu:
        bus = FeetechBus(emu.port_name, latency_timer_ms=2.0)
        calibrator = Calibrator(bus, ids)
        calibrator.start()
        calibrator.set_middle()
        calibrator.record_ranges()
        with pytest.raises(CalibrationError, match="moved over 0 ticks"):
            calibrator.finish()
        bus.close()


def test_calibrate_command_runs_against_the_emulator(tmp_path):
    from nanovla_ros.cli import main

    out = tmp_path / "so101.json"
    assert main(["calibrate", "--sim", "--out", str(out)]) == 0
    calibration = ArmCalibration.load(out, SO101_JOINTS)
    assert calibration.motors["elbow_flex"].range_min == 1300 and calibration.motors["elbow_flex"].range_max == 2800


def test_servo_ids_come_from_the_motor_table():
    from nanovla_ros.configuration import ConfigError
    from nanovla_ros.driver.config import SO101_JOINTS, SO101_MOTORS, servo_id

    assert [servo_id(j) for j in SO101_JOINTS] == [1, 2, 3, 4, 5, 6]  # LeRobot's SO-101
    assert {m.model for m in SO101_MOTORS.values()} == {"sts3215"}
    assert [default_calibration(SO101_JOINTS).motors[j].id for j in SO101_JOINTS] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(ConfigError, match="not an SO-101 motor"):
        servo_id("elbow")
