"""An STS3215 servo bus emulator on a pseudo-terminal, speaking the real Feetech protocol 0.

The driver under test opens ``emulator.port_name`` through scservo_sdk exactly as it would open
/dev/ttyACM0, so packets, checksums, sync reads and timeouts all take the real code paths.

What it models, per servo id: the control table (EEPROM guarded by Lock, Homing_Offset applied to
present and goal positions), motion toward Goal_Position with a speed and acceleration limit,
position limits, torque on/off, and faults: a rate of corrupted, dropped or delayed replies (a delay stalls the
whole bus, as a starved process or a USB hiccup does: requests queue up and are answered late, in order), a
servo that stops answering, and injected Status bits (over-temperature, overload) reported in every reply.

It is a test fixture and the demo's arm backend (`python -m nanovla_ros.driver.emulator` runs it standalone); the
simulated workcell will later take present positions from physics through ``Sts3215BusEmulator.servos``.
No ROS imports.
"""
from __future__ import annotations

import logging
import math
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass

from nanovla_ros.driver import control_table as ct
from nanovla_ros.driver.config import SO101_MOTORS
from nanovla_ros.driver.control_table import REGISTERS, Register

log = logging.getLogger(__name__)

DEFAULT_MAX_SPEED_TICKS_S = 3000.0  # ~264 deg/s: an STS3215 at 12 V with Goal_Velocity 0
DEFAULT_MAX_ACCEL_TICKS_S2 = 25_000.0  # Acceleration 0 = the servo's maximum


@dataclass
class FaultConfig:
    corrupt_rate: float = 0.0  # probability that a reply has one byte flipped
    drop_rate: float = 0.0  # probability that a reply is never sent
    seed: int = 0
    delay_rate: float = 0.0  # probability that the bus stalls before serving a request
    delay_ms: float = 0.0  # the longest such stall; each lasts a uniform draw up to it (requests wait, in order)


class EmulatedServo:
    """One STS3215: its memory and a kinematic motor model."""

    def __init__(self, servo_id: int, raw_position: float = ct.HALF_TURN_TICKS) -> None:
        self.memory = bytearray(ct.MEMORY_SIZE)
        for register in REGISTERS.values():
            self._store(register, register.default)
        self._store(REGISTERS["ID"], servo_id)
        self.raw_position = float(raw_position)  # encoder ticks, before Homing_Offset
        self.velocity = 0.0  # ticks/s
        self.silent = False  # stops answering entirely (unplugged, brown-out)
        self.status_bits = 0  # injected Status / error bits
        self.ignored_eeprom_writes = 0

    # --- memory
    def _store(self, register: Register, raw: int) -> None:
        self.memory[register.address:register.address + register.size] = ct.to_bytes(register, raw)

    def get(self, name: str) -> int:
        register = REGISTERS[name]
        return ct.decode_value(register, ct.from_bytes(register, self.memory[register.address:]))

    def set(self, name: str, value: int) -> None:
        register = REGISTERS[name]
        self._store(register, ct.encode_value(register, value))

    @property
    def servo_id(self) -> int:
        return self.memory[REGISTERS["ID"].address]

    def read(self, address: int, length: int) -> bytes:
        self._refresh_present()
        return bytes(self.memory[address:address + length])

    def write(self, address: int, data: bytes) -> None:
        for offset, byte in enumerate(data):
            addr = address + offset
            if addr < REGISTERS["Torque_Enable"].address and self.memory[REGISTERS["Lock"].address] == 1:
                self.ignored_eeprom_writes += 1  # EEPROM is write-protected while Lock = 1
                continue
            if addr in (0, 1, 3, 4) or addr >= REGISTERS["Present_Position"].address:
                continue  # read-only
            self.memory[addr] = byte
        if address <= REGISTERS["Torque_Enable"].address < address + len(data) and self.get("Torque_Enable") == 0:
            self.velocity = 0.0

    # --- motion
    def _offset(self) -> int:
        return self.get("Homing_Offset")

    def present_ticks(self) -> int:
        return (int(round(self.raw_position)) - self._offset()) % ct.TICKS_PER_TURN

    def goal_raw(self) -> float:
        goal = min(max(self.get("Goal_Position"), self.get("Min_Position_Limit")), self.get("Max_Position_Limit"))
        return float(goal + self._offset())

    def step(self, dt_s: float) -> None:
        if self.get("Torque_Enable") != 1 or self.silent:
            self.velocity = 0.0
            return
        speed = self.get("Goal_Velocity") or DEFAULT_MAX_SPEED_TICKS_S
        accel = self.get("Acceleration") * 100.0 or DEFAULT_MAX_ACCEL_TICKS_S2
        error = self.goal_raw() - self.raw_position
        # Trapezoidal approach: the fastest speed from which the servo can still stop at the goal.
        desired = math.copysign(min(abs(speed), math.sqrt(2.0 * accel * abs(error))), error)
        dv = max(-accel * dt_s, min(accel * dt_s, desired - self.velocity))
        self.velocity += dv
        step = self.velocity * dt_s
        if abs(step) >= abs(error):
            self.raw_position, self.velocity = self.goal_raw(), 0.0
        else:
            self.raw_position += step

    def _refresh_present(self) -> None:
        self.set("Present_Position", self.present_ticks())
        self.set("Present_Velocity", int(round(self.velocity)))
        self.set("Moving", int(abs(self.velocity) > 1.0))
        self.memory[REGISTERS["Status"].address] = self.status_bits & 0xFF
        load = 0 if self.get("Torque_Enable") != 1 else int(max(-1000, min(1000, (self.goal_raw() - self.raw_position) * 2)))
        self.set("Present_Load", load)


class Sts3215BusEmulator:
    """Servos 1-6 (by default) behind one pseudo-terminal."""

    def __init__(self, ids: tuple[int, ...] = tuple(m.id for m in SO101_MOTORS.values()), faults: FaultConfig | None = None,
                 physics_dt_s: float = 0.002, external_motion: bool = False) -> None:
        """``external_motion``: the servos do not move by their own motor model; something else (the
        simulated workcell, through ``locked()``) reads their goals and writes their positions."""
        self.servos = {i: EmulatedServo(i) for i in ids}
        self.external_motion = external_motion
        self.faults = faults or FaultConfig()
        self._rng = random.Random(self.faults.seed)
        self._physics_dt_s = physics_dt_s
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass untouched
        self.port_name = os.ttyname(self._slave)
        self._lock = threading.RLock()  # held while packets are served or physics steps
        self._registered: dict[int, tuple[int, bytes]] = {}  # REG_WRITE, applied on ACTION
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sts3215_emulator", daemon=True)
        self._last_physics = time.monotonic()
        self.packets_served = 0
        self.replies_corrupted = 0
        self.replies_dropped = 0
        self.stalls = 0
        self._stall_next_s = 0.0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Sts3215BusEmulator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Sts3215BusEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ test and sim hooks
    def locked(self):
        """Hold while changing servo state from another thread (tests, the workcell)."""
        return self._lock

    def stall_next(self, delay_ms: float) -> None:
        """Stall before serving the next request, as if the process were stopped (SIGSTOP) that long."""
        self._stall_next_s = delay_ms / 1e3

    def set_raw_position(self, servo_id: int, ticks: float) -> None:
        """Move a joint by hand (torque off) or from physics."""
        with self._lock:
            self.servos[servo_id].raw_position = float(ticks)

    # ------------------------------------------------------------------ serving
    def _run(self) -> None:
        buffer = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], self._physics_dt_s)
            self._advance_physics()
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:
                return  # the pty was closed
            buffer.extend(chunk)
            for packet in self._extract_packets(buffer):
                self._maybe_stall()
                with self._lock:
                    self._serve(packet)

    def _maybe_stall(self) -> None:
        delay_s, self._stall_next_s = self._stall_next_s, 0.0
        if not delay_s and self.faults.delay_rate and self._rng.random() < self.faults.delay_rate:
            delay_s = self._rng.uniform(0.0, self.faults.delay_ms) / 1e3
        if delay_s:
            self.stalls += 1
            time.sleep(delay_s)  # the fault itself: nothing is served meanwhile

    def _advance_physics(self) -> None:
        if self.external_motion:
            return
        now = time.monotonic()
        with self._lock:
            while now - self._last_physics >= self._physics_dt_s:
                for servo in self.servos.values():
                    servo.step(self._physics_dt_s)
                self._last_physics += self._physics_dt_s
            if now - self._last_physics > 1.0:  # after a long stall, do not replay it step by step
                self._last_physics = now

    @staticmethod
    def _extract_packets(buffer: bytearray):
        """Yield complete, checksum-valid instruction packets (ID, INSTR, params); drop garbage."""
        while True:
            start = buffer.find(b"\xff\xff")
            if start < 0:
                del buffer[:-1]
                return
            del buffer[:start]
            if len(buffer) < 4:
                return
            length = buffer[3]
            if length < 2:
                del buffer[:2]
                continue
            if len(buffer) < 4 + length:
                return
            body = bytes(buffer[2:3 + length])  # ID, LEN, INSTR, params
            chk = buffer[3 + length]
            del buffer[:4 + length]
            if ct.checksum(body) != chk:
                continue  # a real servo ignores a packet with a bad checksum
            yield body[0], body[2], body[3:]

    def _reply(self, servo: EmulatedServo, data: bytes = b"") -> None:
        if servo.silent:
            return
        if self._rng.random() < self.faults.drop_rate:
            self.replies_dropped += 1
            return
        body = bytes([servo.servo_id, len(data) + 2, servo.status_bits & 0x7F]) + data
        packet = bytearray(b"\xff\xff" + body + bytes([ct.checksum(body)]))
        if self._rng.random() < self.faults.corrupt_rate:
            index = self._rng.randrange(2, len(packet))
            packet[index] ^= 1 << self._rng.randrange(8)
            self.replies_corrupted += 1
        os.write(self._master, bytes(packet))

    def _serve(self, packet: tuple[int, int, bytes]) -> None:
        servo_id, instruction, params = packet
        self.packets_served += 1
        targets = list(self.servos.values()) if servo_id == ct.BROADCAST_ID else (
            [self.servos[servo_id]] if servo_id in self.servos else [])
        unicast = servo_id != ct.BROADCAST_ID
        if instruction == ct.PING:
            for servo in targets if unicast else []:
                self._reply(servo)
        elif instruction == ct.READ and len(params) >= 2:
            for servo in targets if unicast else []:
                self._reply(servo, servo.read(params[0], params[1]))
        elif instruction == ct.WRITE and len(params) >= 1:
            for servo in targets:
                if not servo.silent:
                    servo.write(params[0], params[1:])
                    if unicast:
                        self._reply(servo)
        elif instruction == ct.REG_WRITE and len(params) >= 1:
            for servo in targets:
                self._registered[servo.servo_id] = (params[0], bytes(params[1:]))
                if unicast:
                    self._reply(servo)
        elif instruction == ct.ACTION:
            for servo in targets:
                if servo.servo_id in self._registered:
                    servo.write(*self._registered.pop(servo.servo_id))
        elif instruction == ct.SYNC_READ and len(params) >= 2:
            address, length = params[0], params[1]
            for requested in params[2:]:
                servo = self.servos.get(requested)
                if servo is not None:
                    self._reply(servo, servo.read(address, length))
        elif instruction == ct.SYNC_WRITE and len(params) >= 2:
            address, length = params[0], params[1]
            entries = params[2:]
            for i in range(0, len(entries) - length, length + 1):
                servo = self.servos.get(entries[i])
                if servo is not None and not servo.silent:
                    servo.write(address, entries[i + 1:i + 1 + length])


class EmulatorProcess:
    """The emulator in its own process, like a real bus: no GIL shared with the driver under test.

    ``port_name`` is the pseudo-terminal to open. Stops on ``stop()`` (or when this process exits).
    """

    def __init__(self, faults: FaultConfig | None = None) -> None:
        import subprocess
        import sys

        faults = faults or FaultConfig()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "nanovla_ros.driver.emulator", "--corrupt-rate", str(faults.corrupt_rate),
             "--drop-rate", str(faults.drop_rate), "--seed", str(faults.seed),
             "--delay-rate", str(faults.delay_rate), "--delay-ms", str(faults.delay_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._process.stdout.readline().strip()
        if not line.startswith("PORT "):
            self._process.kill()
            raise RuntimeError(f"bus emulator did not start (said {line!r})")
        self.port_name = line.split(" ", 1)[1]

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()  # the emulator exits when its stdin closes
            try:
                self._process.wait(5)
            except Exception:  # noqa: BLE001 - make sure it is gone
                self._process.kill()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    """`python -m nanovla_ros.driver.emulator`: serve a bus until stdin closes; prints `PORT <pty>`."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="STS3215 bus emulator on a pseudo-terminal")
    parser.add_argument("--corrupt-rate", type=float, default=0.0)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delay-rate", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    faults = FaultConfig(args.corrupt_rate, args.drop_rate, args.seed, args.delay_rate, args.delay_ms)
    with Sts3215BusEmulator(faults=faults) as emulator:
        print(f"PORT {emulator.port_name}", flush=True)
        try:
            sys.stdin.read()  # until the parent closes our stdin (or dies)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
