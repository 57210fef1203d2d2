"""The servo bus layer on scservo_sdk (package feetech-servo-sdk). No ROS imports.

``ServoBus`` is the small protocol the arm code needs; ``FeetechBus`` implements it with the
vendor SDK over a serial device (the real arm on /dev/ttyACM0, or the emulator's pseudo-terminal).
Reads are retried a bounded number of times and counted; a read that still fails raises
``BusReadError`` naming the servos that did not answer, so one corrupt packet never kills a loop.
"""
from __future__ import annotations

import logging
import select
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Protocol

import scservo_sdk as scs

from nanovla_ros.driver import control_table as ct
from nanovla_ros.driver.control_table import REGISTERS

log = logging.getLogger(__name__)


class BusError(ConnectionError):
    """The bus cannot be used (port missing, servo absent, write refused)."""


class BusReadError(BusError):
    """A read failed after all retries. ``missing`` holds the ids that did not answer."""

    def __init__(self, message: str, missing: tuple[int, ...] = (), partial: dict[int, int] | None = None) -> None:
        super().__init__(message)
        self.missing = missing
        self.partial = partial or {}


@dataclass
class BusStats:
    """Counters reported in diagnostics."""

    transactions: int = 0
    retries: int = 0
    read_failures: int = 0  # reads that failed after every retry
    corrupt: int = 0  # replies with a bad checksum or truncated
    timeouts: int = 0  # replies that never came
    per_servo_failures: dict[int, int] = field(default_factory=dict)


class ServoBus(Protocol):
    """What the arm needs from a servo bus."""

    stats: BusStats

    def ping(self, servo_id: int, attempts: int | None = None) -> int | None: ...
    def scan(self, ids: Iterable[int], attempts: int | None = None) -> dict[int, int]: ...
    def read(self, name: str, servo_id: int) -> int: ...
    def write(self, name: str, servo_id: int, value: int) -> None: ...
    def sync_read(self, name: str, ids: Iterable[int]) -> dict[int, int]: ...
    def sync_write(self, name: str, values: dict[int, int]) -> None: ...
    def close(self) -> None: ...


class _LowLatencyPort(scs.PortHandler):
    """scservo_sdk's PortHandler with two fixes that matter for a control loop:

    - ``readPort`` waits in select() instead of spinning on a non-blocking read, so waiting for a reply
      costs no CPU and releases the GIL (the SDK's loop otherwise burns a core at 100 Hz);
    - ``clearPort`` discards unread input (the SDK only flushes output), so a late or corrupted reply
      left in the buffer cannot be mistaken for the answer to the next request;
    - the reply timeout's fixed part (the SDK's 16 ms USB ``LATENCY_TIMER``, counted twice) is a
      parameter: a lost reply then costs ``latency_timer_ms`` instead of 34 ms.
    """

    def __init__(self, port_name: str, latency_timer_ms: float) -> None:
        super().__init__(port_name)
        self.latency_timer_ms = latency_timer_ms

    def setPacketTimeout(self, packet_length):  # noqa: N802 - SDK API
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = (self.tx_time_per_byte * packet_length) + self.latency_timer_ms * 2.0 + 2.0

    def readPort(self, length):  # noqa: N802 - SDK API
        if self.ser.in_waiting == 0:
            remaining_ms = self.packet_timeout - self.getTimeSinceStart()
            if remaining_ms > 0:
                select.select([self.ser.fileno()], [], [], remaining_ms / 1000.0)
        return self.ser.read(length)

    def clearPort(self):  # noqa: N802 - SDK API
        self.ser.reset_input_buffer()
        self.ser.flush()


class FeetechBus:
    """Feetech STS3215 servos over scservo_sdk, protocol 0."""

    def __init__(self, port: str, baudrate: int = 1_000_000, retries: int = 2,
                 latency_timer_ms: float = 16.0) -> None:
        self.port_name = port
        self.retries = retries
        self.stats = BusStats()
        self._port = _LowLatencyPort(port, latency_timer_ms)
        self._packets = scs.PacketHandler(0)
        self._lock = threading.Lock()  # one transaction on the wire at a time
        self._readers: dict[tuple[str, tuple[int, ...]], scs.GroupSyncRead] = {}
        try:
            opened = self._port.openPort()
        except Exception as error:  # noqa: BLE001 - pyserial raises several types
            raise BusError(f"cannot open serial port {port!r}: {error}") from error
        if not opened or not self._port.setBaudRate(baudrate):
            raise BusError(f"cannot open serial port {port!r} at {baudrate} baud")

    def close(self) -> None:
        with self._lock:
            if self._port.is_open:
                self._port.closePort()

    # ------------------------------------------------------------------ single servo
    def _count_failure(self, result: int, servo_ids: Iterable[int]) -> None:
        if result == scs.COMM_RX_CORRUPT:
            self.stats.corrupt += 1
        elif result == scs.COMM_RX_TIMEOUT:
            self.stats.timeouts += 1
        for servo_id in servo_ids:
            self.stats.per_servo_failures[servo_id] = self.stats.per_servo_failures.get(servo_id, 0) + 1

    def ping(self, servo_id: int, attempts: int | None = None) -> int | None:
        """The servo's model number, or None if it does not answer ``attempts`` times (default retries + 1).

        scservo_sdk's ping reads the model number and indexes the reply without checking its length: a status
        packet without data (a late reply to an earlier ping, which the SDK takes for the read's) raises
        IndexError. Seen when the workcell's emulator stalled at start-up: the driver's configure died silently
        and the arm never moved. Here it counts as a corrupt reply and the ping is retried on a clean line."""
        for _ in range(attempts or self.retries + 1):
            try:
                with self._lock:
                    model, result, _ = self._packets.ping(self._port, servo_id)
            except IndexError:
                with self._lock:
                    self._port.clearPort()
                model, result = None, scs.COMM_RX_CORRUPT
                self._count_failure(result, [servo_id])
            self.stats.transactions += 1
            if result == scs.COMM_SUCCESS:
                return model
        return None

    def scan(self, ids: Iterable[int] = range(1, 7), attempts: int | None = None) -> dict[int, int]:
        """id -> model number of every servo that answers."""
        found = {}
        for servo_id in ids:
            model = self.ping(servo_id, attempts)
            if model is not None:
                found[servo_id] = model
        return found

    def read(self, name: str, servo_id: int, retries: int | None = None) -> int:
        register = REGISTERS[name]
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            with self._lock:
                data, result, _ = self._packets.readTxRx(self._port, servo_id, register.address, register.size)
            self.stats.transactions += 1
            if result == scs.COMM_SUCCESS and len(data) == register.size:
                return ct.decode_value(register, ct.from_bytes(register, data))
            self._count_failure(result, [servo_id])
            if attempt < retries:
                self.stats.retries += 1
        self.stats.read_failures += 1
        raise BusReadError(f"servo {servo_id} did not answer a read of {name} after {retries + 1} tries",
                           (servo_id,))

    def write(self, name: str, servo_id: int, value: int) -> None:
        """Write one register and wait for the servo's acknowledgement (retried)."""
        register = REGISTERS[name]
        if register.read_only:
            raise BusError(f"{name} is read-only")
        payload = list(ct.to_bytes(register, ct.encode_value(register, value)))
        for attempt in range(self.retries + 1):
            with self._lock:
                result, _ = self._packets.writeTxRx(self._port, servo_id, register.address, register.size, payload)
            self.stats.transactions += 1
            if result == scs.COMM_SUCCESS:
                return
            self._count_failure(result, [servo_id])
            if attempt < self.retries:
                self.stats.retries += 1
        raise BusError(f"servo {servo_id} did not acknowledge writing {name}={value} after {self.retries + 1} tries")

    @contextmanager
    def eeprom_unlocked(self, servo_id: int) -> Iterator[None]:
        """EEPROM writes happen with torque off and Lock = 0; Lock is restored afterwards."""
        self.write("Torque_Enable", servo_id, 0)
        self.write("Lock", servo_id, 0)
        try:
            yield
        finally:
            self.write("Lock", servo_id, 1)

    def write_eeprom(self, name: str, servo_id: int, value: int) -> None:
        if not REGISTERS[name].eeprom:
            raise BusError(f"{name} is not an EEPROM register; use write()")
        with self.eeprom_unlocked(servo_id):
            self.write(name, servo_id, value)

    # ------------------------------------------------------------------ group
    def sync_read(self, name: str, ids: Iterable[int], retries: int | None = None) -> dict[int, int]:
        """One SYNC_READ of ``name`` from ``ids``, retried ``retries`` times (default: the bus's); if it still
        fails, servos are read one by one (same retries), so the error names exactly the servos that did
        not answer, with the others' values. That one-by-one pass is also the cheapest recovery from a
        single corrupted reply: a control loop can pass retries=0."""
        register = REGISTERS[name]
        retries = self.retries if retries is None else retries
        ids = tuple(ids)
        key = (name, ids)
        reader = self._readers.get(key)
        if reader is None:
            reader = scs.GroupSyncRead(self._port, self._packets, register.address, register.size)
            for servo_id in ids:
                reader.addParam(servo_id)
            self._readers[key] = reader
        for attempt in range(retries + 1):
            with self._lock:
                result = reader.txRxPacket()
                values = {i: reader.getData(i, register.address, register.size) for i in ids} \
                    if result == scs.COMM_SUCCESS else None
            self.stats.transactions += 1
            if values is not None:
                return {i: ct.decode_value(register, v) for i, v in values.items()}
            self._count_failure(result, ())
            if attempt < retries:
                self.stats.retries += 1
        # Find out who is silent, keeping what the others say.
        self.stats.retries += 1
        partial, missing = {}, []
        for servo_id in ids:
            try:
                partial[servo_id] = self.read(name, servo_id, retries)
            except BusReadError:
                missing.append(servo_id)
        if not missing:
            return partial
        raise BusReadError(f"servo(s) {missing} did not answer a sync read of {name}", tuple(missing), partial)

    def sync_write(self, name: str, values: dict[int, int]) -> None:
        """One SYNC_WRITE (broadcast: no acknowledgement on the wire)."""
        register = REGISTERS[name]
        writer = scs.GroupSyncWrite(self._port, self._packets, register.address, register.size)
        for servo_id, value in values.items():
            writer.addParam(servo_id, list(ct.to_bytes(register, ct.encode_value(register, value))))
        with self._lock:
            result = writer.txPacket()
        self.stats.transactions += 1
        if result != scs.COMM_SUCCESS:
            raise BusError(f"sync write of {name} failed: {self._packets.getTxRxResult(result)}")
