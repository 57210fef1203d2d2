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


@pytest.mark.parametrize("faults, cycles", [
    (FaultConfig(delay_rate=0.03, delay_ms=80.0, seed=11), 1200),
    # far worse than any real bus: a stall before every tenth request, 3 % corrupted and 3 % lost replies
    (FaultConfig(corrupt_rate=0.03, drop_rate=0.03, delay_rate=0.1, delay_ms=60.0, seed=12), 500),
], ids=["stalls", "stalls+corrupt+drops"])
def test_no_false_fault_and_no_false_position_when_replies_come_late(faults, cycles):
    """A loaded arm holding still, its loop reading positions and telemetry (Status included) while the bus
    stalls: the arm must never leave ACTIVE (no joint's torque taken off) and never report a position the
    servos are not at."""
    config = DriverConfig(latency_timer_ms=2.0, servo_timeout_ms=1000.0, bus_retries=0)
    with Sts3215BusEmulator(faults=FaultConfig(seed=faults.seed)) as emu:
        for i in range(1, 7):
            emu.set_raw_position(i, 1700 + 100 * i)
        arm = make_arm(emu, config=config)
        arm.enable()
        truth = arm.read_positions()
        emu.faults = faults  # from here on
        worst, t = 0.0, 100.0
        for cycle in range(cycles):
            # the loop's clock, as control's: silence is counted in 10 ms cycles, not in the host's wall time (a
            # host busy elsewhere for a second is not what this test is about)
            positions = arm.read_positions(t)
            arm.read_telemetry(("Status", "Present_Temperature", "Present_Load", "Present_Voltage")[cycle % 4])
            arm.control(t)
            t += 0.01
            worst = max(worst, float(np.max(np.abs(positions - truth))))
            assert arm.health.mode is ArmMode.ACTIVE, (cycle, arm.health.fault)
        assert emu.stalls > 20 and arm.bus.stats.stale_replies > 0, (emu.stalls, arm.bus.stats)
        assert worst < 0.01, worst  # radians: the servos hold within a tick or two
        assert not any(t.torque_off_by_fault for t in arm.health.telemetry.values())
        assert all(s.get("Torque_Enable") == 1 for s in emu.servos.values())
        arm.bus.close()


class _MisreadingBus(FeetechBus):
    """The real bus, except that chosen sync reads return what a misattributed reply would have given."""

    def __init__(self, *args, lies: dict[str, list[dict[int, int]]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lies = lies

    def sync_read(self, name, ids, retries=None):
        values = super().sync_read(name, ids, retries)
        if self.lies.get(name):
            values.update(self.lies[name].pop(0))
        return values


def test_a_status_reading_that_a_direct_read_does_not_confirm_keeps_torque_on():
    with Sts3215BusEmulator() as emu:
        bus = _MisreadingBus(emu.port_name, latency_timer_ms=2.0, lies={"Status": [{2: 0xDC}]})
        arm = So101Arm(bus, default_calibration(JOINTS), CONFIG)
        arm.connect()
        arm.enable()
        arm.read_telemetry("Status")  # shows over-temperature and overload; the servo itself says nothing
        assert arm.health.mode is ArmMode.ACTIVE and arm.health.unconfirmed_status == 1
        assert emu.servos[2].get("Torque_Enable") == 1
        emu.servos[2].status_bits = ct.ERR_OVERLOAD  # a real overload is confirmed and acted on
        arm.read_telemetry("Status")
        assert arm.health.mode is ArmMode.FAULT and emu.servos[2].get("Torque_Enable") == 0
        bus.close()


def test_implausible_positions_are_set_aside_until_read_twice():
    with Sts3215BusEmulator() as emu:
        bus = _MisreadingBus(emu.port_name, latency_timer_ms=2.0,
                             lies={"Present_Position": [{}, {}, {1: -23328}, {1: 5000}, {1: 3500}]})
        arm = So101Arm(bus, default_calibration(JOINTS), CONFIG)
        arm.connect()
        before = arm.read_positions(10.0)
        assert np.allclose(arm.read_positions(10.01), before)  # out of the encoder's range
        assert np.allclose(arm.read_positions(10.02), before)
        assert np.allclose(arm.read_positions(10.03), before)  # 1450 ticks in 10 ms: a jump, read once
        assert arm.health.implausible_readings == 3
        emu.set_raw_position(1, 3500)  # the joint really moved (by hand): read twice, believed
        after = arm.read_positions(10.04)
        assert after[0] > before[0] + 2.0 and arm.health.implausible_readings == 3
        assert not arm.health.silent_since_s
        bus.close()
