"""DAgger (Ross et al. 2011) in the workcell: the policy drives, the scripted expert labels.

Each episode runs a checkpoint closed loop as the evaluation harness does (long-short chunking, the driver's
rate limit). Every ``sample_every`` control steps the frames, the joint state, and the expert's answer to that
state are recorded: the physics is saved, a fresh expert plans from the arm's current pose and the cubes'
current positions and runs ``horizon`` steps (its commands, rate-limited from the policy's last command, are
the label chunk), and the physics is restored, so the policy's episode continues untouched. The labels thus
say how to recover from where the policy actually goes (closed loop, cloned policies end centimetres off the
cube), which demonstrations alone never show.

The expert resumes its plan where the arm is (``ScriptedExpert(resume=True)``): over the cube and below the
approach height it descends, with the cube lifted in the jaws it carries it on (and over the goal below the lift
height it goes on down and lets go), low and in line behind a pushed cube it pushes on, anywhere else it starts
at the approach above the cube (the recovery from a miss). Restarting every label at the approach instead would
label states on the way down "climb back up", a descent onto the goal "climb back to lift height first" and a push
under way "back off to the approach"; a policy fine-tuned on such labels hovers above the cubes.

Shards have the format of ``nanovla_ros.data.demos``; sample i's label chunk is rows i*L .. i*L + L - 1 of
``actions`` (L = ``label_steps`` <= the model's horizon H) and its ``action_end`` row ends it, so the steps
L .. H - 1 of a predicted chunk are masked out of the loss. L < H saves expert time (its IK is most of the
cost); the policy executes the first h = 10 of each chunk anyway.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from nanovla_ros.driver.config import DriverConfig
from nanovla_ros.evaluation.closed_loop import run_policy_episode
from nanovla_ros.sim.experts import ScriptedExpert
from nanovla_ros.sim.perturbation import Perturbation, RandomisationConfig
from nanovla_ros.sim.tasks import Task, cube_positions, square_positions, task_positions
from nanovla_ros.sim.workcell import CUBE_COLOURS, Workcell


def expert_chunk(workcell: Workcell, task: Task, last_command: np.ndarray, horizon: int,
                 max_step_rad: float) -> np.ndarray:
    """(horizon, 6) commands of an expert that resumes its plan from the current state, rate-limited from
    ``last_command``; the workcell is left as it was."""
    snapshot = workcell.snapshot()
    try:
        expert = ScriptedExpert(workcell, task, resume=True)
        last, chunk = np.asarray(last_command, float), []
        for _ in range(horizon):
            last = np.clip(expert.act(), last - max_step_rad, last + max_step_rad)
            chunk.append(last)
            workcell.step(last)
        return np.asarray(chunk, np.float32)
    finally:
        workcell.restore(snapshot)


def dagger_episode(workcell: Workcell, policy, embeddings: dict[str, np.ndarray], kind: str, split: str, seed: int,
                   execute_steps: int = 10, sample_every: int = 6, max_steps: int | None = None,
                   label_steps: int | None = None, randomise: bool = False) -> dict:
    """One policy episode (the evaluation harness's loop) with expert labels, as shard fields (see the module
    docstring). ``randomise``: in a workcell drawn from ``RandomisationConfig`` by the seed, as the randomised
    expert episodes are (``nanovla_ros.sim.demos.expert_episode``), recorded in the metadata."""
    max_step_rad = DriverConfig().max_step_rad  # the labels are rate-limited like the policy's commands
    horizon = min(label_steps or policy.config.horizon, policy.config.horizon)
    cameras = policy.config.cameras
    frames: dict[str, list] = {c: [] for c in cameras}
    states, chunks, tasks, positions, cubes = [], [], [], [], []
    start = {}  # the cubes where the episode began (a push's goal is measured from there)

    def record(task: Task, step: int, last: np.ndarray) -> dict[str, np.ndarray] | None:
        if step % sample_every:
            return None
        tasks.append(task)
        if not start:
            start.update({c: workcell.cube_position(c) for c in CUBE_COLOURS})
        positions.append(task_positions(task, workcell, start))
        cubes.append(cube_positions(workcell))
        views = {c: workcell.render(c) for c in cameras}
        for c in cameras:
            frames[c].append(views[c])
        states.append(workcell.joint_positions.astype(np.float32))
        chunks.append(expert_chunk(workcell, task, last, horizon, max_step_rad))
        return views

    look = RandomisationConfig().sample(np.random.default_rng([seed, 13])) if randomise else Perturbation()
    result = run_policy_episode(workcell, policy, embeddings, kind, split, seed, execute_steps, max_steps, on_step=record,
                                perturb=look)
    task, n = tasks[0], len(states)
    return {"frames": frames["front"], "camera_frames": {c: frames[c] for c in cameras if c != "front"},
            "frame_index": np.arange(n, dtype=np.int64), "states": np.stack(states),
            "actions": np.concatenate(chunks), "action_index": np.arange(n, dtype=np.int64) * horizon,
            "action_end": np.arange(1, n + 1, dtype=np.int64) * horizon - 1, "task_xy_m": np.stack(positions),
            "cubes_xy_m": np.stack(cubes),
            "instruction": task.instruction, "success": result.success,
            "metadata": {"task_kind": kind, "cube": task.cube, "target": task.target, "split": split, "seed": seed,
                         "cube_colours": list(CUBE_COLOURS), "source": "dagger",
                         "squares_xy_m": square_positions(workcell),
                         "policy_success": str(result.success).lower(), "policy_stage": result.outcome["stage"],
                         "label_horizon": horizon, "sample_every": sample_every}
            | ({"perturbation": asdict(look)} if randomise else {})}
