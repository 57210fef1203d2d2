"""Wires the STS3215 bus emulator to the simulated workcell: Goal_Position written by the driver (through
scservo_sdk, over the pseudo-terminal) becomes the simulated actuators' targets, and the simulated joint
angles become Present_Position. The driver node therefore runs unchanged against the simulation.

Units: the emulated arm's calibration puts 0 rad of every simulated joint at tick 2047 (half a turn), so
the driver's radians and MuJoCo's radians are the same numbers. With torque off, a joint holds where it is
(the simulated servo has no limp mode).
"""
from __future__ import annotations

import numpy as np

from nanovla_ros.driver.calibration import RAD_PER_TICK, ArmCalibration, MotorCalibration
from nanovla_ros.driver.config import servo_id
from nanovla_ros.driver.control_table import HALF_TURN_TICKS
from nanovla_ros.driver.emulator import Sts3215BusEmulator
from nanovla_ros.sim.workcell import JOINTS, Workcell


def sim_calibration(workcell: Workcell) -> ArmCalibration:
    """LeRobot-format calibration of the simulated arm: symmetric ranges about 2047 that cover each
    joint's simulated range (the workcell clips targets to the actuator ranges themselves)."""
    motors = {}
    for name, low, high in zip(JOINTS, workcell.ctrl_low, workcell.ctrl_high, strict=True):
        half = int(np.ceil(max(abs(low), abs(high)) / RAD_PER_TICK))
        motors[name] = MotorCalibration(servo_id(name), 0, 0, HALF_TURN_TICKS - half, HALF_TURN_TICKS + half)
    return ArmCalibration(motors)


class WorkcellServoBridge:
    def __init__(self, workcell: Workcell, emulator: Sts3215BusEmulator) -> None:
        if not emulator.external_motion:
            raise ValueError("the emulator must be created with external_motion=True to follow the simulation")
        self.workcell, self.emulator = workcell, emulator
        self.calibration = sim_calibration(workcell)
        self.sync_positions()

    def targets(self) -> np.ndarray:
        """The six actuator targets (rad) the servos are asked for; a joint without torque holds."""
        present = self.workcell.joint_positions
        targets = present.copy()
        with self.emulator.locked():
            for index, name in enumerate(JOINTS):
                motor = self.calibration.motors[name]
                servo = self.emulator.servos[motor.id]
                if servo.get("Torque_Enable") == 1 and not servo.silent:
                    goal_ticks = servo.goal_raw() - servo.get("Homing_Offset")
                    targets[index] = motor.ticks_to_rad(goal_ticks)
        return targets

    def sync_positions(self) -> None:
        """Simulated joint angles -> the servos' encoders."""
        positions = self.workcell.joint_positions
        with self.emulator.locked():
            for index, name in enumerate(JOINTS):
                motor = self.calibration.motors[name]
                servo = self.emulator.servos[motor.id]
                servo.raw_position = float(motor.rad_to_ticks(positions[index]) + servo.get("Homing_Offset"))

    def step(self) -> np.ndarray:
        """One control period of the workcell driven by the servos' goals; returns the targets used."""
        targets = self.targets()
        self.workcell.step(targets)
        self.sync_positions()
        return targets
