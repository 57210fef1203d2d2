"""A standard trajectory as a chunk (no ROS): what ``trajectory_msgs/JointTrajectory`` asks of the arm, in the
form the executor runs, through the same safety checks as the policy's chunks.

As ros2_control's joint trajectory controller reads one: each point's positions are to be reached
``time_from_start`` after the header's stamp (a zero stamp: on arrival); between points, and from where the arm
is commanded now to the first point, positions are interpolated linearly. The result is a chunk of targets
every control period that the executor runs to its end and then holds. On top of the chunk checks (joint names,
NaN, limits, stale or future stamps), a trajectory is refused, and nothing moves, when its points are not in
strictly increasing time, when it lasts longer than ``max_duration_s``, or when following it would move a joint
faster than the driver's rate limit (``max_step_rad`` a control period): the executor would otherwise clamp
it into a slower, different motion than the one asked for.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from nanovla_ros.driver.executor import Chunk, ChunkRejected, make_chunk

SPEED_TOLERANCE = 1.02  # interpolation between the control ticks may exceed the per-point speed slightly


def trajectory_chunk(chunk_id: int, stamp_s: float, joint_names: Sequence[str], times_s: Sequence[float],
                     points: Sequence[Sequence[float]], start_rad: np.ndarray, dt_s: float, max_step_rad: float,
                     driver_joints: tuple[str, ...], max_duration_s: float = 30.0) -> Chunk:
    """The chunk that follows the trajectory: targets every ``dt_s`` from ``stamp_s`` (observation-time semantics
    of a chunk: action k is due at stamp + k dt) to its last point. ``start_rad``: (J,) where the arm is commanded
    now, in ``driver_joints`` order, the start of the first segment. Raises ChunkRejected, saying why."""
    if not points:
        raise ChunkRejected("trajectory has no points")
    if len(times_s) != len(points):
        raise ChunkRejected(f"trajectory has {len(points)} points but {len(times_s)} times")
    times = np.asarray(times_s, dtype=np.float64)
    if not np.all(np.isfinite(times)) or times[0] < 0.0 or np.any(np.diff(times) <= 0.0):
        raise ChunkRejected(f"trajectory point times {times.round(3).tolist()} must be finite, >= 0 and strictly "
                            "increasing")
    if times[-1] > max_duration_s:
        raise ChunkRejected(f"trajectory lasts {times[-1]:.1f} s, over max_trajectory_s={max_duration_s:g}")
    if any(len(p) != len(joint_names) for p in points):
        raise ChunkRejected(f"every point needs {len(joint_names)} positions, one per joint name")
    # make_chunk checks names, NaN and the joint count and puts the joints in the driver's order
    ordered = make_chunk(chunk_id, stamp_s, dt_s, 1, list(joint_names),
                         np.asarray(points, dtype=np.float64).ravel(), len(points), driver_joints).positions
    knots_t, knots = times, ordered  # (P,), (P, J)
    if times[0] > 0.0:  # from where the arm is commanded now
        knots_t = np.concatenate([[0.0], times])
        knots = np.vstack([np.asarray(start_rad, dtype=np.float64)[None], ordered])
    jump = np.abs(knots[0] - np.asarray(start_rad, dtype=np.float64))
    if jump.max() > max_step_rad * SPEED_TOLERANCE:  # a first point at time 0 that is not where the arm is
        joint = int(np.argmax(jump))
        raise ChunkRejected(f"trajectory's first point, at time 0, is {jump[joint]:.3f} rad from where "
                            f"{driver_joints[joint]} is commanded now: give it a time_from_start")
    speed = np.abs(np.diff(knots, axis=0)) / np.diff(knots_t)[:, None]  # (segments, J) rad/s
    limit = max_step_rad / dt_s
    if speed.size and speed.max() > limit * SPEED_TOLERANCE:
        segment, joint = np.unravel_index(int(np.argmax(speed)), speed.shape)
        raise ChunkRejected(
            f"trajectory moves {driver_joints[joint]} at {speed[segment, joint]:.2f} rad/s (towards point "
            f"{segment + (0 if times[0] > 0.0 else 1)}), over the driver's limit of {limit:.2f} rad/s "
            f"(max_step_rad={max_step_rad:g} per {dt_s * 1e3:.0f} ms): give it more time")
    count = int(math.ceil(knots_t[-1] / dt_s - 1e-9)) + 1  # ticks 0, dt, ... up to the last point's time
    ticks = np.minimum(np.arange(count) * dt_s, knots_t[-1])
    targets = np.stack([np.interp(ticks, knots_t, knots[:, j]) for j in range(knots.shape[1])], axis=1)
    return Chunk(chunk_id, stamp_s, dt_s, len(targets), targets)
