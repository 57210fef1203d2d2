"""The simulated workcell: success checks (positive and negative), experts, determinism, splits, cameras."""
import os

import numpy as np
import pytest

from nanovla_ros.sim.experts import run_expert_episode
from nanovla_ros.sim.tasks import (
    DIRECTIONS,
    HELDOUT_PAIRS,
    KINDS,
    PUSH_DISTANCE_M,
    TEMPLATES,
    SuccessMonitor,
    Task,
    sample_layout,
    sample_task,
    task_positions,
)
from nanovla_ros.sim.workcell import CUBE_COLOURS, CUBE_HALF_M, Workcell


@pytest.fixture(scope="module")
def workcell():
    w = Workcell()
    yield w
    w.close()


def _episode(workcell, kind, seed, split="train"):
    rng = np.random.default_rng(seed)
    layout, task = sample_layout(rng), sample_task(rng, kind, split)
    workcell.place(layout.cubes, layout.squares)
    return task


def _expert_arrivals(workcell, task, settle_steps):
    """Run the expert with the driver's rate limit; return (success after ``settle_steps`` more steps, the last
    command, and for every step on which the active waypoint's command had arrived: (its index, the waypoint, the
    index after the step))."""
    from nanovla_ros.sim.experts import ScriptedExpert

    expert, monitor = ScriptedExpert(workcell, task), SuccessMonitor(task, workcell)
    arrivals, last = [], workcell.joint_positions
    for _ in range(450):
        index = expert._index
        waypoint = expert._plan[index]
        last = np.clip(expert.act(), last - 0.05, last + 0.05)
        if isinstance(waypoint.position, np.ndarray) and np.linalg.norm(expert._command - waypoint.position) < 1e-9:
            arrivals.append((index, waypoint, expert._index))
        workcell.step(last)
        monitor.update()
        if expert.done:
            break
    for _ in range(settle_steps):
        workcell.step(last)
        monitor.update()
    return monitor.success(), last, arrivals


def _set_cube(workcell, colour, xyz):
    adr = workcell.model.joint(f"cube_{colour}").qposadr[0]
    workcell.data.qpos[adr:adr + 7] = [*xyz, 1, 0, 0, 0]
    workcell.data.qvel[:] = 0
    for _ in range(10):
        workcell.step(workcell.joint_positions)


@pytest.mark.parametrize("kind", KINDS)
def test_holding_still_never_succeeds(workcell, kind):
    for seed in range(3):
        task = _episode(workcell, kind, seed)
        monitor = SuccessMonitor(task, workcell)
        for _ in range(60):
            workcell.step(workcell.joint_positions)
            monitor.update()
        assert not monitor.success(), task


def test_success_checks_accept_the_goal_states(workcell):
    task = Task("pick_place", "red", "yellow", "put the red cube in the yellow square", "train")
    _episode(workcell, "touch", 0)
    monitor = SuccessMonitor(task, workcell)
    square = workcell.square_position("yellow")
    _set_cube(workcell, "red", [square[0] + 0.01, square[1] - 0.01, CUBE_HALF_M])
    assert monitor.success()
    _set_cube(workcell, "red", [square[0] + 0.06, square[1], CUBE_HALF_M])  # beside the square
    assert not monitor.success()

    stack = SuccessMonitor(Task("stack", "green", "blue", "stack", "train"), workcell)
    blue = workcell.cube_position("blue")
    _set_cube(workcell, "green", [blue[0], blue[1], 3 * CUBE_HALF_M + 0.001])
    assert stack.success()

    _episode(workcell, "touch", 1)
    push = SuccessMonitor(Task("push", "blue", "left", "push", "train"), workcell)
    start = workcell.cube_position("blue")
    _set_cube(workcell, "blue", [start[0], start[1] + 0.06, CUBE_HALF_M])
    assert push.success()
    _set_cube(workcell, "blue", [start[0] + 0.06, start[1], CUBE_HALF_M])  # moved, but forward
    assert not push.success()


@pytest.mark.parametrize("kind", KINDS)
def test_expert_succeeds_on_a_few_seeds(workcell, kind):
    results = []
    for seed in range(3):
        task = _episode(workcell, kind, seed)
        results.append(run_expert_episode(workcell, task)[0])
    assert sum(results) >= 2, (kind, results)  # the 50-seed rates come from scripts/eval/eval_experts.py


def test_episodes_are_deterministic_for_a_seed(workcell):
    runs = []
    for _ in range(2):
        task = _episode(workcell, "pick_place", 4)
        _, steps, targets = run_expert_episode(workcell, task, record=True)
        runs.append((task, steps, targets, workcell.cube_position(task.cube)))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    np.testing.assert_array_equal(runs[0][3], runs[1][3])


def test_heldout_split_has_unseen_pairings_and_paraphrases():
    rng = np.random.default_rng(0)
    train = [sample_task(rng, kind) for kind in KINDS for _ in range(200)]
    heldout = [sample_task(rng, kind, "heldout") for kind in KINDS for _ in range(200)]
    train_texts = {t.instruction for t in train}
    assert not any((t.cube, t.target) in HELDOUT_PAIRS for t in train if t.kind == "pick_place")
    assert all((t.cube, t.target) in HELDOUT_PAIRS for t in heldout if t.kind == "pick_place")
    assert not train_texts & {t.instruction for t in heldout}
    for kind in KINDS:
        train_templates, heldout_templates = TEMPLATES[kind]
        assert not set(train_templates) & set(heldout_templates)


def test_more_phrasings_say_training_tasks_other_ways_never_the_held_out_ones():
    from nanovla_ros.sim.tasks import TRAINING_ONLY_TEMPLATES, all_instructions, rephrased

    rng = np.random.default_rng(1)
    heldout_texts = {sample_task(rng, kind, "heldout").instruction for kind in KINDS for _ in range(300)}
    heldout_texts -= {sample_task(rng, kind).instruction for kind in KINDS for _ in range(300)}  # pick_place's
    known = set(all_instructions())  # the embedding tables cover every phrasing
    for kind in KINDS:
        tasks = [sample_task(rng, kind) for _ in range(200)]
        said = [rephrased(t, np.random.default_rng([i, 11])) for i, t in enumerate(tasks)]
        assert all((s.kind, s.cube, s.target, s.split) == (t.kind, t.cube, t.target, t.split)
                   for s, t in zip(said, tasks, strict=True))  # the same task, said another way
        texts = {s.instruction for s in said}
        assert texts <= known and not texts & heldout_texts
        only = {template.split("{")[0] for template in TRAINING_ONLY_TEMPLATES[kind]}
        assert any(text.startswith(tuple(only)) for text in texts), kind  # the new phrasings are drawn
        assert not set(TRAINING_ONLY_TEMPLATES[kind]) & set(TEMPLATES[kind][1])
    heldout = sample_task(rng, "stack", "heldout")
    assert rephrased(heldout, rng) == heldout  # held-out tasks keep their paraphrase


def test_cameras_render_the_scene(workcell):
    _episode(workcell, "touch", 0)
    front, wrist = workcell.render("front", 64), workcell.render("wrist", 64)
    assert front.shape == wrist.shape == (64, 64, 3) and front.dtype == np.uint8
    assert front.std() > 10 and wrist.std() > 5  # not a blank frame
    red = workcell.cube_position("red")
    _set_cube(workcell, "red", [red[0], red[1] + 0.05, CUBE_HALF_M])
    assert np.abs(workcell.render("front", 64).astype(int) - front).sum() > 0  # the picture follows the scene


def test_only_visual_geoms_use_the_simplified_meshes(workcell):
    m = workcell.model
    mesh_geoms = [g for g in range(m.ngeom) if m.geom_type[g] == 7]  # mjGEOM_MESH
    visual = [g for g in mesh_geoms if m.geom_contype[g] == 0 and m.geom_conaffinity[g] == 0]
    collision = [g for g in mesh_geoms if g not in visual]
    assert visual and collision
    assert all(m.mesh(m.geom_dataid[g]).name.endswith("_visual") for g in visual)
    assert not any(m.mesh(m.geom_dataid[g]).name.endswith("_visual") for g in collision)
    faces = lambda g: m.mesh_facenum[m.geom_dataid[g]]  # noqa: E731
    assert sum(faces(g) for g in visual) < 0.5 * sum(faces(g) for g in collision)  # 36 % measured


def test_noise_injection_perturbs_the_arm_not_the_labels(workcell):
    from nanovla_ros.sim.demos import expert_episode

    clean = expert_episode(workcell, "touch", "train", 3, sample_every=8)
    noisy = expert_episode(workcell, "touch", "train", 3, sample_every=8, noise_rad=0.15)
    assert noisy["instruction"] == clean["instruction"]  # the noise has its own generator: same scene and task
    said = expert_episode(workcell, "touch", "train", 3, sample_every=8, more_phrasings=True)
    np.testing.assert_allclose(said["cubes_xy_m"][0], clean["cubes_xy_m"][0])  # the seed's scene, the same task
    assert said["metadata"]["cube"] == clean["metadata"]["cube"] and said["success"] == clean["success"]
    assert 0.0 < noisy["metadata"]["noise_std_rad"] <= 0.15 and clean["metadata"]["noise_std_rad"] == 0.0
    np.testing.assert_allclose(noisy["actions"][0], clean["actions"][0])  # labels: the expert's own commands

    def off_path(episode):  # how far the arm is from the command it was given at each sample
        return float(np.abs(episode["states"][1:, :4] - episode["actions"][episode["action_index"][1:] - 1, :4]).mean())

    assert off_path(noisy) > off_path(clean) + 0.01


def test_snapshot_restore_replays_the_same_physics(workcell):
    task = _episode(workcell, "pick_place", 4)
    for _ in range(5):
        workcell.step(np.array([0.3, 0.2, -0.2, 0.3, 0.1, 0.6]))
    snapshot = workcell.snapshot()
    target = np.array([-0.2, 0.4, -0.3, 0.5, 0.0, 0.2])
    for _ in range(10):
        workcell.step(target)
    after, steps = workcell.joint_positions, workcell.steps
    workcell.restore(snapshot)
    assert workcell.steps == steps - 10
    for _ in range(10):
        workcell.step(target)
    np.testing.assert_allclose(workcell.joint_positions, after, atol=1e-9)
    assert task.kind == "pick_place"


def test_dagger_labels_are_the_experts_and_leave_the_episode_alone(workcell, tmp_path):
    import torch

    from nanovla_ros.evaluation.dagger import dagger_episode, expert_chunk
    from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
    from nanovla_ros.model.modeling_nanovla import FrozenImageEncoder, NanoVLA, NanoVLAPolicy
    from nanovla_ros.sim.experts import ScriptedExpert

    task = _episode(workcell, "touch", 5)
    before = (workcell.joint_positions, workcell.cube_position(task.cube), workcell.steps)
    chunk = expert_chunk(workcell, task, workcell.joint_positions, 30, 0.05)
    np.testing.assert_allclose(workcell.joint_positions, before[0])  # restored
    np.testing.assert_allclose(workcell.cube_position(task.cube), before[1])
    assert workcell.steps == before[2] and chunk.shape == (30, 6)
    first = np.clip(ScriptedExpert(workcell, task).act(), before[0] - 0.05, before[0] + 0.05)
    np.testing.assert_allclose(chunk[0], first, atol=1e-6)  # what a fresh expert commands from here
    assert np.abs(np.diff(chunk, axis=0)).max() <= 0.05 + 1e-6  # rate-limited like the driver

    torch.manual_seed(0)
    config = NanoVLAConfig(language_dim=8, horizon=20, cameras=("front", "wrist"), d_model=32, n_heads=4, ffn_dim=64,
                           enc_layers=1, dec_layers=1, vae_layers=1, latent_dim=4, image_size=64)
    policy = NanoVLAPolicy(NanoVLA(config), FrozenImageEncoder("efficientnet-lite0", 64))
    from nanovla_ros.sim.tasks import sample_layout, sample_task

    rng = np.random.default_rng(7)
    sample_layout(rng)
    instruction = sample_task(rng, "touch", "train").instruction
    episode = dagger_episode(workcell, policy, {instruction: np.ones(8, np.float32)}, "touch", "train", 7,
                             sample_every=5, max_steps=12, label_steps=8)
    assert len(episode["states"]) == 3 and len(episode["camera_frames"]["wrist"]) == 3  # steps 0, 5, 10
    assert episode["actions"].shape == (24, 6)
    np.testing.assert_array_equal(episode["action_index"], [0, 8, 16])
    np.testing.assert_array_equal(episode["action_end"], [7, 15, 23])  # each sample's targets end with its label
    assert episode["metadata"]["policy_stage"] in ("success", "touched another cube", "missed")  # how far it got
    from nanovla_ros.data.demos import load_demonstrations, write_shard

    (tmp_path / "shards").mkdir()
    write_shard(tmp_path / "shards" / "a.npz", episode, 80)
    write_shard(tmp_path / "shards" / "b.npz", episode, 80)
    demos = load_demonstrations(tmp_path, cameras=("front", "wrist"))
    np.testing.assert_array_equal(demos.action_end, [7, 15, 23, 31, 39, 47])  # per sample, offset per shard
    # randomised: the same scene and task in a workcell drawn by the seed, recorded; then the workcell is put back
    varied = dagger_episode(workcell, policy, {instruction: np.ones(8, np.float32)}, "touch", "train", 7,
                            sample_every=5, max_steps=6, label_steps=8, randomise=True)
    assert varied["instruction"] == episode["instruction"] and "perturbation" in varied["metadata"]
    assert "perturbation" not in episode["metadata"]
    assert np.abs(varied["frames"][0].astype(int) - episode["frames"][0].astype(int)).mean() > 1.0


def test_the_experts_grip_holds_a_command_more_open_than_their_own(workcell, monkeypatch):
    """A policy's gripper command runs more open than the demonstrations' closed level; the grip must still hold
    the cube 0.1 rad more open (with the earlier level, 0.3, it did not: at 0.4 pick_place held in 11 of 65 seeds,
    stack in 0 of 15, and none of these three)."""
    from nanovla_ros.sim import experts

    monkeypatch.setattr(experts, "GRIPPER_CLOSED", experts.GRIPPER_CLOSED + 0.1)
    for kind, seed in (("pick_place", 0), ("stack", 0), ("stack", 1)):
        task = _episode(workcell, kind, seed)
        assert experts.run_expert_episode(workcell, task)[0], (kind, seed)


def test_the_push_expert_moves_on_when_its_command_arrives(workcell):
    """Near the reach limit the arm stalls short of the push's end; the expert used to wait there for its timeout
    (71 steps, median) and again above it (54), showing the arm standing still for ~4 s of each demonstration."""
    task = _episode(workcell, "push", 3)
    success, _, arrivals = _expert_arrivals(workcell, task, settle_steps=15)
    after_arrival = {}
    for index, _, _ in arrivals:
        if index >= 2:
            after_arrival[index] = after_arrival.get(index, 0) + 1
    assert success
    assert after_arrival == {2: 1, 3: 1}, after_arrival  # one step each: the one on which it arrived


def test_a_resumed_expert_descends_where_a_fresh_one_climbs_back(workcell):
    from nanovla_ros.sim.experts import ScriptedExpert

    task = _episode(workcell, "touch", 6)
    expert = ScriptedExpert(workcell, task)
    while expert._index == 0:  # up to the approach point above the cube
        workcell.step(expert.act())
    for _ in range(3):  # a few steps of the descent
        workcell.step(expert.act())
    height = lambda e: e.grasp_point()[2]  # noqa: E731
    start = height(expert)
    resumed, fresh = ScriptedExpert(workcell, task, resume=True), ScriptedExpert(workcell, task)
    assert resumed._index == 1 and fresh._index == 0
    snapshot = workcell.snapshot()
    for e in (resumed, fresh):
        workcell.restore(snapshot)
        e._command = e.grasp_point()
        for _ in range(6):
            workcell.step(e.act())
        if e is resumed:
            assert height(e) < start - 0.003  # keeps going down
        else:
            assert height(e) > start + 0.003  # back up to the approach height
    workcell.restore(snapshot)


@pytest.mark.parametrize("kind", ["pick_place", "stack"])
def test_a_resumed_expert_over_the_goal_puts_the_cube_down_without_climbing(workcell, kind):
    """A DAgger label from a carry that is over the goal and below the lift height goes on down and places the cube.
    Resuming at the lift-height waypoint instead climbed ~1.5 cm first: the ~10 steps a policy executes of a label
    said "up" there, and policies hovered holding the cube over its square until time ran out."""
    from nanovla_ros.sim.experts import ScriptedExpert

    task = _episode(workcell, kind, 4)
    expert = ScriptedExpert(workcell, task)
    last = workcell.joint_positions
    while expert._index < 5:  # grasp, lift, carry to above the goal
        last = np.clip(expert.act(), last - 0.05, last + 0.05)
        workcell.step(last)
    for _ in range(2):  # the first steps of the descent onto the goal
        last = np.clip(expert.act(), last - 0.05, last + 0.05)
        workcell.step(last)
    start_z = workcell.grasp_point()[2]
    resumed = ScriptedExpert(workcell, task, resume=True)
    assert resumed._index == 5
    monitor, heights = SuccessMonitor(task, workcell), []
    for _ in range(150):
        last = np.clip(resumed.act(), last - 0.05, last + 0.05)
        workcell.step(last)
        monitor.update()
        heights.append(workcell.grasp_point()[2])
    assert max(heights[:10]) < start_z + 0.002  # no climb before the descent
    assert monitor.success()


def test_a_resumed_push_expert_pushes_on_and_one_beside_the_cube_comes_round_again(workcell):
    """A DAgger label from the middle of a push goes on pushing (it used to go back up to the approach behind the
    cube, which moves with it: every push that had begun was labelled "back off"); one from beside the cube at
    push height still comes round to the start again."""
    from nanovla_ros.sim.experts import ScriptedExpert

    task = _episode(workcell, "push", 5)  # away from the robot
    monitor = SuccessMonitor(task, workcell)
    start = workcell.cube_position(task.cube).copy()
    expert, last = ScriptedExpert(workcell, task), workcell.joint_positions
    while np.linalg.norm(workcell.cube_position(task.cube)[:2] - start[:2]) < 0.015:  # 1.5 cm into the push
        last = np.clip(expert.act(), last - 0.05, last + 0.05)
        workcell.step(last)
        monitor.update()
    snapshot = workcell.snapshot()
    resumed = ScriptedExpert(workcell, task, resume=True)
    assert resumed._index == 2
    for _ in range(120):
        last = np.clip(resumed.act(), last - 0.05, last + 0.05)
        workcell.step(last)
        monitor.update()
    assert monitor.success()
    workcell.restore(snapshot)
    direction = np.asarray(DIRECTIONS[task.target])
    cubes = {c: workcell.cube_position(c)[:2] for c in CUBE_COLOURS}
    cubes[task.cube] = cubes[task.cube] + 0.03 * np.array([-direction[1], direction[0]])  # 3 cm to the side
    workcell.place(cubes, {}, joints=workcell.joint_positions)
    assert ScriptedExpert(workcell, task, resume=True)._index == 0
    workcell.restore(snapshot)


def test_task_positions_name_the_cube_and_its_goal(workcell):
    """The auxiliary head's targets: the named cube's x, y and where it should go, per task kind."""
    layout = sample_layout(np.random.default_rng(3))
    workcell.place(layout.cubes, layout.squares)
    start = {c: workcell.cube_position(c) for c in layout.cubes}
    cases = {Task("touch", "red", "", "", "train"): layout.cubes["red"],
             Task("pick_place", "red", "yellow", "", "train"): layout.squares["yellow"],
             Task("stack", "red", "blue", "", "train"): layout.cubes["blue"],
             Task("push", "red", "left", "", "train"): np.add(layout.cubes["red"], PUSH_DISTANCE_M * DIRECTIONS["left"])}
    for task, goal in cases.items():
        xy = task_positions(task, workcell, start)
        assert xy.shape == (4,) and xy.dtype == np.float32
        np.testing.assert_allclose(xy[:2], layout.cubes["red"], atol=2e-3)  # settled on the table
        np.testing.assert_allclose(xy[2:], goal, atol=2e-3)
    _set_cube(workcell, "red", (0.2, 0.05, 0.2))  # in the air (as if carried): the cube's position now
    np.testing.assert_allclose(task_positions(Task("touch", "red", "", "", "train"), workcell, start)[:2],
                               workcell.cube_position("red")[:2], atol=1e-6)


def test_the_expert_closes_and_opens_the_jaws_without_waiting_for_the_arm(workcell):
    """The arm's settling time after a command arrives is invisible to a policy; an expert that waited for it at the
    grasp (median 15 steps, up to 106) taught policies to sit at the cube with open jaws. Now the jaws start
    closing (and, at the goal, opening) the step after the descent's command arrives, and the tasks still succeed."""
    from nanovla_ros.sim.experts import GRIPPER_OPEN

    for kind, seed in (("pick_place", 2000), ("stack", 2001)):
        task = _episode(workcell, kind, seed)
        success, last, arrivals = _expert_arrivals(workcell, task, settle_steps=18)
        # still on the descent after its command arrived
        waits = [after == index for index, waypoint, after in arrivals if not waypoint.wait_for_arm]
        assert success, kind
        assert waits and not any(waits), f"{kind}: waited {sum(waits)} steps after the descent arrived"
        assert last[5] >= GRIPPER_OPEN - 1e-6  # ends with the jaws open


def test_perturbations_change_the_render_and_are_undone(workcell):
    from nanovla_ros.configuration import ConfigError
    from nanovla_ros.sim.perturbation import SUITE, apply, parse

    layout = sample_layout(np.random.default_rng(3))

    def both_cameras() -> np.ndarray:
        workcell.place(layout.cubes, layout.squares)  # (distractors are put on the table by ``place``)
        return np.concatenate([workcell.render("front"), workcell.render("wrist")], axis=1).astype(int)

    before = both_cameras()
    for family, (strengths, _) in SUITE.items():
        for strength in (strengths[0], strengths[-1]):
            undo = apply(workcell, parse(f"{family}={strength}"), np.random.default_rng(1))
            changed = int((np.abs(both_cameras() - before).max(axis=-1) > 3).sum())  # pixels
            undo()
            assert changed > 300, (family, strength, changed)  # (a cube is ~170 pixels of the front view)
            assert np.array_equal(both_cameras(), before), family  # put back exactly
    dim = apply(workcell, parse("light=0.5"))
    assert both_cameras().mean() < before.mean()
    dim()
    clutter = apply(workcell, parse("distractors=3"), np.random.default_rng(2))
    workcell.place(layout.cubes, layout.squares)
    objects = [*layout.cubes.values(), *layout.squares.values()]
    for name in ("mug", "box", "ball"):
        xy = workcell.model.geom(f"distractor_{name}").pos[:2]
        assert min(np.linalg.norm(xy - np.asarray(p)) for p in objects) > 0.05, name  # on the table, clear of them
    clutter()
    assert all(workcell.model.geom(f"distractor_{n}").pos[2] < 0 for n in ("mug", "box", "ball"))  # parked again
    for bad in ("light", "light=x", "fog=2", "light=-1", "distractors=9", "jpeg_quality=300"):
        with pytest.raises(ConfigError):
            parse(bad)


def test_randomised_episodes_are_recorded_in_a_perturbed_workcell_and_it_is_put_back(workcell):
    from nanovla_ros.configuration import ConfigError
    from nanovla_ros.sim.demos import expert_episode
    from nanovla_ros.sim.perturbation import RandomisationConfig

    plain = expert_episode(workcell, "touch", "train", 5, sample_every=20, image_size=64, max_steps=20)
    reference = workcell.render("front", 64).astype(int)
    varied = expert_episode(workcell, "touch", "train", 5, sample_every=20, image_size=64, max_steps=20,
                            randomisation=RandomisationConfig())
    seen = varied["metadata"]["perturbation"]
    assert 0.5 <= seen["light_scale"] <= 1.6 and max(abs(v) for v in seen["camera_shift_m"]) <= 0.03
    assert "perturbation" not in plain["metadata"] and plain["instruction"] == varied["instruction"]  # same task
    assert np.abs(varied["frames"][0].astype(int) - plain["frames"][0].astype(int)).mean() > 1.0
    assert np.array_equal(workcell.render("front", 64).astype(int), reference)  # the workcell is put back
    with pytest.raises(ConfigError, match="light_scale_range"):
        RandomisationConfig(light_scale_range=(1.5, 0.5))


def test_the_workcell_node_lays_out_each_episode_in_its_configured_look(tmp_path):
    from nanovla_ros.configuration import ConfigError
    from nanovla_ros.sim.config import WorkcellNodeConfig
    from nanovla_ros.sim.perturbation import RandomisationConfig
    from nanovla_ros.sim.server import WorkcellServer
    from nanovla_ros.sim.workcell import FRONT_CAMERA_POS

    names = {"frames_name": f"nanovla_test_look_{os.getpid()}", "bus_link": str(tmp_path / "bus"),
             "calibration_file": str(tmp_path / "calibration.json")}
    server = WorkcellServer(WorkcellNodeConfig(look="random", seed=1000, **names))
    try:
        server.start()
        drawn = [RandomisationConfig().sample(np.random.default_rng([seed, 13])) for seed in (1000, 1002)]
        assert server.look == drawn[0] and drawn[0] != drawn[1]  # drawn per seed, reproducibly
        server.reset(1002, "touch")
        assert server.look == drawn[1] and server.seed == 1002
        front = server.workcell.model.cam_pos[server.workcell.model.camera("front").id]
        assert np.allclose(front, np.add(FRONT_CAMERA_POS, drawn[1].camera_shift_m))  # the last look undone first
    finally:
        server.close()
    fixed = WorkcellServer(WorkcellNodeConfig(look="distractors=2", seed=1000, **names))
    try:
        on_table = [n for n in ("mug", "box", "ball") if fixed.workcell.model.geom(f"distractor_{n}").pos[2] > 0]
        assert fixed.look.distractors == 2 and len(on_table) == 2
    finally:
        fixed.close()
    with pytest.raises(ConfigError, match="fog"):
        WorkcellNodeConfig(look="fog=2")


def test_randomisation_covers_every_plausible_strength_and_none_beyond():
    """Training on randomised scenes must leave the suite's strongest strength of each family unseen."""
    from dataclasses import asdict

    from nanovla_ros.sim.perturbation import SUITE, Perturbation, RandomisationConfig, plausible_strengths

    rng = np.random.default_rng(0)
    draws = [asdict(RandomisationConfig().sample(rng)) for _ in range(3000)]
    nominal = asdict(Perturbation())
    for family, (strengths, make) in SUITE.items():
        for strength in strengths:
            changed = {k: v for k, v in asdict(make(strength)).items() if v != nominal[k]}
            assert changed, family
            for field_name, value in changed.items():
                values = np.array([d[field_name] for d in draws], dtype=float).reshape(len(draws), -1)
                target = np.asarray(value, dtype=float).reshape(-1)
                axis = np.flatnonzero(target != np.asarray(nominal[field_name], dtype=float).reshape(-1))
                base = np.asarray(nominal[field_name], dtype=float).reshape(-1)[axis]
                seen = values[:, axis][np.all(values[:, axis] != base, axis=1)]  # (JPEG: 0 is "none", not a quality)
                low, high = seen.min(axis=0), seen.max(axis=0)
                margin = 0.02 * (high - low)  # the ranges' edges are never drawn exactly
                inside = bool(np.all((low - margin <= target[axis]) & (target[axis] <= high + margin)))
                assert inside == (strength in plausible_strengths(family)), (family, strength, field_name)


def test_the_parked_distractors_leave_the_nominal_scene_exactly_as_without_them(workcell, monkeypatch):
    """Objects only a perturbation puts on the table must not change the training workcell: far away they grew
    MuJoCo's model extent, and with it the cameras' near clipping plane (the wrist view lost the jaws)."""
    import nanovla_ros.sim.workcell as workcell_module
    from nanovla_ros.sim.perturbation import apply, parse

    monkeypatch.setattr(workcell_module, "DISTRACTORS", ())
    plain = workcell_module.Workcell()
    try:
        assert plain.model.stat.extent == workcell.model.stat.extent
        layout = sample_layout(np.random.default_rng(1000))
        undo = apply(workcell, parse(""), np.random.default_rng(0))  # what every nominal episode goes through
        for w in (workcell, plain):
            w.place(layout.cubes, layout.squares)
        for camera in ("front", "wrist"):
            assert np.array_equal(workcell.render(camera), plain.render(camera)), camera
        undo()
    finally:
        plain.close()
