"""The servo bus layer on scservo_sdk (package feetech-servo-sdk). No ROS imports.

``ServoBus`` is the small protocol the arm code needs; ``FeetechBus`` implements it with the
vendor SDK over a serial device (the real arm on /dev/ttyACM0, or the emulator's pseudo-terminal).
Reads are retried a bounded number of times and counted; a read that still fails raises
``BusReadError`` naming the servos that did not answer, so one corrupt packet never kills a loop.

Every reply is checked against its request before its bytes are used: the servo id must be one that was
asked, and the packet's LENGTH must be the requested data length + 2 (scservo_sdk's ``readRx`` checks neither:
it cuts ``length`` bytes from the first packet with the right id). Protocol 0 has no sequence numbers, so a
reply that comes after its request gave up (a stalled host or USB adapter) would otherwise be taken as the
answer to the next request, e.g. a Present_Position reply read as the Status register. Two things prevent it:

- every read asks for a data length that no reply still owed by the servos it asks has: its register and as
  many bytes of the registers after it (ignored) as make (id, LENGTH) unique (``MAX_EXTRA_BYTES`` at most, and
  none while nothing is owed); if every length is owed, the bus first collects late replies for up to
  ``DRAIN_S``, and fails the read without sending it if that does not free one;
- ``ReplyLedger`` remembers the replies each failed request still owes; a packet that matches an owed
  (id, length) is the late answer to an earlier request and is discarded, and a reply that matches the current
  request (which no earlier one can, its key being unique) settles everything older: servos on one bus answer
  in request order.

Writes and pings are acknowledged by a dataless reply, (id, 2) whatever they did: before one is sent, owed
(id, 2) replies are waited for (``DRAIN_S``), so a late acknowledgement is rarely taken for the current one.

Protocol 0's checksum misses one corruption entirely: a LENGTH byte one too large, with another packet right behind,
frames a packet whose checksum always holds (``lengthened``); such a packet is treated as damaged.

A reply that cannot be attributed is a failed read, never a value.
"""
from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import scservo_sdk as scs

from nanovla_ros.driver import control_table as ct
from nanovla_ros.driver.config import SO101_MOTORS
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
    stale_replies: int = 0  # late replies to earlier requests, recognised and discarded
    unexpected_replies: int = 0  # valid packets that answer nothing asked (wrong id or length), discarded
    unattributable_reads: int = 0  # reads not sent: every reply length was still owed by earlier requests
    per_servo_failures: dict[int, int] = field(default_factory=dict)


SO101_IDS = tuple(m.id for m in SO101_MOTORS.values())

# How long a reply stays owed after its request gave up. Any reply that answers a later request settles
# the ledger earlier (servos answer in order); this only bounds it while the whole bus is silent.
OWED_REPLY_TTL_S = 1.0

# A read asks for at most this many bytes past its register to make its reply's length unique (see the module
# docstring): 8 bytes cost 80 us a servo at 1 Mbaud, and only while that many replies of the servo are owed.
MAX_EXTRA_BYTES = 8
# The longest a request waits for owed replies (a stalled bus answering late) before it is sent or given up.
DRAIN_S = 0.05

Key = tuple[int, int]  # (servo id, the status packet's LENGTH byte = data bytes + 2)


class ReplyLedger:
    """Replies owed by requests that ended without them, by (id, LENGTH); pure logic, no I/O."""

    def __init__(self, ttl_s: float = OWED_REPLY_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._owed: dict[Key, list[float]] = {}  # key -> expiry times, oldest first

    def owe(self, key: Key, now_s: float) -> None:
        self._owed.setdefault(key, []).append(now_s + self.ttl_s)

    def claim(self, key: Key, now_s: float) -> bool:
        """True if a packet with ``key`` is the late reply to an earlier request (and counts it as paid)."""
        expiries = [t for t in self._owed.get(key, ()) if t > now_s]
        if not expiries:
            self._owed.pop(key, None)
            return False
        self._owed[key] = expiries[1:]
        return True

    def owes(self, key: Key, now_s: float) -> bool:
        """Whether a reply with ``key`` may still come as the late answer to an earlier request."""
        return any(t > now_s for t in self._owed.get(key, ()))

    def settle(self) -> None:
        """A reply to the current request came: every earlier reply has come or never will."""
        self._owed.clear()

    def __len__(self) -> int:
        return sum(len(v) for v in self._owed.values())


def lengthened(packet) -> bool:
    """Whether a checksum-valid status packet (header to checksum) may be a shorter one whose LENGTH byte was
    corrupted to one more. Such a packet takes the next packet's first header byte (0xFF) as its checksum, and that
    checksum always holds: the original checksum byte, now read as data, tops the sum up to 0xFF, and the extra
    LENGTH unit makes it 0x00, whose complement is 0xFF. Back-to-back replies (a sync read, replies that came late
    together) are where it happens. A genuine packet looks like this once in 65,536 (checksum 0xFF and a valid
    shorter reading): it is then refused too, as a damaged reply."""
    length = packet[3]
    if length < 3 or packet[-1] != 0xFF or len(packet) != length + 4:
        return False
    shorter = bytes([packet[2], length - 1]) + bytes(packet[4:3 + length - 1])  # ID, LENGTH - 1, ERROR, data[:-1]
    return ct.checksum(shorter) == packet[3 + length - 1]


def status_packets(data: bytes) -> Iterator[tuple[int, int]]:
    """(id, LENGTH) of every complete, checksum-valid status packet in ``data`` (bytes flushed unread); one that may
    have a corrupted LENGTH (``lengthened``) is skipped."""
    i = 0
    while True:
        i = data.find(b"\xff\xff", i)
        if i < 0 or i + 4 > len(data):
            return
        servo_id, length = data[i + 2], data[i + 3]
        end = i + 4 + length
        if length >= 2 and end <= len(data) and ct.checksum(data[i + 2:end - 1]) == data[end - 1]:
            if not lengthened(data[i:end]):
                yield servo_id, length
            i = end
        else:
            i += 1


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
      left in the buffer cannot be mistaken for the answer to the next request; what it discards is
      handed to ``on_discard`` first (the bus settles owed replies with it);
    - the reply timeout's fixed part (the SDK's 16 ms USB ``LATENCY_TIMER``, counted twice) is a
      parameter: a lost reply then costs ``latency_timer_ms`` instead of 34 ms.
    """

    def __init__(self, port_name: str, latency_timer_ms: float) -> None:
        super().__init__(port_name)
        self.latency_timer_ms = latency_timer_ms
        self.on_discard: Callable[[bytes], None] | None = None

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
        waiting = self.ser.in_waiting
        unread = self.ser.read(waiting) if waiting else b""
        self.ser.reset_input_buffer()
        self.ser.flush()
        if unread and self.on_discard is not None:
            self.on_discard(bytes(unread))


class FeetechBus:
    """Feetech STS3215 servos over scservo_sdk, protocol 0.

    Requests go out through the SDK's packet builders and ``txPacket``; replies are framed and checksummed by
    the SDK's ``rxPacket`` and then validated here against the request (see the module docstring)."""

    def __init__(self, port: str, baudrate: int = 1_000_000, retries: int = 2,
                 latency_timer_ms: float = 16.0) -> None:
        self.port_name = port
        self.retries = retries
        self.stats = BusStats()
        self.ledger = ReplyLedger()
        self._port = _LowLatencyPort(port, latency_timer_ms)
        self._port.on_discard = self._on_discard
        self._packets = scs.PacketHandler(0)
        self._lock = threading.Lock()  # one transaction on the wire at a time
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

    # ------------------------------------------------------------------ transactions
    def _on_discard(self, unread: bytes) -> None:
        """Replies that arrived after their request gave up and before the next one: they pay owed replies."""
        now = time.monotonic()
        for key in status_packets(unread):
            if self.ledger.claim(key, now):
                self.stats.stale_replies += 1
            else:
                self.stats.unexpected_replies += 1

    def _collect_late_replies(self, done: Callable[[], bool], budget_s: float = DRAIN_S) -> None:
        """Take replies off the line, each paying an owed one, until ``done()`` or ``budget_s`` passes (lock held)."""
        deadline = time.monotonic() + budget_s
        while not done():
            remaining_ms = (deadline - time.monotonic()) * 1e3
            if remaining_ms <= 0:
                return
            self._port.packet_start_time = self._port.getCurrentTime()
            self._port.packet_timeout = remaining_ms
            packet, result = self._packets.rxPacket(self._port)
            if result == scs.COMM_SUCCESS and not lengthened(packet):
                if self.ledger.claim((packet[2], packet[3]), time.monotonic()):
                    self.stats.stale_replies += 1
                else:
                    self.stats.unexpected_replies += 1

    def _unique_span(self, size: int, ids: tuple[int, ...]) -> int | None:
        """The data length a read of a ``size``-byte register from ``ids`` asks for: the shortest whose reply no
        earlier request still owes (lock held). None if every one is owed after waiting ``DRAIN_S``."""
        def free() -> int | None:
            now = time.monotonic()
            for span in range(size, size + MAX_EXTRA_BYTES + 1):
                if not any(self.ledger.owes((i, span + 2), now) for i in ids):
                    return span
            return None

        span = free()
        if span is None:
            self._collect_late_replies(lambda: free() is not None)
            span = free()
        return span

    def _transact(self, send: Callable[[int], int], ids: tuple[int, ...], size: int
                  ) -> tuple[dict[int, bytes], int]:
        """Send one request (``send(span)``: an SDK Tx call) and collect the replies of ``ids``. ``size``: the
        register's size for a read, which asks for a span no owed reply has; 0 for a ping or an acknowledged write.
        Returns the validated data by id and the SDK result of the first failure (COMM_SUCCESS if none)."""
        with self._lock:
            if size:
                span = self._unique_span(size, ids)
                if span is None:
                    self.stats.unattributable_reads += 1
                    return {}, scs.COMM_RX_TIMEOUT
            else:
                span = 0
                self._collect_late_replies(lambda: not any(self.ledger.owes((i, 2), time.monotonic()) for i in ids))
            result = send(span)
            if result != scs.COMM_SUCCESS:
                self._port.is_using = False
                return {}, result
            replies, result = self._receive(ids, span)
        self.stats.transactions += 1
        return replies, result

    def _receive(self, ids: tuple[int, ...], data_bytes: int) -> tuple[dict[int, bytes], int]:
        length = data_bytes + 2  # the status packet's LENGTH byte: ERROR, data, CHECKSUM
        remaining = list(ids)
        replies: dict[int, bytes] = {}
        failure = scs.COMM_SUCCESS
        settled = set()  # ids whose reply needs no owing: it came damaged, or a late twin was taken for it
        while remaining:
            packet, result = self._packets.rxPacket(self._port)
            if result == scs.COMM_SUCCESS and lengthened(packet):
                result = scs.COMM_RX_CORRUPT  # a LENGTH one too large: whose reply it was cannot be told
                packet = []
            if result != scs.COMM_SUCCESS:
                failure = result
                if result == scs.COMM_RX_CORRUPT and len(packet) >= 4 and packet[2] in remaining \
                        and packet[3] == length:
                    settled.add(packet[2])  # our reply came, damaged: nothing more will come for it
                if result == scs.COMM_RX_CORRUPT and not self._port.isPacketTimeout():
                    continue  # the others of a sync read may still come
                break
            key = (packet[2], packet[3])  # ID, LENGTH
            if self.ledger.claim(key, time.monotonic()):
                self.stats.stale_replies += 1  # a late answer to an earlier request: ours is behind it
                if key[1] == length:
                    settled.add(key[0])
                self._port.setPacketTimeout((length + 4) * len(remaining))
                continue
            if key[0] in remaining and key[1] == length:
                replies[key[0]] = bytes(packet[5:5 + data_bytes])
                remaining.remove(key[0])
                self.ledger.settle()
                continue
            self.stats.unexpected_replies += 1
        self._port.is_using = False
        now = time.monotonic()
        # Replies that may still come are owed, to be recognised and discarded. Not those in ``settled``: if a
        # late reply of the same (id, length) was discarded and nothing followed it, it may have been ours (the
        # ledger owed one that was lost); owing again would make every later request like it discard its reply.
        for servo_id in remaining:
            if servo_id not in settled:
                self.ledger.owe((servo_id, length), now)
        if remaining and failure == scs.COMM_SUCCESS:
            failure = scs.COMM_RX_TIMEOUT
        return replies, failure

    def _count_failure(self, result: int, servo_ids: Iterable[int]) -> None:
        if result == scs.COMM_RX_CORRUPT:
            self.stats.corrupt += 1
        elif result == scs.COMM_RX_TIMEOUT:
            self.stats.timeouts += 1
        for servo_id in servo_ids:
            self.stats.per_servo_failures[servo_id] = self.stats.per_servo_failures.get(servo_id, 0) + 1

    # ------------------------------------------------------------------ single servo
    def _ping_tx(self, servo_id: int) -> int:
        packet = [0] * 6
        packet[scs.PKT_ID], packet[scs.PKT_LENGTH], packet[scs.PKT_INSTRUCTION] = servo_id, 2, scs.INST_PING
        result = self._packets.txPacket(self._port, packet)
        if result == scs.COMM_SUCCESS:
            self._port.setPacketTimeout(6)
        return result

    def ping(self, servo_id: int, attempts: int | None = None) -> int | None:
        """The servo's model number, or None if it does not answer ``attempts`` times (default retries + 1)."""
        for _ in range(attempts or self.retries + 1):
            replies, result = self._transact(lambda _span: self._ping_tx(servo_id), (servo_id,), 0)
            if servo_id in replies:
                try:
                    return self.read("Model_Number", servo_id, retries=0)
                except BusReadError:
                    continue  # counted by read
            self._count_failure(result, [servo_id])
        return None

    def scan(self, ids: Iterable[int] = SO101_IDS, attempts: int | None = None) -> dict[int, int]:
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
            replies, result = self._transact(
                lambda span: self._packets.readTx(self._port, servo_id, register.address, span),
                (servo_id,), register.size)
            if servo_id in replies:
                return ct.decode_value(register, ct.from_bytes(register, replies[servo_id]))
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

        def send(_span: int) -> int:
            result = self._packets.writeTxOnly(self._port, servo_id, register.address, register.size, payload)
            self._port.setPacketTimeout(6)
            return result

        for attempt in range(self.retries + 1):
            replies, result = self._transact(send, (servo_id,), 0)
            if servo_id in replies:
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
        """One SYNC_READ of ``name`` from ``ids``; the servos that did not answer are asked again in a group
        ``retries`` times (default: the bus's), then one by one (same retries), so the error names exactly the
        servos that did not answer, with the others' values. That one-by-one pass is also the cheapest recovery
        from a single corrupted reply: a control loop can pass retries=0."""
        register = REGISTERS[name]
        retries = self.retries if retries is None else retries
        ids = tuple(ids)
        values: dict[int, int] = {}
        remaining = ids
        for attempt in range(retries + 1):
            asked = remaining
            replies, result = self._transact(
                lambda span: self._packets.syncReadTx(self._port, register.address, span, list(asked), len(asked)),
                asked, register.size)
            values.update({i: ct.decode_value(register, ct.from_bytes(register, d)) for i, d in replies.items()})
            remaining = tuple(i for i in asked if i not in replies)
            if not remaining:
                return {i: values[i] for i in ids}
            self._count_failure(result, ())
            if attempt < retries:
                self.stats.retries += 1
        # Find out who is silent, keeping what the others say.
        self.stats.retries += 1
        missing = []
        for servo_id in remaining:
            try:
                values[servo_id] = self.read(name, servo_id, retries)
            except BusReadError:
                missing.append(servo_id)
        if not missing:
            return {i: values[i] for i in ids}
        raise BusReadError(f"servo(s) {missing} did not answer a sync read of {name}", tuple(missing), values)

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
