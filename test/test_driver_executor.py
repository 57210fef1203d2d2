"""Long-short chunk execution: timing, blending, holding, safety clamps and rejections."""
import math

import numpy as np
import pytest

from nanovla_ros.driver.executor import ChunkExecutor, ChunkRejected, make_chunk

JOINTS = ("a", "b")
DT = 0.1


def chunk(chunk_id, stamp, values, execute_steps=10, names=JOINTS):
    values = np.asarray(values, dtype=float)  # (H,) same target for both joints, or (H, J)
    table = values[:, None].repeat(len(names), axis=1) if values.ndim == 1 else values
    return make_chunk(chunk_id, stamp, DT, execute_steps, list(names), table.ravel(), table.shape[0], JOINTS)


def executor(max_step=10.0, blend=0, limits=((-3.0, 3.0), (-3.0, 3.0)), overrun=0):
    ex = ChunkExecutor(list(limits), max_step, blend_steps=blend, chunk_timeout_s=0.5, overrun_steps=overrun)
    ex.reset(np.zeros(2))
    return ex


def test_actions_are_scheduled_by_time_and_past_ones_skipped():
    ex = executor()
    ex.submit(chunk(1, 100.0, np.arange(20) * 0.01), 100.0)
    assert ex.step(100.0, np.zeros(2)).step_index == 0
    cmd = ex.step(100.35, np.zeros(2))  # 3.5 steps later: actions 1-2 are past, skipped
    assert cmd.step_index == 3 and cmd.positions[0] == pytest.approx(0.03)


def test_at_most_h_actions_then_hold():
    ex = executor()
    ex.submit(chunk(1, 100.0, np.arange(20) * 0.01, execute_steps=5), 100.0)
    commands = [ex.step(100.0 + k * DT, np.zeros(2)) for k in range(8)]
    assert [c.source for c in commands] == ["chunk"] * 5 + ["hold"] * 3
    assert commands[-1].positions[0] == pytest.approx(0.04)  # holds the last executed target
    assert ex.idle_for_s(100.0 + 7 * DT) == pytest.approx(0.2)


def test_a_late_chunk_runs_h_actions_from_the_one_due_at_its_arrival():
    # A slow host: the chunk arrives 3.5 steps after its observation. Its past actions are skipped, and it still
    # runs h = 5 (counting from its arrival), where counting from the observation left 1.5 and, once the delay
    # exceeds h steps, none at all (the graph on a 2-core CPU held the arm through most chunks that way).
    ex = executor()
    ex.submit(chunk(1, 100.0, np.arange(20) * 0.01, execute_steps=5), 100.35)
    commands = [ex.step(100.35 + k * DT, np.zeros(2)) for k in range(7)]
    assert [c.step_index for c in commands] == [3, 4, 5, 6, 7, -1, -1]
    assert [c.source for c in commands] == ["chunk"] * 5 + ["hold"] * 2


def test_overrun_follows_the_plan_while_the_next_chunk_is_late_then_holds():
    ex = executor(overrun=2)
    ex.submit(chunk(1, 100.0, np.arange(20) * 0.01, execute_steps=5), 100.0)
    commands = [ex.step(100.0 + k * DT, np.zeros(2)) for k in range(9)]
    assert [c.step_index for c in commands] == [0, 1, 2, 3, 4, 5, 6, -1, -1]
    assert commands[-1].positions[0] == pytest.approx(0.06)  # holds the last planned target


def test_a_new_chunk_ends_the_overrun_at_once():
    ex = executor(overrun=2)
    ex.submit(chunk(1, 100.0, np.arange(20) * 0.01, execute_steps=5), 100.0)
    assert [ex.step(100.0 + k * DT, np.zeros(2)).step_index for k in range(6)] == [0, 1, 2, 3, 4, 5]
    ex.submit(chunk(2, 100.55, np.ones(20), execute_steps=5), 100.6)
    cmd = ex.step(100.6, np.zeros(2))
    assert (cmd.chunk_id, cmd.positions[0]) == (2, pytest.approx(1.0))


def test_new_chunk_is_cross_faded_in():
    ex = executor(blend=3)
    ex.submit(chunk(1, 100.0, np.zeros(20), execute_steps=20), 100.0)
    ex.step(100.0, np.zeros(2))
    ex.submit(chunk(2, 100.1, np.ones(20), execute_steps=20), 100.1)
    values = [ex.step(100.1 + k * DT, np.zeros(2)).positions[0] for k in range(5)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_limits_and_max_step_are_enforced_and_reported():
    ex = executor(max_step=0.1, limits=((-1.0, 0.25), (-1.0, 1.0)))
    ex.submit(chunk(1, 0.0, np.full(20, 0.35)), 0.0)  # 0.1 rad past joint a's range: within the margin, clamped
    commands = [ex.step(k * DT, np.zeros(2)) for k in range(5)]
    assert [round(c.positions[1], 6) for c in commands] == [0.1, 0.2, 0.3, 0.35, 0.35]  # rate limited
    assert [round(c.positions[0], 6) for c in commands] == [0.1, 0.2, 0.25, 0.25, 0.25]  # joint limit
    assert all(c.clamped for c in commands)


def test_hold_without_any_chunk_keeps_the_present_position():
    ex = ChunkExecutor([(-3, 3), (-3, 3)], 0.1)
    cmd = ex.step(0.0, np.array([0.3, -0.2]))
    assert cmd.source == "hold" and cmd.positions == pytest.approx([0.3, -0.2])


def test_joint_names_are_reordered_to_the_arm_order():
    c = make_chunk(1, 0.0, DT, 5, ["b", "a"], [2.0, 1.0], 1, JOINTS)
    assert c.positions.tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(joint_names=["a"], positions=[0.0], horizon=1), "do not match"),
    (dict(joint_names=[], positions=[], horizon=1), "0 joint names"),
    (dict(joint_names=["a", "c"], positions=[0.0, 0.0], horizon=1), "do not match"),
    (dict(positions=[0.0, 0.0, 0.0], horizon=2), "expected horizon 2"),
    (dict(positions=[0.0, math.nan], horizon=1), "NaN or Inf"),
    (dict(positions=[0.0, math.inf], horizon=1), "NaN or Inf"),
    (dict(dt_s=0.0), "dt_s=0.0"),
    (dict(execute_steps=0), "execute_steps=0"),
])
def test_bad_chunks_are_rejected(kwargs, message):
    args = dict(chunk_id=1, stamp_s=0.0, dt_s=DT, execute_steps=5, joint_names=["a", "b"], positions=[0.0, 0.0],
                horizon=1, driver_joints=JOINTS) | kwargs
    with pytest.raises(ChunkRejected, match=message):
        make_chunk(**args)


def test_stale_chunk_is_rejected_and_changes_nothing():
    ex = executor()
    ex.submit(chunk(1, 100.0, np.full(20, 0.5)), 100.0)
    before = ex.step(100.0, np.zeros(2))
    with pytest.raises(ChunkRejected, match="stale"):
        ex.submit(chunk(2, 99.0, np.full(20, 2.0)), 100.1)
    assert ex.step(100.1, np.zeros(2)).chunk_id == 1 and before.chunk_id == 1
    assert ex.rejected == 1


def test_a_chunk_stamped_in_the_future_is_rejected_and_changes_nothing():
    ex = executor()
    ex.submit(chunk(1, 100.0, np.full(20, 0.5)), 100.0)
    ex.submit(chunk(2, 100.09, np.full(20, 0.6)), 100.0)  # within future_tolerance_s (clocks a little apart)
    with pytest.raises(ChunkRejected, match="10000 ms in the future"):
        ex.submit(chunk(3, 110.0, np.full(20, 2.0)), 100.0)  # would otherwise run at once, all of it
    assert ex.step(100.1, np.zeros(2)).chunk_id == 2 and ex.rejected == 1


def test_targets_far_outside_the_calibrated_range_reject_the_chunk():
    ex = executor(limits=((-1.0, 1.0), (-1.0, 1.0)))
    ex.submit(chunk(1, 100.0, np.full(20, 0.5)), 100.0)
    table = np.zeros((20, 2))
    table[7, 1] = 100.0  # one absurd target, not clamped to the joint limit but refused
    with pytest.raises(ChunkRejected, match=r"b for 100.000 rad \(action 7\), outside its calibrated range"):
        ChunkExecutor([(-1.0, 1.0), (-1.0, 1.0)], 0.05, joint_names=JOINTS).submit(chunk(2, 100.0, table), 100.0)
    with pytest.raises(ChunkRejected, match="limit_margin_rad"):
        ex.submit(chunk(2, 100.0, table), 100.0)
    assert ex.step(100.1, np.zeros(2)).chunk_id == 1


def test_latency_from_observation_to_first_action_is_recorded_once_per_chunk():
    ex = executor()
    ex.submit(chunk(1, 100.0, np.arange(20) * 0.01), 100.04)
    ex.step(100.05, np.zeros(2))
    ex.step(100.15, np.zeros(2))
    ex.submit(chunk(2, 100.2, np.arange(20) * 0.01), 100.28)
    ex.step(100.32, np.zeros(2))
    assert list(ex.first_action_latency_s) == pytest.approx([0.05, 0.12])
