"""Demonstrations straight from the simulation (no ROS): the scripted expert drives the workcell in process,
as fast as the CPU allows, and each episode becomes a training shard of the same format the bag-based
dataset builder writes (``nanovla_ros.data.demos``).

It reproduces what the graph records: the commands pass through the driver's rate limit (``max_step_rad``
per control step, as ``ChunkExecutor`` clamps a leader's commands), the state is the joint positions before
each command, a sample every ``sample_every`` commands with the front-camera frame of that moment, and the
episode ends 0.6 s after the expert finishes. What it leaves out is the real-time graph itself (camera
latency, the servo protocol), which `nanovla collect` through the graph keeps.
"""
from __future__ import annotations

import numpy as np

from nanovla_ros.sim.experts import ScriptedExpert
from nanovla_ros.sim.tasks import SuccessMonitor, sample_layout, sample_task
from nanovla_ros.sim.workcell import Workcell

SETTLE_STEPS = 18  # 0.6 s at 30 Hz, as `nanovla collect`


def expert_episode(workcell: Workcell, kind: str, split: str, seed: int, sample_every: int = 4,
                   max_step_rad: float = 0.05, image_size: int = 224, max_steps: int = 450) -> dict:
    """One expert episode as shard fields (frames, states, actions, indices, instruction, metadata)."""
    rng = np.random.default_rng(seed)
    layout = sample_layout(rng)
    task = sample_task(rng, kind, split)
    workcell.place(layout.cubes, layout.squares)
    expert, monitor = ScriptedExpert(workcell, task), SuccessMonitor(task, workcell)
    last = workcell.joint_positions  # the driver's last command: it holds the arm where it is
    frames, states, actions, action_index = [], [], [], []
    settle = 0
    for k in range(max_steps + SETTLE_STEPS):
        if k % sample_every == 0:
            frames.append(workcell.render("front", image_size))
            states.append(workcell.joint_positions.astype(np.float32))
            action_index.append(k)
        target = expert.act()
        command = np.clip(target, last - max_step_rad, last + max_step_rad)
        last = command
        actions.append(command.astype(np.float32))
        workcell.step(command)
        monitor.update()
        if expert.done:
            settle += 1
            if settle >= SETTLE_STEPS:
                break
    return {"frames": frames, "frame_index": np.arange(len(frames), dtype=np.int64),
            "states": np.stack(states), "actions": np.stack(actions),
            "action_index": np.asarray(action_index, np.int64), "instruction": task.instruction,
            "success": bool(monitor.success()),
            "metadata": {"task_kind": kind, "cube": task.cube, "target": task.target, "split": split, "seed": seed,
                         "source": "in_process_expert", "task_success": str(bool(monitor.success())).lower(),
                         "sample_every": sample_every}}
