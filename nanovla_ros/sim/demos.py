"""Demonstrations straight from the simulation (no ROS): the scripted expert drives the workcell in process,
as fast as the CPU allows, and each episode becomes a training shard of the same format the bag-based
dataset builder writes (``nanovla_ros.data.demos``).

It reproduces what the graph records: the commands pass through the driver's rate limit (``max_step_rad``
per control step, as ``ChunkExecutor`` clamps a leader's commands), the state is the joint positions before
each command, a sample every ``sample_every`` commands with the front-camera frame of that moment, and the
episode ends 0.6 s after the expert finishes. What it leaves out is the real-time graph itself (camera
latency, the servo protocol), which `nanovla collect` through the graph keeps.

Noise injection (DART, Laskey et al. 2017): with ``noise_rad`` > 0 the arm executes the expert's command plus
a slowly varying random offset on the arm joints, while the recorded actions stay the expert's clean
commands. The states then leave the expert's path and the labels say how to get back to it, which is what a
policy needs once its own small errors take it off that path (closed loop, cloned policies drift off the
path and creep).
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from nanovla_ros.sim.experts import ScriptedExpert
from nanovla_ros.sim.perturbation import Perturbation, RandomisationConfig
from nanovla_ros.sim.perturbation import apply as apply_perturbation
from nanovla_ros.sim.tasks import (
    SuccessMonitor,
    cube_positions,
    rephrased,
    sample_layout,
    sample_task,
    square_positions,
    task_positions,
)
from nanovla_ros.sim.workcell import CUBE_COLOURS, Workcell

SETTLE_STEPS = 18  # 0.6 s at 30 Hz, as `nanovla collect`
NOISE_JOINTS = slice(0, 4)  # pan, lift, elbow, wrist flex (roll and gripper stay clean)
NOISE_TIME_S = 0.7  # correlation time of the offset (an Ornstein-Uhlenbeck process)


class JointNoise:
    """Ornstein-Uhlenbeck offsets, stationary standard deviation ``std_rad``, on ``NOISE_JOINTS``."""

    def __init__(self, rng: np.random.Generator, std_rad: float, dt_s: float, dims: int = 6) -> None:
        self.rng, self.std, self.decay = rng, std_rad, float(np.exp(-dt_s / NOISE_TIME_S))
        self.value = np.zeros(dims)

    def step(self) -> np.ndarray:
        k = NOISE_JOINTS
        fresh = self.rng.normal(0.0, self.std, self.value[k].shape)
        self.value[k] = self.decay * self.value[k] + np.sqrt(1.0 - self.decay ** 2) * fresh
        return self.value


def expert_episode(workcell: Workcell, kind: str, split: str, seed: int, sample_every: int = 4,
                   max_step_rad: float = 0.05, image_size: int = 224, max_steps: int = 450,
                   noise_rad: float = 0.0, cameras: tuple[str, ...] = ("front",), more_phrasings: bool = False,
                   randomisation: RandomisationConfig | None = None) -> dict:
    """One expert episode as shard fields (frames, states, actions, indices, the task's positions at each sample
    (``task_positions``) and every cube's (``cube_positions``), instruction, metadata).

    ``cameras``: front always; others (``wrist``) are rendered with it, at the same moments.
    ``noise_rad``: the largest standard deviation of the executed-command noise; each episode draws its own
    in [0, noise_rad] (a mixture of clean and perturbed episodes), from a generator of its own so that the
    layout and task of a seed do not depend on it.
    ``more_phrasings``: say a training task with any of its training phrasings, the training-only ones included
    (``tasks.rephrased``; its own generator too: the scene stays the seed's).
    ``randomisation``: the episode is recorded in a perturbed workcell drawn from these ranges (camera pose, light,
    table colour, sensor noise; its own generator), recorded in the metadata; undone after the episode."""
    seen = randomisation.sample(np.random.default_rng([seed, 13])) if randomisation else Perturbation()
    undo = apply_perturbation(workcell, seen, np.random.default_rng([seed, 17]))
    try:
        episode = _expert_episode(workcell, kind, split, seed, sample_every, max_step_rad, image_size, max_steps,
                                  noise_rad, cameras, more_phrasings)
    finally:
        undo()
    if randomisation:
        episode["metadata"]["perturbation"] = asdict(seen)
    return episode


def _expert_episode(workcell: Workcell, kind: str, split: str, seed: int, sample_every: int, max_step_rad: float,
                    image_size: int, max_steps: int, noise_rad: float, cameras: tuple[str, ...],
                    more_phrasings: bool) -> dict:
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng)
    task = sample_task(rng, kind, split)
    if more_phrasings:
        task = rephrased(task, np.random.default_rng([seed, 11]))
    noise_rng = np.random.default_rng([seed, 7])
    noise = JointNoise(noise_rng, noise_rng.uniform(0.0, noise_rad), 1.0 / workcell.config.control_rate_hz)
    workcell.place(layout.cubes, layout.squares)
    expert, monitor = ScriptedExpert(workcell, task), SuccessMonitor(task, workcell)
    last = workcell.joint_positions  # the driver's last command: it holds the arm where it is
    frames, states, actions, action_index, positions, cubes = [], [], [], [], [], []
    camera_frames: dict[str, list] = {c: [] for c in cameras if c != "front"}
    settle = 0
    for k in range(max_steps + SETTLE_STEPS):
        if k % sample_every == 0:
            frames.append(workcell.render("front", image_size))
            for camera, taken in camera_frames.items():
                taken.append(workcell.render(camera, image_size))
            states.append(workcell.joint_positions.astype(np.float32))
            positions.append(task_positions(task, workcell, monitor.start))
            cubes.append(cube_positions(workcell))
            action_index.append(k)
        target = expert.act()
        command = np.clip(target, last - max_step_rad, last + max_step_rad)
        last = command
        actions.append(command.astype(np.float32))  # the label: the expert's clean command
        workcell.step(command + noise.step())  # zero offset when noise_rad = 0
        monitor.update()
        if expert.done:
            settle += 1
            if settle >= SETTLE_STEPS:
                break
    return {"frames": frames, "camera_frames": camera_frames, "frame_index": np.arange(len(frames), dtype=np.int64),
            "states": np.stack(states), "actions": np.stack(actions),
            "action_index": np.asarray(action_index, np.int64), "task_xy_m": np.stack(positions),
            "cubes_xy_m": np.stack(cubes), "instruction": task.instruction, "success": bool(monitor.success()),
            "metadata": {"task_kind": kind, "cube": task.cube, "target": task.target, "split": split, "seed": seed,
                         "cube_colours": list(CUBE_COLOURS), "source": "in_process_expert",
                         "squares_xy_m": square_positions(workcell),
                         "task_success": str(bool(monitor.success())).lower(),
                         "sample_every": sample_every, "noise_std_rad": round(float(noise.std), 4)}}
