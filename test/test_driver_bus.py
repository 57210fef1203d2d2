"""The bus layer through the real scservo_sdk, against the STS3215 emulator on a pseudo-terminal."""
import pytest
import scservo_sdk as scs

from nanovla_ros.driver import control_table as ct
from nanovla_ros.driver.bus import BusError, BusReadError, FeetechBus
from nanovla_ros.driver.control_table import REGISTERS
from nanovla_ros.driver.emulator import FaultConfig, Sts3215BusEmulator

from conftest import wait_until


@pytest.fixture
def emulator():
    with Sts3215BusEmulator() as emu:
        yield emu


@pytest.fixture
def bus(emulator):
    bus = FeetechBus(emulator.port_name, latency_timer_ms=2.0)
    yield bus
    bus.close()


@pytest.mark.parametrize("name, value, raw", [
    ("Goal_Position", 1000, 1000), ("Goal_Position", -5, 0x8005),
    ("Homing_Offset", -100, 0x864), ("Homing_Offset", 2047, 2047), ("Present_Load", -3, 0x403),
])
def test_sign_magnitude_encoding(name, value, raw):
    register = REGISTERS[name]
    assert ct.encode_value(register, value) == raw
    assert ct.decode_value(register, raw) == value
    assert scs.SCS_TOHOST(raw, register.sign_bit) == value  # agrees with the vendor SDK's own helper


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(ValueError):
        ct.encode_value(REGISTERS["Homing_Offset"], 2048)
    with pytest.raises(ValueError):
        ct.encode_value(REGISTERS["Torque_Enable"], 256)


def test_ping_and_scan_find_six_sts3215(bus):
    assert bus.scan(range(1, 9)) == {i: ct.MODEL_STS3215 for i in range(1, 7)}
    assert bus.ping(7) is None


def test_read_write_round_trip_with_signs(bus, emulator):
    bus.write("Goal_Velocity", 2, -1234)
    assert bus.read("Goal_Velocity", 2) == -1234
    assert emulator.servos[2].get("Goal_Velocity") == -1234
    with pytest.raises(BusError, match="read-only"):
        bus.write("Present_Position", 1, 5)


def test_eeprom_is_guarded_by_lock(bus, emulator):
    bus.write("Homing_Offset", 3, 50)  # Lock = 1 (power-on): the write is acknowledged but ignored
    assert bus.read("Homing_Offset", 3) == 0 and emulator.servos[3].ignored_eeprom_writes > 0
    bus.write_eeprom("Homing_Offset", 3, -100)
    assert bus.read("Homing_Offset", 3) == -100 and bus.read("Lock", 3) == 1
    # Present_Position = raw - Homing_Offset
    assert bus.read("Present_Position", 3) == ct.HALF_TURN_TICKS + 100


def test_sync_write_moves_servos_within_limits(bus, emulator):
    bus.write_eeprom("Max_Position_Limit", 1, 2500)
    for servo_id in (1, 2):
        bus.write("Torque_Enable", servo_id, 1)
    bus.sync_write("Goal_Position", {1: 3000, 2: 1500})
    assert wait_until(lambda: bus.sync_read("Present_Position", (1, 2)) == {1: 2500, 2: 1500}, 5.0)
    assert bus.sync_read("Present_Position", (3,)) == {3: ct.HALF_TURN_TICKS}  # torque off: stays


def test_torque_off_servo_does_not_move(bus, emulator):
    bus.sync_write("Goal_Position", {4: 100})
    assert not wait_until(lambda: bus.read("Moving", 4) == 1, 0.3)
    assert bus.read("Present_Position", 4) == ct.HALF_TURN_TICKS


def test_silent_servo_is_named_and_others_still_read(bus, emulator):
    emulator.servos[4].silent = True
    with pytest.raises(BusReadError) as caught:
        bus.sync_read("Present_Position", range(1, 7))
    assert caught.value.missing == (4,)
    assert sorted(caught.value.partial) == [1, 2, 3, 5, 6]
    assert bus.stats.read_failures == 1 and bus.stats.per_servo_failures[4] >= 1


def test_corrupted_replies_are_retried_and_counted():
    with Sts3215BusEmulator(faults=FaultConfig(corrupt_rate=0.3, seed=3)) as emu:
        bus = FeetechBus(emu.port_name, retries=5, latency_timer_ms=2.0)
        for _ in range(50):
            assert bus.sync_read("Present_Position", range(1, 7)) == {i: ct.HALF_TURN_TICKS for i in range(1, 7)}
        assert bus.stats.retries > 0 and bus.stats.corrupt + bus.stats.timeouts > 0
        assert emu.replies_corrupted > 0
        bus.close()


def test_emulator_ignores_packets_with_bad_checksums(emulator):
    port = scs.PortHandler(emulator.port_name)
    assert port.openPort() and port.setBaudRate(1_000_000)
    port.writePort(bytes([0xFF, 0xFF, 1, 2, ct.PING, 0x00]))  # wrong checksum
    assert not wait_until(lambda: port.getBytesAvailable() > 0, 0.2)
    port.writePort(bytes([0xFF, 0xFF, 1, 2, ct.PING, ct.checksum([1, 2, ct.PING])]))
    assert wait_until(lambda: port.getBytesAvailable() >= 6, 2.0)
    assert list(port.readPort(6)) == [0xFF, 0xFF, 1, 2, 0, ct.checksum([1, 2, 0])]
    port.closePort()


def test_missing_port_is_a_clear_error():
    with pytest.raises(BusError, match="/dev/ttyNANOVLA"):
        FeetechBus("/dev/ttyNANOVLA")


def test_reg_write_takes_effect_on_action(bus, emulator):
    packets = scs.PacketHandler(0)
    register = REGISTERS["Goal_Velocity"]
    with bus._lock:  # the SDK's REG_WRITE / ACTION, not wrapped by FeetechBus
        result, _ = packets.regWriteTxRx(bus._port, 5, register.address, 2, list(ct.to_bytes(register, 777)))
    assert result == scs.COMM_SUCCESS
    assert emulator.servos[5].get("Goal_Velocity") == 0  # registered, not applied yet
    with bus._lock:
        packets.action(bus._port, ct.BROADCAST_ID)
    assert wait_until(lambda: emulator.servos[5].get("Goal_Velocity") == 777, 2.0)


def test_a_ping_whose_model_read_gets_a_dataless_reply_is_retried(bus):
    """scservo_sdk's ping indexes the model-number reply unchecked: a dataless status packet there (a late
    reply to an earlier ping) raised IndexError out of the driver's configure. It is a corrupt reply: retried."""
    real = bus._packets.readTxRx
    calls = []

    def late_reply_first(port, servo_id, address, length):
        calls.append(servo_id)
        if len(calls) == 1:
            return [], scs.COMM_SUCCESS, 0  # what the SDK returns when it reads a ping's status as the read's
        return real(port, servo_id, address, length)

    bus._packets.readTxRx = late_reply_first
    assert bus.ping(3) == ct.MODEL_STS3215
    assert calls == [3, 3] and bus.stats.corrupt == 1 and bus.stats.per_servo_failures == {3: 1}
    bus._packets.readTxRx = lambda *args: ([], scs.COMM_SUCCESS, 0)
    assert bus.ping(3, attempts=2) is None  # never a model: no answer, no exception
