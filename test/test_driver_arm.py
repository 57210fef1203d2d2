"""The arm core over the real SDK and the emulator: fault tolerance, fault handling, modes."""
import numpy as np
import pytest

from conftest import wait_until
from nanovla_ros.driver import control_table as ct
from nanovla_ros.driver.arm import ArmMode, ControlLoop, So101Arm
from nanovla_ros.driver.bus import FeetechBus
from nanovla_ros.driver.calibration import CalibrationError, default_calibration
from nanovla_ros.driver.config import DriverConfig
from nanovla_ros.driver.emulator import FaultConfig, Sts3215BusEmulator
from nanovla_ros.driver.executor import ChunkRejected, make_chunk

CONFIG = DriverConfig(latency_timer_ms=2.0, servo_timeout_ms=100.0)
JOINTS = CONFIG.joint_names


def make_arm(emulator, calibrated=True, config=CONFIG):
    bus = FeetechBus(emulator.port_name, retries=config.bus_retries, latency_timer_ms=config.latency_timer_ms)
    arm = So101Arm(bus, default_calibration(JOINTS) if calibrated else None, config)
    arm.connect()
    return arm


def sine_chunk(chunk_id, stamp_s, horizon=30):
    t = stamp_s + np.arange(horizon) / 30.0
    table = 0.4 * np.sin(0.5 * t)[:, None] * np.ones(len(JOINTS))[None]  # (H, J)
    return make_chunk(chunk_id, stamp_s, 1 / 30, 10, list(JOINTS), table.ravel(), horizon, JOINTS)


def test_2000_control_cycles_with_5_percent_corrupted_replies_keep_tracking():
    with Sts3215BusEmulator(faults=FaultConfig(corrupt_rate=0.05, seed=7)) as emu:
        arm = make_arm(emu)
        arm.enable()
        t = 1000.0
        for cycle in range(2000):
            arm.read_positions()
            if cycle % 10 == 0:
                arm.submit(sine_chunk(cycle, t), t)
            command = arm.control(t)
            assert command is not None and arm.health.mode is ArmMode.ACTIVE
            t += 1 / 30
        stats = arm.bus.stats
        assert emu.replies_corrupted > 50 and stats.retries > 0 and stats.corrupt + stats.timeouts > 0
        # A cycle whose read failed outright keeps the last positions; that must stay rare.
        assert stats.read_failures < 0.02 * 2000 * len(JOINTS), stats
        # The servos reach the last command.
        expected = command.positions
        assert wait_until(lambda: np.allclose(arm.read_positions(), expected, atol=0.01), 5.0), \
            (arm.read_positions(), expected)
        arm.bus.close()


def test_silent_servo_means_hold_fault_and_refused_chunks_until_reset():
    with Sts3215BusEmulator() as emu:
        arm = make_arm(emu)
        arm.enable()
        arm.submit(sine_chunk(1, 5.0), 5.0)
        emu.servos[3].silent = True
        assert wait_until(lambda: arm.read_positions() is not None and arm.health.mode is ArmMode.FAULT, 5.0)
        assert "elbow_flex" in arm.health.fault
        held = [emu.servos[i].get("Goal_Position") for i in (1, 2)]
        assert arm.control(5.1) is None and arm.control(5.5) is None  # no longer executing the chunk
        with pytest.raises(ChunkRejected, match="fault"):
            arm.submit(sine_chunk(2, 5.2), 5.2)
        assert [emu.servos[i].get("Goal_Position") for i in (1, 2)] == held  # the others hold
        emu.servos[3].silent = False
        arm.reset_faults()
        assert arm.health.mode is ArmMode.IDLE and emu.servos[1].get("Torque_Enable") == 0
        arm.enable()
        assert arm.health.mode is ArmMode.ACTIVE
        arm.bus.close()


def test_overload_takes_that_joints_torque_off():
    with Sts3215BusEmulator() as emu:
        arm = make_arm(emu)
        arm.enable()
        emu.servos[2].status_bits = ct.ERR_OVERLOAD
        arm.read_telemetry("Status")
        assert arm.health.mode is ArmMode.FAULT and "overload" in arm.health.fault
        assert emu.servos[2].get("Torque_Enable") == 0 and emu.servos[1].get("Torque_Enable") == 1
        assert arm.health.telemetry["shoulder_lift"].torque_off_by_fault
        arm.bus.close()


def test_torque_is_refused_without_calibration():
    with Sts3215BusEmulator() as emu:
        arm = make_arm(emu, calibrated=False)
        with pytest.raises(CalibrationError, match="nanovla calibrate"):
            arm.enable()
        assert all(s.get("Torque_Enable") == 0 for s in emu.servos.values())
        arm.bus.close()


def test_enable_does_not_jump():
    with Sts3215BusEmulator() as emu:
        emu.set_raw_position(1, 2600)
        arm = make_arm(emu)
        arm.enable()
        assert emu.servos[1].get("Goal_Position") == 2600  # goal = present before torque on
        arm.bus.close()


def test_loop_publishes_state_and_commands_and_leader_mode():
    config = DriverConfig(latency_timer_ms=2.0, leader_mode=True)
    with Sts3215BusEmulator() as emu:
        arm = make_arm(emu, config=config)
        arm.disable()
        states, commands = [], []
        loop = ControlLoop(arm, lambda t, p: states.append(p), lambda t, c: commands.append(c))
        loop.start()
        emu.set_raw_position(1, 2300)  # the operator moves the leader arm
        assert wait_until(lambda: commands and commands[-1].positions[0] > 0.3, 5.0)
        loop.stop()
        assert commands[-1].source == "leader" and len(states) > len(commands)
        assert emu.servos[1].get("Torque_Enable") == 0
        arm.bus.close()
