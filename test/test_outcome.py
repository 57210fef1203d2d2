"""The evaluation's failure breakdown (nanovla_ros.sim.outcome): each stage from a real episode in the workcell."""
import dataclasses

import numpy as np
import pytest

from nanovla_ros.sim.experts import ScriptedExpert
from nanovla_ros.sim.outcome import OutcomeMonitor
from nanovla_ros.sim.tasks import PUSH_DISTANCE_M, SuccessMonitor, sample_layout, sample_task
from nanovla_ros.sim.workcell import Workcell


@pytest.fixture(scope="module")
def workcell():
    w = Workcell()
    yield w
    w.close()


def _run(workcell, kind, seed, judged_cube=None, until_waypoint=None, max_steps=450):
    """The expert does its task; the outcome is judged for the task with ``judged_cube`` named instead (another
    cube: what a policy that went for the wrong cube did). ``until_waypoint``: stop when the expert gets there."""
    rng = np.random.default_rng(seed)
    layout, task = sample_layout(rng), sample_task(rng, kind)
    workcell.place(layout.cubes, layout.squares)
    judged = dataclasses.replace(task, cube=judged_cube or task.cube)
    expert, success, outcome = ScriptedExpert(workcell, task), SuccessMonitor(judged, workcell), \
        OutcomeMonitor(judged, workcell)
    for _ in range(max_steps):
        if expert.done or expert._index == until_waypoint:
            break
        workcell.step(expert.act())
        success.update()
        outcome.update()
    return task, outcome.outcome(success.success())


def _other(task):
    return next(c for c in ("red", "green", "blue") if c != task.cube)


def test_an_expert_pick_and_place_is_a_success_that_reached_and_lifted(workcell):
    task, o = _run(workcell, "pick_place", 2000)
    assert o.stage == "success" and o.lifted and o.closest_cm < 1.0 and task.cube in o.touched
    assert o.final_to_goal_cm < 3.5  # inside the square (3.5 cm half-width)


def test_the_wrong_cube_is_a_missed_grasp_or_a_touch_of_another_cube(workcell):
    task, _ = _run(workcell, "pick_place", 2000, until_waypoint=0)  # the layout of seed 2000
    _, o = _run(workcell, "pick_place", 2000, judged_cube=_other(task))
    assert o.stage == "grasp missed" and not o.lifted and o.closest_cm > 1.0
    task, _ = _run(workcell, "touch", 2002, until_waypoint=0)
    _, o = _run(workcell, "touch", 2002, judged_cube=_other(task))
    assert o.stage == "touched another cube" and o.touched == [task.cube] and o.final_to_goal_cm is None


def test_jaws_around_the_cube_but_never_closed_are_reached_not_lifted(workcell):
    _, o = _run(workcell, "pick_place", 2000, until_waypoint=2)  # stopped when the jaws were to close
    assert o.stage == "reached, not lifted" and o.closest_cm <= 1.0 and not o.lifted


def test_a_cube_that_slips_out_of_the_jaws_is_lifted_dropped(workcell, monkeypatch):
    from nanovla_ros.sim import experts

    monkeypatch.setattr(experts, "GRIPPER_CLOSED", 0.4)  # too open to hold it: it slips out on the way
    _, o = _run(workcell, "pick_place", 0)
    assert o.stage == "lifted, dropped" and o.lifted and o.dropped


def test_a_cube_carried_but_not_put_down_is_lifted_not_placed(workcell):
    _, o = _run(workcell, "stack", 2001, until_waypoint=5)  # stopped at lift height over the other cube
    assert o.stage == "lifted, not placed" and o.lifted and not o.dropped


def test_an_arm_that_never_moves_missed(workcell):
    rng = np.random.default_rng(2003)
    layout, task = sample_layout(rng), sample_task(rng, "push")
    workcell.place(layout.cubes, layout.squares)
    outcome = OutcomeMonitor(task, workcell)
    for _ in range(20):
        workcell.step(workcell.joint_positions)
        outcome.update()
    o = outcome.outcome(False)
    assert o.stage == "missed" and o.touched == [] and o.closest_cm > 5
    assert o.final_to_goal_cm == pytest.approx(100 * PUSH_DISTANCE_M, abs=0.1)  # the cube is where it started
