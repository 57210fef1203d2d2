"""Long-short chunk execution with safety limits (no ROS imports).

A chunk holds H planned joint targets; action k is due at ``stamp_s + k * dt_s`` (the stamp is the time
of the observation the policy saw). On every control tick the executor:

1. picks the current chunk's action by time, so actions whose time has passed are skipped, never
   replayed late; from the action due when the chunk arrived it runs ``execute_steps`` (h) actions (the
   policy replans every h steps), and up to ``overrun_steps`` more while the next chunk is late, then holds
   the last target until one arrives. Counting h from the arrival, not from the observation, is what lets
   a slow host work at all: a chunk that arrives 350 ms after its frame (an inference on two CPU cores)
   would otherwise find its h = 10 actions at 30 Hz all in the past and never move the arm;
2. blends a newly arrived chunk into the one it replaces: for ``blend_steps`` ticks the target is a
   linear cross-fade, ``(1 - w) * old + w * new`` with ``w = i / (blend_steps + 1)`` for i = 1..blend_steps,
   where ``old`` is what the old chunk would command at that time (or its last target once it ended).
   That removes the jump at chunk boundaries that makes arms stutter;
3. clamps to the calibrated joint limits and limits the change per tick to ``max_step_rad``; the result
   is the command actually sent.

Bad chunks (wrong joint names or count, a shape that does not match, NaN/Inf, dt <= 0, stale, stamped more
than ``future_tolerance_s`` ahead of now, a target further than ``limit_margin_rad`` outside the calibrated
range) are rejected with a reason and change nothing. Small overshoots of the range are clamped.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from nanovla_ros.driver.config import DriverConfig


class ChunkRejected(ValueError):
    """A chunk that must not be executed; the message says why."""


@dataclass(frozen=True)
class Chunk:
    chunk_id: int
    stamp_s: float  # observation time, seconds (same clock as the executor's `now_s`)
    dt_s: float
    execute_steps: int  # h
    positions: np.ndarray  # (H, J) radians, in the driver's joint order

    def index_at(self, now_s: float) -> int:
        """Index of the action due at ``now_s`` (earlier ones are past; negative stamps clamp to 0)."""
        return max(0, int(math.floor((now_s - self.stamp_s) / self.dt_s + 1e-9)))

    def last_index(self, start_index: int, overrun_steps: int) -> int:
        """The last action that may run when the chunk started at ``start_index`` (see the module docstring)."""
        return min(start_index + self.execute_steps + overrun_steps, self.positions.shape[0]) - 1


def make_chunk(chunk_id: int, stamp_s: float, dt_s: float, execute_steps: int, joint_names: list[str],
               positions: list[float] | np.ndarray, horizon: int, driver_joints: tuple[str, ...]) -> Chunk:
    """Validate a chunk as it arrives (message fields) and reorder it to the driver's joint order."""
    if list(joint_names) and sorted(joint_names) != sorted(driver_joints):
        raise ChunkRejected(f"joint names {list(joint_names)} do not match the arm's {list(driver_joints)}")
    if len(joint_names) != len(driver_joints):
        raise ChunkRejected(f"chunk has {len(joint_names)} joint names, the arm has {len(driver_joints)} joints")
    flat = np.asarray(positions, dtype=np.float64)
    n_joints = len(driver_joints)
    if horizon < 1 or flat.size != horizon * n_joints:
        raise ChunkRejected(f"positions has {flat.size} values, expected horizon {horizon} x {n_joints} joints")
    if not np.all(np.isfinite(flat)):
        raise ChunkRejected("positions contain NaN or Inf")
    if not (math.isfinite(dt_s) and dt_s > 0.0):
        raise ChunkRejected(f"dt_s={dt_s} must be a positive number of seconds")
    if execute_steps < 1:
        raise ChunkRejected(f"execute_steps={execute_steps} must be >= 1")
    table = flat.reshape(horizon, n_joints)  # (H, J) in the message's joint order
    order = [list(joint_names).index(name) for name in driver_joints]
    return Chunk(chunk_id, stamp_s, dt_s, execute_steps, table[:, order].copy())


@dataclass(frozen=True)
class Command:
    positions: np.ndarray  # (J,) radians actually to send
    source: str  # "chunk" | "blend" | "hold"
    chunk_id: int  # -1 when holding without a chunk
    step_index: int  # index of the chunk action used, -1 when holding
    clamped: bool  # limits or max_step_rad changed the target


class ChunkExecutor:
    def __init__(self, limits_rad: list[tuple[float, float]], max_step_rad: float, blend_steps: int = 3,
                 chunk_timeout_s: float = 0.5, overrun_steps: int = 10, future_tolerance_s: float = 0.1,
                 limit_margin_rad: float = 0.15, joint_names: tuple[str, ...] = ()) -> None:
        self._low = np.array([lo for lo, _ in limits_rad])  # (J,)
        self._high = np.array([hi for _, hi in limits_rad])  # (J,)
        self.future_tolerance_s = future_tolerance_s
        self.limit_margin_rad = limit_margin_rad
        self.joint_names = tuple(joint_names) or tuple(f"joint {i}" for i in range(len(limits_rad)))
        self.max_step_rad = max_step_rad
        self.blend_steps = blend_steps
        self.chunk_timeout_s = chunk_timeout_s
        self.overrun_steps = overrun_steps
        self._chunk: Chunk | None = None
        self._previous: Chunk | None = None  # the chunk being blended out
        self._start = self._previous_start = 0  # index of the action due when each arrived
        self._blend_left = 0
        self._last: np.ndarray | None = None  # last command sent, (J,)
        # Observation stamp -> first action of each chunk sent to the servos, seconds (latest 500 chunks).
        self.first_action_latency_s: deque[float] = deque(maxlen=500)
        self._started_chunk = -1
        self.rejected = 0
        self.accepted = 0

    @classmethod
    def from_config(cls, config: DriverConfig, limits_rad: list[tuple[float, float]]) -> ChunkExecutor:
        """The executor a driver with ``config`` runs (the driver itself and the in-process harness)."""
        return cls(limits_rad, config.max_step_rad, config.blend_steps, config.chunk_timeout_ms / 1e3,
                   config.overrun_steps, config.future_tolerance_ms / 1e3, config.limit_margin_rad, config.joint_names)

    @property
    def n_joints(self) -> int:
        return self._low.shape[0]

    def reset(self, present_rad: np.ndarray) -> None:
        """Forget chunks; hold ``present_rad`` (called when torque is enabled: the arm never jumps)."""
        self._chunk = self._previous = None
        self._blend_left = 0
        self._last = np.asarray(present_rad, dtype=np.float64).copy()

    def last_command(self, present_rad: np.ndarray) -> np.ndarray:
        """(J,) the last command this executor gave, or ``present_rad`` before the first."""
        return np.asarray(present_rad if self._last is None else self._last, dtype=np.float64).copy()

    def submit(self, chunk: Chunk, now_s: float) -> None:
        if chunk.positions.shape[1] != self.n_joints:
            raise ChunkRejected(f"chunk has {chunk.positions.shape[1]} joints, the arm has {self.n_joints}")
        if now_s - chunk.stamp_s > self.chunk_timeout_s:
            self.rejected += 1
            raise ChunkRejected(f"chunk {chunk.chunk_id} is stale: its observation is "
                                f"{(now_s - chunk.stamp_s) * 1e3:.0f} ms old, over chunk_timeout_ms={self.chunk_timeout_s * 1e3:.0f}")
        if chunk.stamp_s - now_s > self.future_tolerance_s:
            self.rejected += 1
            raise ChunkRejected(f"chunk {chunk.chunk_id} is stamped {(chunk.stamp_s - now_s) * 1e3:.0f} ms in the future, "
                                f"over future_tolerance_ms={self.future_tolerance_s * 1e3:.0f}; are the sender's and "
                                "the driver's clocks in step?")
        below = chunk.positions < self._low - self.limit_margin_rad  # (H, J)
        above = chunk.positions > self._high + self.limit_margin_rad  # (H, J)
        if below.any() or above.any():
            self.rejected += 1
            step, joint = np.argwhere(below | above)[0]
            raise ChunkRejected(
                f"chunk {chunk.chunk_id} asks {self.joint_names[joint]} for {chunk.positions[step, joint]:.3f} rad "
                f"(action {step}), outside its calibrated range [{self._low[joint]:.3f}, {self._high[joint]:.3f}] "
                f"by more than limit_margin_rad={self.limit_margin_rad:g}")
        if self._chunk is not None and self.blend_steps > 0:
            self._previous, self._previous_start, self._blend_left = self._chunk, self._start, self.blend_steps
        self._chunk, self._start = chunk, chunk.index_at(now_s)
        self.accepted += 1

    def _planned(self, chunk: Chunk, start_index: int, now_s: float) -> tuple[np.ndarray | None, int]:
        index = chunk.index_at(now_s)
        if index > chunk.last_index(start_index, self.overrun_steps):
            return None, index
        return chunk.positions[index], index

    def step(self, now_s: float, present_rad: np.ndarray) -> Command:
        """The command for this control tick."""
        if self._last is None:
            self._last = np.asarray(present_rad, dtype=np.float64).copy()
        target, source, chunk_id, index = None, "hold", -1, -1
        if self._chunk is not None:
            target, index = self._planned(self._chunk, self._start, now_s)
            chunk_id = self._chunk.chunk_id
            if target is not None:
                source = "chunk"
                if chunk_id != self._started_chunk:
                    self._started_chunk = chunk_id
                    self.first_action_latency_s.append(now_s - self._chunk.stamp_s)
                if self._blend_left > 0 and self._previous is not None:
                    old, _ = self._planned(self._previous, self._previous_start, now_s)
                    old = self._last if old is None else old
                    i = self.blend_steps - self._blend_left + 1
                    w = i / (self.blend_steps + 1)
                    target = (1.0 - w) * old + w * target
                    self._blend_left -= 1
                    source = "blend"
            else:
                index = -1
        if target is None:
            target = self._last  # hold the last target: never drift, never jump
        safe = np.clip(target, self._low, self._high)
        safe = np.clip(safe, self._last - self.max_step_rad, self._last + self.max_step_rad)
        clamped = bool(np.any(np.abs(safe - target) > 1e-12))
        self._last = safe
        return Command(safe.copy(), source, chunk_id, index, clamped)

    def idle_for_s(self, now_s: float) -> float:
        """How long no chunk action has been due (0 while one runs); for diagnostics."""
        if self._chunk is None:
            return math.inf
        chunk = self._chunk
        return max(0.0, now_s - (chunk.stamp_s + (chunk.last_index(self._start, self.overrun_steps) + 1) * chunk.dt_s))
