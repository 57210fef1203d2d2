"""The SO-101 arm: bus + calibration + chunk executor + fault handling, and its control loop.
No ROS imports: the driver node wraps ``So101Arm`` and ``ControlLoop``.

One loop thread owns the bus. Every cycle (``state_rate_hz``) it sync-reads Present_Position; when a
control tick is due (``control_rate_hz``) it asks the executor for the command and sync-writes
Goal_Position; at ``telemetry_rate_hz`` it reads one telemetry register (load, temperature, voltage,
status) per cycle, round robin, so no cycle carries them all.

Faults never kill the loop. A failed read is retried by the bus and counted. A servo silent for
``servo_timeout_ms`` puts the arm in FAULT: the other joints hold their last target, chunks are
refused until ``reset_faults()``. An overload, over-temperature or over-current status bit takes that
joint's torque off and also puts the arm in FAULT, but only once a direct read of that servo's Status
confirms it: taking torque off drops a loaded arm, so one reading is not enough.

Readings are checked before they are believed: a position outside the encoder's 0-4095 ticks, or one further
from the last than the joint could have moved, is set aside until the next reading agrees with it.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nanovla_ros.driver import control_table as ct
from nanovla_ros.driver.bus import BusError, BusReadError, ServoBus
from nanovla_ros.driver.calibration import ArmCalibration, CalibrationError
from nanovla_ros.driver.config import DriverConfig, servo_id
from nanovla_ros.driver.executor import Chunk, ChunkExecutor, ChunkRejected, Command

log = logging.getLogger(__name__)

# Torque_Enable is read back, not assumed: diagnostics report what the servos say.
TELEMETRY_REGISTERS = ("Status", "Present_Temperature", "Present_Load", "Present_Voltage", "Torque_Enable")
# Plausibility of position readings: an STS3215 turns at up to ~3000 ticks/s; twice that leaves room for a
# hand moving a torque-free joint. A faster jump must be read twice (within the margin) before it is believed.
MAX_JOINT_SPEED_TICKS_S = 6000.0
JUMP_MARGIN_TICKS = 64


class ArmMode(enum.Enum):
    IDLE = "idle"  # reading state, torque off
    ACTIVE = "active"  # torque on, executing chunks
    LEADER = "leader"  # torque off, positions published as commands (teleoperation)
    FAULT = "fault"  # holding; chunks refused until reset


@dataclass
class JointTelemetry:
    status_bits: int = 0
    temperature_c: int = 0
    load: int = 0
    voltage_v: float = 0.0
    torque_off_by_fault: bool = False
    torque_enabled: bool | None = None  # as last read from the servo (None: not read yet)


@dataclass
class ArmHealth:
    mode: ArmMode = ArmMode.IDLE
    fault: str = ""
    silent_since_s: dict[str, float] = field(default_factory=dict)
    telemetry: dict[str, JointTelemetry] = field(default_factory=dict)
    implausible_readings: int = 0  # positions set aside (out of range, or a jump not read twice)
    unconfirmed_status: int = 0  # shutdown bits in a Status reading that a direct read did not confirm


class So101Arm:
    def __init__(self, bus: ServoBus, calibration: ArmCalibration | None, config: DriverConfig) -> None:
        self.bus, self.calibration, self.config = bus, calibration, config
        self.joints = config.joint_names
        if calibration is not None:
            calibration.check_joints(self.joints)
            self.ids = {n: calibration.motors[n].id for n in self.joints}
        else:
            self.ids = {n: servo_id(n) for n in self.joints}
        self.health = ArmHealth(telemetry={n: JointTelemetry() for n in self.joints})
        limits = calibration.limits_rad(self.joints) if calibration else [(-np.pi, np.pi)] * len(self.joints)
        self.executor = ChunkExecutor.from_config(config, limits)
        self.positions_rad = np.zeros(len(self.joints))  # last known, (J,)
        self.raw_ticks = {n: ct.HALF_TURN_TICKS for n in self.joints}
        self._read_at_s: dict[str, float] = {}  # when raw_ticks was last believed
        self._jump: dict[str, int] = {}  # a reading set aside as a jump, waiting for a second one
        self._lock = threading.RLock()  # guards mode changes against the loop

    # ------------------------------------------------------------------ set-up
    def connect(self) -> None:
        """Check every joint's servo answers and is an STS3215; raise BusError naming the ones that do not."""
        # Start-up is worth a few more tries than a control cycle: a noisy bus must not look like a missing servo.
        found = self.bus.scan(self.ids.values(), attempts=10)
        missing = [f"{n} (id {i})" for n, i in self.ids.items() if i not in found]
        if missing:
            raise BusError(f"no answer from servo(s) {missing} on the bus; check power and wiring")
        wrong = [f"{n} (model {found[i]})" for n, i in self.ids.items() if found[i] != ct.MODEL_STS3215]
        if wrong:
            log.warning("servo(s) %s are not STS3215 (model %d)", wrong, ct.MODEL_STS3215)
        self.read_positions()

    def _to_rad(self, name: str, ticks: int) -> float:
        if self.calibration is None:
            return (ticks - ct.HALF_TURN_TICKS) * 2 * np.pi / ct.TICKS_PER_TURN
        return self.calibration.motors[name].ticks_to_rad(ticks)

    def _to_ticks(self, name: str, rad: float) -> int:
        return self.calibration.motors[name].rad_to_ticks(rad)

    def read_positions(self, now_s: float | None = None) -> np.ndarray:
        """Sync-read positions; silent servos keep their last value and are tracked for the fault check."""
        now_s = time.monotonic() if now_s is None else now_s
        try:
            # No whole-group retry in the hot path: the bus's one-by-one fallback recovers a corrupted
            # reply for the price of one timeout, and a silent servo costs two instead of six.
            ticks = self.bus.sync_read("Present_Position", self.ids.values(), retries=0)
            missing: tuple[int, ...] = ()
        except BusReadError as error:
            ticks, missing = error.partial, error.missing
        for index, name in enumerate(self.joints):
            servo_id = self.ids[name]
            if servo_id in missing:
                self.health.silent_since_s.setdefault(name, now_s)
                continue
            self.health.silent_since_s.pop(name, None)
            if not self._plausible(name, ticks[servo_id], now_s):
                continue
            self.raw_ticks[name] = ticks[servo_id]
            self._read_at_s[name] = now_s
            self.positions_rad[index] = self._to_rad(name, ticks[servo_id])
        self._check_silence(now_s)
        return self.positions_rad.copy()

    def _plausible(self, name: str, ticks: int, now_s: float) -> bool:
        """Whether a position reading may be believed (see the module docstring); counts the ones set aside."""
        if not 0 <= ticks <= ct.MAX_TICK:
            self.health.implausible_readings += 1
            return False
        since = self._read_at_s.get(name)
        if since is None or abs(ticks - self.raw_ticks[name]) <= \
                MAX_JOINT_SPEED_TICKS_S * max(0.0, now_s - since) + JUMP_MARGIN_TICKS:
            self._jump.pop(name, None)
            return True
        previous = self._jump.get(name)
        if previous is not None and abs(ticks - previous) <= JUMP_MARGIN_TICKS:
            del self._jump[name]  # read twice in a row: the joint really is there
            return True
        self._jump[name] = ticks
        self.health.implausible_readings += 1
        return False

    def _check_silence(self, now_s: float) -> None:
        limit_s = self.config.servo_timeout_ms / 1e3
        silent = [n for n, since in self.health.silent_since_s.items() if now_s - since >= limit_s]
        if silent and self.health.mode is not ArmMode.FAULT:
            self._enter_fault(f"servo(s) {silent} silent for over servo_timeout_ms={self.config.servo_timeout_ms:g}")

    def _enter_fault(self, reason: str) -> None:
        with self._lock:
            previous = self.health.mode
            self.health.mode, self.health.fault = ArmMode.FAULT, reason
            self.executor.reset(self.positions_rad)  # hold where the arm is
        log.error("arm FAULT (was %s): %s; holding, chunks refused until reset", previous.value, reason)

    # ------------------------------------------------------------------ modes
    def enable(self) -> None:
        """Torque on without a jump: goal = present position first."""
        if self.calibration is None:
            raise CalibrationError("refusing to enable torque without a calibration: run `nanovla calibrate "
                                   "--port <port> --out <file>` and set calibration_file")
        with self._lock:
            if self.health.mode is ArmMode.FAULT:
                raise BusError(f"arm is in FAULT ({self.health.fault}); reset faults first")
            present = self.read_positions()
            goals = {self.ids[n]: self.raw_ticks[n] for n in self.joints}
            self.bus.sync_write("Goal_Position", goals)
            for name in self.joints:
                self.bus.write("Torque_Enable", self.ids[name], 1)
                self.health.telemetry[name].torque_off_by_fault = False
            self.executor.reset(present)
            self.health.mode = ArmMode.ACTIVE

    def disable(self) -> None:
        """Torque off on every joint (best effort: a silent servo must not stop the others)."""
        with self._lock:
            for name in self.joints:
                try:
                    self.bus.write("Torque_Enable", self.ids[name], 0)
                except BusError as error:
                    log.error("could not disable torque of %s: %s", name, error)
            if self.health.mode is not ArmMode.FAULT:
                self.health.mode = ArmMode.LEADER if self.config.leader_mode else ArmMode.IDLE

    def hold(self) -> None:
        """Drop the current chunk and hold the present position."""
        with self._lock:
            self.executor.reset(self.positions_rad)

    def reset_faults(self) -> None:
        """Leave FAULT once every servo answers again; torque stays off until enable()."""
        with self._lock:
            self.health.silent_since_s.clear()
            self.read_positions()
            if self.health.silent_since_s:
                raise BusError(f"servo(s) {sorted(self.health.silent_since_s)} still do not answer")
            self.health.mode, self.health.fault = ArmMode.IDLE, ""
        self.disable()

    def commanded_rad(self) -> np.ndarray:
        """(J,) radians: the last target sent to the servos, or where they are if none was sent yet."""
        with self._lock:
            return self.executor.last_command(self.positions_rad)

    def submit(self, chunk: Chunk, now_s: float) -> None:
        with self._lock:
            if self.health.mode is not ArmMode.ACTIVE:
                self.executor.rejected += 1
                reason = f" ({self.health.fault})" if self.health.fault else ""
                raise ChunkRejected(f"arm is {self.health.mode.value}{reason}, not active: chunk {chunk.chunk_id} refused")
            self.executor.submit(chunk, now_s)

    # ------------------------------------------------------------------ loop work
    def control(self, now_s: float) -> Command | None:
        """One control tick: the executor's command, written to the servos. None unless ACTIVE."""
        with self._lock:
            if self.health.mode is not ArmMode.ACTIVE:
                return None
            command = self.executor.step(now_s, self.positions_rad)
            goals = {self.ids[n]: self._to_ticks(n, command.positions[i]) for i, n in enumerate(self.joints)
                     if not self.health.telemetry[n].torque_off_by_fault}
        self.bus.sync_write("Goal_Position", goals)
        return command

    def read_telemetry(self, register: str) -> None:
        try:
            values = self.bus.sync_read(register, self.ids.values())
        except BusReadError as error:
            values = error.partial
        for name in self.joints:
            value = values.get(self.ids[name])
            if value is None:
                continue
            t = self.health.telemetry[name]
            if register == "Status":
                if value & ct.SHUTDOWN_ERRORS and not t.torque_off_by_fault:
                    value = self._confirmed_status(name, value)
                    if value & ct.SHUTDOWN_ERRORS:
                        self._shutdown_joint(name, value)
                t.status_bits = value
            elif register == "Present_Temperature":
                t.temperature_c = value
            elif register == "Present_Load":
                t.load = value
            elif register == "Torque_Enable":
                t.torque_enabled = value == 1
            else:
                t.voltage_v = value / 10.0

    def _confirmed_status(self, name: str, bits: int) -> int:
        """The Status of ``name`` read again on its own; 0 if that read fails (no confirmation, no action)."""
        try:
            confirmed = self.bus.read("Status", self.ids[name])
        except BusReadError:
            confirmed = 0
        if not confirmed & ct.SHUTDOWN_ERRORS:
            self.health.unconfirmed_status += 1
            log.warning("%s: Status read %s (%#x), not confirmed by a second read; torque stays on",
                        name, ct.describe_errors(bits), bits)
        return confirmed

    def _shutdown_joint(self, name: str, bits: int) -> None:
        self.health.telemetry[name].torque_off_by_fault = True
        try:
            self.bus.write("Torque_Enable", self.ids[name], 0)
        except BusError as error:
            log.error("could not take torque off %s: %s", name, error)
        self._enter_fault(f"{name}: {ct.describe_errors(bits)}; its torque is off")


@dataclass
class LoopStats:
    cycles: int = 0
    control_ticks: int = 0
    missed_control_ticks: int = 0  # control periods in which no goal was written (gap > 1.5 periods)
    periods_s: list[float] = field(default_factory=list)  # last N state-cycle periods
    read_s: list[float] = field(default_factory=list)  # last N sync-read durations


class ControlLoop:
    """Runs the arm's state / control / telemetry schedule on one thread."""

    def __init__(self, arm: So101Arm, on_state: Callable[[float, np.ndarray], None],
                 on_command: Callable[[float, Command], None], window: int = 2000) -> None:
        self.arm, self.on_state, self.on_command = arm, on_state, on_command
        config = arm.config
        self._state_period = 1.0 / config.state_rate_hz
        self._control_period = 1.0 / config.control_rate_hz
        self._telemetry_period = 1.0 / config.telemetry_rate_hz
        self._window = window
        self.stats = LoopStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="so101_control_loop", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _record(self, values: list[float], value: float) -> None:
        values.append(value)
        if len(values) > self._window:
            del values[: len(values) - self._window]

    def _run(self) -> None:
        start = time.monotonic()
        next_state, next_control, next_telemetry = start, start, start + self._telemetry_period
        telemetry_queue: list[str] = []
        last_cycle = None
        last_write = None
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_state:
                self._stop.wait(next_state - now)
                continue
            if last_cycle is not None:
                self._record(self.stats.periods_s, now - last_cycle)
            last_cycle = now
            wall = time.time()
            try:
                # The control write goes first, at the tick: a slow read (a lost reply costs a timeout)
                # then delays only the state, never the command. The executor is driven by time.
                if now >= next_control:
                    command = self.arm.control(wall)
                    written = time.monotonic()
                    if last_write is not None and written - last_write > 1.5 * self._control_period:
                        self.stats.missed_control_ticks += round((written - last_write) / self._control_period) - 1
                    last_write = written
                    self.stats.control_ticks += 1
                    if command is not None:
                        self.on_command(wall, command)
                    elif self.arm.health.mode is ArmMode.LEADER:
                        self.on_command(wall, Command(self.arm.positions_rad.copy(), "leader", -1, -1, False))
                    next_control += self._control_period
                    if now - next_control > self._control_period:  # fell far behind: resynchronise
                        next_control = now + self._control_period
                t0 = time.perf_counter()
                positions = self.arm.read_positions(now)
                self._record(self.stats.read_s, time.perf_counter() - t0)
                self.on_state(wall, positions)
                # Telemetry only in a cycle with time to spare, one register at a time.
                spare = time.monotonic() - now < 0.5 * self._state_period
                if telemetry_queue and spare:
                    self.arm.read_telemetry(telemetry_queue.pop(0))
                elif now >= next_telemetry:
                    telemetry_queue = list(TELEMETRY_REGISTERS)
                    next_telemetry += self._telemetry_period
            except BusError as error:  # a write failed: counted by the bus, reported, never fatal
                log.warning("bus error in control loop: %s", error)
            self.stats.cycles += 1
            next_state += self._state_period
            if time.monotonic() - next_state > self._state_period:  # overran: skip, do not burst
                next_state = time.monotonic()
