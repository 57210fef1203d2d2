"""Scripted IK experts, one per task kind, that command the arm the way a policy does: six joint-position
targets (radians, gripper included) per control step. Cartesian waypoints for the point between the jaws
are turned into joints by the package's top-down IK (lerobot-env-so101's `solve_ik`)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from lerobot_env_so101.ik_control import roll_to_align_axis, solve_ik

from nanovla_ros.sim.tasks import DIRECTIONS, PUSH_DISTANCE_M, Task
from nanovla_ros.sim.workcell import CUBE_HALF_M, SQUARE_HALF_M, TABLE_Z, Workcell

ARM = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
APPROACH_AXIS, JAW_AXIS = 0, 2  # gripperframe: x out along the jaws, z from the fixed to the moving jaw
JAW_DIRECTION = np.array([0.0, 1.0, 0.0])  # jaws close along world y on an axis-aligned cube
GRIPPER_OPEN, GRIPPER_CLOSED = 0.8, 0.25  # radians. 0.46 rad = pads 40 mm apart; the cube is 30 mm.
# The closed target sits well inside what holds the cube (measured over 65-80 seeds per level). Less
# closed lets the cube slip out on the way: pick_place 11/65 and stack 0/15 at 0.4. Much harder wedges the cube
# into the moving jaw, which drags it off its goal on release: stack 73 % at 0.1, 86 % at 0.2, 94 % at 0.25,
# 96 % at 0.3 (1/10 at -0.15). A policy's gripper command runs ~0.05-0.15 rad more open than its
# demonstrations' (it averages towards the open jaw): at the earlier 0.3 that dropped cubes in flight.
GRIPPER_FIST = -0.15  # jaws shut, for touching and pushing
GRIPPER_RELEASE = 0.8  # fully open, but slowly (gripper_ramp_steps): a fast swing of the jaw drags the cube along
HOVER_M, LIFT_M = 0.07, 0.07  # heights above the table for the grasp point
SPEED_M_S = 0.25
TOLERANCE_M = 0.006
PUSH_BEHIND_M = 0.03  # the push starts this far behind the cube's face
PUSH_PAST_M, PUSH_LOW_M = 0.025, 0.035  # resume=True: a push goes on from in line with the cube, low
RESUME_XY_M = 0.015  # resume=True: within this of an approach waypoint's x, y and below it, that waypoint is behind
# Plan indices a resumed expert starts at (see _make_plan): the descent from the approach, the push itself, and for
# pick_place / stack the steer to above the goal at lift height and the descent onto the goal.
DESCEND, PUSH_ALONG, STEER_TO_GOAL, PLACE = 1, 2, 4, 5


@dataclass
class Waypoint:
    position: np.ndarray | Callable[[], np.ndarray] | None  # grasp-point target; callable: fixed when reached in
    gripper: float
    hold_steps: int = 0  # extra steps once reached (closing / opening the jaws)
    timeout_steps: int = 60
    tolerance_m: float = TOLERANCE_M
    gripper_ramp_steps: int = 0  # move the jaw gradually (a fast opening drags the cube along)
    # False: reached once the command arrives, without waiting for the arm to settle within ``tolerance_m``. The
    # settling time is invisible to a policy (the arm looks the same while the expert waits as when it acts), so
    # waiting before the jaws close or open left states labelled both "hold" and "close"; a chunked policy then
    # predicted the close a little later at every replan and sat at the cube with open jaws.
    wait_for_arm: bool = True


class ScriptedExpert:
    """``resume=True`` starts at the first waypoint not already behind the arm (labels for a state mid-task, as
    DAgger asks for): above the cube and below the approach height it descends instead of climbing back up,
    with the cube lifted in the jaws it carries it on (over the goal and below the lift height: down to place it),
    and low, in line with a pushed cube, it pushes on. Without it the plan starts at the approach."""

    def __init__(self, workcell: Workcell, task: Task, resume: bool = False) -> None:
        self.w, self.task = workcell, task
        m = workcell.model
        self._site, self._offset = workcell.grasp_site, workcell.grasp_offset
        self._dofs = np.array([m.joint(n).id for n in ARM])
        self._roll = m.joint("wrist_roll").id
        self._plan = self._make_plan()
        self._index, self._steps_in, self._held = 0, 0, 0
        self._command = self.grasp_point()
        if resume:
            self._index = self._resume_index()
        self._q = workcell.joint_positions[:5]

    # --- geometry
    def grasp_point(self) -> np.ndarray:
        return self.w.grasp_point()

    def _make_plan(self) -> list[Waypoint]:
        t, w = self.task, self.w
        cube = w.cube_position(t.cube)
        grasp_z = TABLE_Z + CUBE_HALF_M
        above = lambda p, h: np.array([p[0], p[1], TABLE_Z + h])  # noqa: E731
        if t.kind == "touch":
            # Ends resting on the cube, not back at the hover point: hover-before and hover-after look the same
            # (the cube does not move), and a policy without memory then learns to hold still there (seen:
            # cloned policies went straight to the final hover pose and stayed, 0 / 100 touches).
            return [Waypoint(above(cube, HOVER_M), GRIPPER_FIST),
                    Waypoint(above(cube, 2 * CUBE_HALF_M - 0.004), GRIPPER_FIST, hold_steps=10, timeout_steps=40)]
        if t.kind == "push":
            direction = np.r_[DIRECTIONS[t.target], 0.0]
            start = cube - direction * (CUBE_HALF_M + PUSH_BEHIND_M)
            # Overshoot: the contact face is behind the grasp point, and the IK falls short near the reach limit
            # (1 cm more since the push stopped waiting for the arm there: 46 -> 48 / 50 seeds).
            end = cube + direction * (PUSH_DISTANCE_M + (0.08 if t.target == "forward" else 0.055))
            push_z = grasp_z
            return [Waypoint(above(start, HOVER_M), GRIPPER_FIST),
                    Waypoint(above(start, push_z), GRIPPER_FIST),
                    # No waiting for the arm at the end of the push and above it: near the reach limit the arm
                    # stalls short of these targets, and the expert used to wait there until its timeouts (71 and
                    # 54 steps, median) with the arm still: the pattern that teaches policies to stop (as waiting
                    # at the grasp does: ``wait_for_arm``).
                    Waypoint(above(end, push_z), GRIPPER_FIST, timeout_steps=90, wait_for_arm=False),
                    Waypoint(above(end, HOVER_M), GRIPPER_FIST, wait_for_arm=False)]
        if t.kind == "pick_place":
            goal, place_z = w.square_position(t.target), grasp_z + 0.003
        else:  # stack
            goal, place_z = w.cube_position(t.target), grasp_z + 2 * CUBE_HALF_M + 0.003

        def steer(cube_height: float) -> Callable[[], np.ndarray]:
            # The cube sits off-centre in the jaws: aim the grasp point so that the CUBE's centre reaches
            # (goal x, goal y, cube_height).
            def target() -> np.ndarray:
                offset = self.grasp_point() - w.cube_position(t.cube)
                return np.array([goal[0], goal[1], TABLE_Z + cube_height]) + offset
            return target

        loose = 0.015
        return [Waypoint(above(cube, HOVER_M), GRIPPER_OPEN, tolerance_m=loose),
                Waypoint(above(cube, grasp_z), GRIPPER_OPEN, wait_for_arm=False),
                Waypoint(None, GRIPPER_CLOSED, hold_steps=10),
                Waypoint(above(cube, LIFT_M), GRIPPER_CLOSED, tolerance_m=loose),
                Waypoint(steer(LIFT_M), GRIPPER_CLOSED, timeout_steps=90, tolerance_m=loose),
                Waypoint(steer(place_z), GRIPPER_CLOSED, wait_for_arm=False),
                Waypoint(None, GRIPPER_RELEASE, hold_steps=20, gripper_ramp_steps=20),
                Waypoint(lambda: self.grasp_point() + [0.0, 0.0, 0.05], GRIPPER_RELEASE, tolerance_m=loose)]

    def _resume_index(self) -> int:
        t, grasp = self.task, self.grasp_point()
        if t.kind in ("pick_place", "stack"):
            cube = self.w.cube_position(t.cube)
            carried = cube[2] > TABLE_Z + CUBE_HALF_M + 0.01 and np.linalg.norm(grasp[:2] - cube[:2]) < 0.03
            if carried:
                steer = self._plan[STEER_TO_GOAL].position
                above_goal = steer() if callable(steer) else steer
                # Over the goal (the cube inside its square whole; within RESUME_XY_M of the other cube's centre)
                # and on the way down: go on down, straightening the x, y on the way, and let go. Climbing back to
                # lift height first labelled the descent "up" for the ~10 steps a policy executes before it
                # replans, and policies hovered there holding the cube until time ran out.
                near = SQUARE_HALF_M - CUBE_HALF_M if t.kind == "pick_place" else RESUME_XY_M
                if np.linalg.norm(grasp[:2] - above_goal[:2]) < near and grasp[2] < above_goal[2]:
                    return PLACE
                return STEER_TO_GOAL
        if t.kind == "push":
            # Mid-push (low, behind the cube and in line with it): push on. Back to the approach above the start,
            # which moves with the cube, labelled every push that had begun "back off and come round again" (the
            # same fault as climbing back above the goal, above).
            direction = np.r_[DIRECTIONS[t.target], 0.0]
            offset = self.w.cube_position(t.cube) - grasp
            along = float(offset @ direction)
            across = float(np.linalg.norm(offset[:2] - along * direction[:2]))
            # The jaws touch the cube with their side: while the expert pushes, its grasp point runs from 4.7 cm
            # behind the cube's centre to 1.8 cm past it, depending on the direction (12 pushes, 6 seeds).
            in_line = -PUSH_PAST_M < along < CUBE_HALF_M + PUSH_BEHIND_M + 0.01 and across < CUBE_HALF_M  # 5.5 cm
            if in_line and grasp[2] < TABLE_Z + PUSH_LOW_M:
                return PUSH_ALONG
        first = self._plan[0].position
        if np.linalg.norm(grasp[:2] - first[:2]) < RESUME_XY_M and grasp[2] < first[2]:
            return DESCEND  # already over it and on the way down
        return 0

    @property
    def done(self) -> bool:
        return self._index >= len(self._plan)

    def act(self) -> np.ndarray:
        """The six joint targets for this control step."""
        if self.done:
            return np.r_[self._q, self._plan[-1].gripper]
        wp = self._plan[self._index]
        if callable(wp.position):
            wp.position = wp.position()  # fixed once, when the waypoint becomes active
        if wp.position is not None:
            step = SPEED_M_S / self.w.config.control_rate_hz
            delta = wp.position - self._command
            distance = float(np.linalg.norm(delta))
            self._command = wp.position.copy() if distance <= step else self._command + delta * (step / distance)
            self._q = self._ik(self._command)
        reached = wp.position is None or (np.linalg.norm(self._command - wp.position) < 1e-9 and (
            not wp.wait_for_arm or np.linalg.norm(self.grasp_point() - wp.position) < wp.tolerance_m))
        self._steps_in += 1
        gripper = wp.gripper
        if wp.gripper_ramp_steps:
            previous = self._plan[self._index - 1].gripper if self._index else wp.gripper
            fraction = min(1.0, self._steps_in / wp.gripper_ramp_steps)
            gripper = previous + (wp.gripper - previous) * fraction
        if reached:
            self._held += 1
        if (reached and self._held > wp.hold_steps) or self._steps_in >= wp.timeout_steps:
            self._index, self._steps_in, self._held = self._index + 1, 0, 0
        return np.r_[self._q, gripper]

    def _ik(self, target: np.ndarray) -> np.ndarray:
        m, d = self.w.model, self.w.data
        seed = d.qpos[self._dofs].copy()
        roll_index = ARM.index("wrist_roll")
        seed[roll_index] += roll_to_align_axis(d, self._site, self._roll, JAW_AXIS, JAW_DIRECTION)
        seed[roll_index] = np.clip(seed[roll_index], *m.jnt_range[self._roll])
        return solve_ik(m, d, self._site, self._dofs, target, ik_iterations=20, seed_q=seed,
                        point_offset=self._offset, approach_axis=APPROACH_AXIS)


def run_expert_episode(workcell: Workcell, task: Task, max_steps: int = 450, record: bool = False):
    """Run the expert from the current state; return (success, steps, joint targets per step)."""
    from nanovla_ros.sim.tasks import SuccessMonitor

    expert, monitor = ScriptedExpert(workcell, task), SuccessMonitor(task, workcell)
    targets = []
    for _ in range(max_steps):
        action = expert.act()
        workcell.step(action)
        monitor.update()
        if record:
            targets.append(action)
        if expert.done:
            break
    for _ in range(15):  # let the scene settle before judging (a cube dropped mid-air must land)
        workcell.step(targets[-1] if targets else expert.act())
        monitor.update()
    return monitor.success(), workcell.steps, np.asarray(targets)
