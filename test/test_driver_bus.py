"""The bus layer through the real scservo_sdk, against the STS3215 emulator on a pseudo-terminal."""
import time

import pytest
import scservo_sdk as scs
from conftest import wait_until

from nanovla_ros.driver import control_table as ct
from nanovla_ros.driver.bus import (
    MAX_EXTRA_BYTES,
    BusError,
    BusReadError,
    FeetechBus,
    ReplyLedger,
    status_packets,
)
from nanovla_ros.driver.control_table import REGISTERS
from nanovla_ros.driver.emulator import FaultConfig, Sts3215BusEmulator


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


def test_a_late_dataless_reply_does_not_answer_a_ping_s_model_read(bus, emulator):
    """scservo_sdk's ping reads the model number and indexes the reply unchecked: a dataless status packet there
    (a late reply to an earlier ping) raised IndexError out of the driver's configure. Replies are now checked
    against their request's length: the late one is discarded and the model read gets its own."""
    port = bus._port
    emulator.stall_next(3.0)  # the bus stalls: the ping below is answered late, during the next request
    with bus._lock:
        port.writePort(bytes([0xFF, 0xFF, 3, 2, ct.PING, ct.checksum([3, 2, ct.PING])]))
    bus.ledger.owe((3, 2), time.monotonic())  # what the bus records when a ping of its own gives up
    assert bus.ping(3) == ct.MODEL_STS3215
    assert bus.stats.stale_replies >= 1 and emulator.stalls == 1
    bus.ledger.owe((3, 2), time.monotonic())  # a ping reply owed but lost: the next ping's own is taken for it
    assert bus.ping(3) == ct.MODEL_STS3215  # ...once, and not again (retried, no chain of discarded replies)


def test_a_deep_backlog_of_late_replies_is_never_taken_for_a_value(emulator):
    """The bus stalls while the host keeps asking (each request gives up after a few ms): dozens of replies then
    come late, in order, among them replies of same-sized registers of the same servo, some lost or corrupted.
    Every read either fails or returns the register it asked for, never another request's value."""
    bus = FeetechBus(emulator.port_name, latency_timer_ms=1.0, retries=0)
    emulator.faults = FaultConfig(drop_rate=0.05, corrupt_rate=0.05, seed=3)
    emulator.set_raw_position(3, 2000)  # Present_Load and Present_Velocity read 0, Voltage 121, Temperature 32
    truth = {"Present_Position": 2000, "Present_Load": 0, "Present_Velocity": 0,
             "Present_Voltage": 121, "Present_Temperature": 32, "Status": 0}
    names = list(truth)
    read = failed = 0
    for stall in range(6):
        emulator.stall_next(120.0)
        for n in range(40):
            name = names[n % len(names)]
            try:
                value = bus.read(name, 3)
            except BusReadError:
                failed += 1
                continue
            read += 1
            assert value == truth[name], (stall, n, name, value)
    assert emulator.stalls == 6 and bus.stats.stale_replies > 20
    assert read > 100 and failed > 10, (read, failed)  # both paths were taken
    bus.close()


@pytest.mark.parametrize("seed", [1, 22])  # 22: replies whose LENGTH grew by one (lengthened), before they were refused
def test_sync_reads_on_a_stalling_lossy_bus_return_only_true_values(emulator, seed):
    """Six servos, the loop's mix of sync reads (positions and telemetry, 1 and 2 bytes) on a bus that stalls
    before 15 % of requests and loses or corrupts 8 % of replies: whatever is returned is what the servos hold."""
    for i in range(1, 7):
        emulator.set_raw_position(i, 1700 + 100 * i)
    bus = FeetechBus(emulator.port_name, latency_timer_ms=2.0, retries=0)
    names = ("Present_Position", "Status", "Present_Temperature", "Present_Position", "Present_Load", "Present_Voltage")
    truth = {name: bus.sync_read(name, range(1, 7)) for name in names}
    emulator.faults = FaultConfig(corrupt_rate=0.08, drop_rate=0.08, delay_rate=0.15, delay_ms=60.0, seed=seed)
    returned = 0
    for n in range(240):
        name = names[n % len(names)]
        try:
            values = bus.sync_read(name, range(1, 7))
        except BusReadError as error:
            values = error.partial
        returned += len(values)
        assert values == {i: truth[name][i] for i in values}, (n, name)
    assert returned > 500 and bus.stats.stale_replies > 50 and emulator.stalls > 20, (returned, bus.stats)
    bus.close()


def test_a_read_asks_for_a_length_no_owed_reply_has(bus):
    assert bus.read("Present_Position", 3) == ct.HALF_TURN_TICKS  # nothing owed: the register alone
    for extra in range(MAX_EXTRA_BYTES):
        bus.ledger.owe((3, 2 + extra + 2), time.monotonic() + 10.0)  # lost replies: owed until the TTL
    started = time.monotonic()
    assert bus.read("Present_Position", 3) == ct.HALF_TURN_TICKS  # the one length left...
    assert time.monotonic() - started < 0.1 and len(bus.ledger) == 0  # ...and its reply settled all older ones
    for extra in range(MAX_EXTRA_BYTES + 1):
        bus.ledger.owe((3, 2 + extra + 2), time.monotonic() + 10.0)
    with pytest.raises(BusReadError):
        bus.read("Present_Position", 3)  # every length owed: not sent, rather than a value nobody can attribute
    assert bus.stats.unattributable_reads == bus.retries + 1  # each try waited for late replies, none came
    assert bus.read("Present_Position", 2) == ct.HALF_TURN_TICKS  # another servo's replies are told apart by id


def test_the_ledger_discards_owed_replies_until_a_current_one_settles_it():
    ledger = ReplyLedger(ttl_s=1.0)
    ledger.owe((1, 4), 0.0)
    ledger.owe((1, 4), 0.1)
    assert ledger.claim((1, 4), 0.2) and ledger.claim((1, 4), 0.2) and not ledger.claim((1, 4), 0.2)
    ledger.owe((2, 3), 0.0)
    assert not ledger.claim((2, 3), 1.5)  # expired: the whole bus was silent for longer than the TTL
    ledger.owe((2, 3), 2.0)
    ledger.settle()  # a reply to a later request came: servos answer in order, nothing older is coming
    assert len(ledger) == 0 and not ledger.claim((2, 3), 2.1)


def test_status_packets_finds_whole_valid_packets_in_flushed_bytes():
    good = bytes([0xFF, 0xFF, 4, 3, 0, 7, ct.checksum([4, 3, 0, 7])])
    bad = bytes([0xFF, 0xFF, 5, 3, 0, 7, 0x00])  # wrong checksum
    assert list(status_packets(b"\x00" + good + bad + good[:4])) == [(4, 3)]


IDS = tuple(range(1, 7))
TRUTH = {"Present_Position": {i: 1000 + 100 * i for i in IDS}, "Status": {i: 0 for i in IDS},
         "Present_Temperature": {i: 32 for i in IDS}, "Present_Load": {i: 0 for i in IDS},
         "Present_Voltage": {i: 121 for i in IDS}}


@pytest.mark.parametrize("seed", [1, 2])
def test_late_replies_are_never_read_as_the_answer_to_a_later_request(seed):
    """The bus stalls (as a starved process or a USB hiccup does) before 3 % of requests, for up to 80 ms: the
    requests queue up and their replies come late, in order, while later requests wait. Every value a read
    returns must be the register's true value: a Present_Position reply read as Status showed every error bit
    and turned the arm's torque off; a Load reply read as a position put a joint at -23328 ticks."""
    with Sts3215BusEmulator(faults=FaultConfig(delay_rate=0.03, delay_ms=80.0, seed=seed)) as emu:
        for i in IDS:  # distinct, known positions (torque off: they stay)
            emu.set_raw_position(i, TRUTH["Present_Position"][i])
        bus = FeetechBus(emu.port_name, retries=0, latency_timer_ms=2.0)
        telemetry = ["Status", "Present_Temperature", "Present_Load", "Present_Voltage"]
        wrong, right = [], 0
        for cycle in range(1500):  # a control loop's pattern: positions, then one telemetry register
            for name in ("Present_Position", telemetry[cycle % 4]):
                try:
                    values = bus.sync_read(name, IDS, retries=0)
                except BusReadError as error:
                    values = error.partial
                wrong += [(cycle, name, i, v) for i, v in values.items() if v != TRUTH[name][i]]
                right += sum(v == TRUTH[name][i] for i, v in values.items())
        bus.close()
    assert emu.stalls > 50 and bus.stats.stale_replies > 100, (emu.stalls, bus.stats)
    assert not wrong, (len(wrong), wrong[:5])
    assert right > 0.95 * 1500 * 2 * len(IDS), bus.stats  # and the reads still succeed


def test_a_reply_whose_length_byte_grew_by_one_is_never_taken_for_a_value():
    """Protocol 0's checksum cannot see one corruption: a LENGTH byte one too large, with another packet right
    behind. The packet then ends on the next one's first header byte (0xFF) and its checksum holds, every time; its
    last data byte is the real checksum. Such a packet is refused (and skipped among flushed bytes); a genuine one
    is not."""
    from nanovla_ros.driver.bus import lengthened, status_packets

    def packet(servo_id: int, data: bytes) -> bytes:
        body = bytes([servo_id, len(data) + 2, 0]) + data
        return b"\xff\xff" + body + bytes([ct.checksum(body)])

    voltage = packet(6, bytes([121, 32]))  # a late reply of a 2-byte read (Present_Voltage and the byte after it)
    after = packet(1, bytes([8, 7]))
    grown = bytearray(voltage + after)
    grown[3] += 1  # LENGTH 4 -> 5: framed as 5 + 4 bytes, it takes the next packet's first 0xFF as its checksum
    framed = bytes(grown[:5 + 4])
    assert ct.checksum(framed[2:-1]) == framed[-1] == 0xFF  # what the SDK accepts: a valid 3-byte reply...
    assert lengthened(framed)  # ...which is refused
    assert not lengthened(voltage) and not lengthened(after)
    assert list(status_packets(bytes(grown))) == []  # the grown one skipped; the next lost its header
    assert list(status_packets(voltage + after)) == [(6, 4), (1, 4)]
