"""How far an episode got, beside whether it succeeded: the evaluation's failure breakdown.

``OutcomeMonitor`` follows the arm and the cubes step by step, like ``SuccessMonitor``, and at the end names
the stage where the episode stopped:

- touch: ``success``, ``touched another cube`` or ``missed`` (no cube touched);
- push: ``success``, ``touched another cube``, ``missed`` or ``pushed short or off line`` (the named cube was
  touched but did not end ``PUSH_DISTANCE_M`` along the direction);
- pick_place and stack: ``success``, ``grasp missed`` (the point between the jaws never came within
  ``REACH_M`` of the cube's centre: the jaws forgive about 1 cm), ``reached, not lifted``, ``lifted, dropped``
  (the cube came down with the jaws away from it: it slipped out in flight, or fell off the other cube) or
  ``lifted, not placed`` (put down or still held away from its goal).

It also records the closest the point between the jaws came to the named cube's centre, the cubes the arm
touched, and how far the named cube ended from its goal (the x, y of ``task_positions``). These turn README
diagnoses 10 and 11, first made with throwaway trace scripts, into numbers every evaluation reports.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nanovla_ros.sim.tasks import Task, arm_geoms, task_positions
from nanovla_ros.sim.workcell import CUBE_COLOURS, CUBE_HALF_M, TABLE_Z, Workcell

REACH_M = 0.01  # the jaws close around a cube whose centre is within about this of the point between them
LIFT_M = 0.01  # a cube this far above its resting height has been lifted
DROP_M = 0.025  # a lifted cube coming back down with the jaws' centre this far from it fell rather than was put down


@dataclass
class EpisodeOutcome:
    stage: str
    closest_cm: float  # nearest the point between the jaws came to the named cube's centre
    touched: list[str]  # cubes the arm touched, sorted
    lifted: bool  # the named cube was lifted (above the table by LIFT_M)
    dropped: bool  # ... and came down with the jaws away from it (DROP_M)
    final_to_goal_cm: float | None  # the named cube's x, y from its goal at the end (None for touch)


class OutcomeMonitor:
    """``update()`` after every control step, ``outcome(success)`` at the end."""

    def __init__(self, task: Task, workcell: Workcell) -> None:
        self.task, self.w = task, workcell
        m = workcell.model
        self._cube_geoms = {m.geom(f"cube_{c}").id: c for c in CUBE_COLOURS}
        self._arm = arm_geoms(m)
        self._start = {c: workcell.cube_position(c) for c in CUBE_COLOURS}
        self._closest_m = float("inf")
        self._touched: set[str] = set()
        self._lifted = self._up = self._dropped = False

    def update(self) -> None:
        cube = self.w.cube_position(self.task.cube)
        distance = float(np.linalg.norm(self.w.grasp_point() - cube))
        self._closest_m = min(self._closest_m, distance)
        up = bool(cube[2] > TABLE_Z + CUBE_HALF_M + LIFT_M)
        self._dropped |= self._up and not up and distance > DROP_M  # came down out of the jaws
        self._lifted |= up
        self._up = up
        data = self.w.data
        for i in range(data.ncon):
            a, b = int(data.contact[i].geom1), int(data.contact[i].geom2)
            for cube_geom, other in ((a, b), (b, a)):
                if cube_geom in self._cube_geoms and other in self._arm:
                    self._touched.add(self._cube_geoms[cube_geom])

    def outcome(self, success: bool) -> EpisodeOutcome:
        t = self.task
        final = None
        if t.kind != "touch":
            goal = task_positions(t, self.w, self._start)[2:]
            final = round(100 * float(np.linalg.norm(self.w.cube_position(t.cube)[:2] - goal)), 1)
        return EpisodeOutcome(self._stage(success), round(100 * self._closest_m, 1), sorted(self._touched),
                              self._lifted, self._dropped, final)

    def _stage(self, success: bool) -> str:
        t = self.task
        if success:
            return "success"
        if t.kind in ("touch", "push"):
            if t.cube in self._touched:
                return "pushed short or off line"  # touch succeeds on contact: only a push gets here
            return "touched another cube" if self._touched else "missed"
        if self._dropped:
            return "lifted, dropped"
        if self._lifted:
            return "lifted, not placed"
        return "reached, not lifted" if self._closest_m <= REACH_M else "grasp missed"
