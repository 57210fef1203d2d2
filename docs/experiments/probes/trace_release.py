#!/usr/bin/env python3
"""Where a policy lets go of the cube (README "Data loop", diagnosis 16): for each episode, the step the cube
leaves the jaws in the air, the gripper commands before it, the cube's height and its x, y distance from the goal
(the other cube for `stack`, the square for `pick_place`) at that moment, and where it ended up (its distance from
the goal, and the two squares or other cubes it ended nearest). With a task head, also where the head put the goal
at the last replan before the release: its error against the true goal, and the cube's distance from the head's goal
(small: the policy let go where it believed the goal was, a perception error; large: the arm went elsewhere).

    .venv/bin/python docs/experiments/probes/trace_release.py nanovla_ros/checkpoints/nanovla_s_workcell.safetensors \\
        --task stack --seeds 1001,1004,1006 [--split train] [--table-dir data/tables]

One JSON line per episode, in process on the CPU (the harness of `nanovla evaluate`, executing the h the checkpoint
declares, else 10; --execute-h another).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import nanovla_ros.sim  # noqa: F401  (chooses the headless GL before mujoco is imported)
from nanovla_ros.evaluation.closed_loop import instruction_embeddings, run_policy_episode
from nanovla_ros.model.checkpoint import declared_execute_steps, load_checkpoint
from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
from nanovla_ros.sim.workcell import CUBE_COLOURS, CUBE_HALF_M, SQUARE_COLOURS, Workcell

HELD_M = 0.015  # the cube's centre within this of the jaws' centre: held


def trace(workcell: Workcell, policy: NanoVLAPolicy, embeddings: dict, kind: str, split: str, seed: int,
          execute_h: int, frames_dir: str | None = None) -> dict:
    rows, result_task = [], []  # result_task: the episode's task, as the harness drew it

    model, head_goal, head_first, replans = policy.model, [np.full(2, np.nan)], [], {}

    def on_step(task, step, last_command):
        result_task[:] = [task]
        goal = workcell.cube_position(task.target) if kind == "stack" else workcell.square_position(task.target)
        views = None
        if model.task_head is not None and step % execute_h == 0:  # the policy replans at this step on these views
            views = {c: workcell.render(c) for c in model.config.cameras}
            frames = torch.from_numpy(np.stack([views[c] for c in model.config.cameras]))
            with torch.inference_mode():
                features = policy.image_encoder(frames)
                xy = model.predict_task_xy(features[None], torch.from_numpy(embeddings[task.instruction])[None],
                                           torch.from_numpy(workcell.joint_positions.astype(np.float32))[None])
            head_goal[0] = xy[0, 2:4].float().numpy()
            head_first[:] = head_first or [float(np.linalg.norm(head_goal[0] - goal[:2]))]
            replans[step] = views
        rows.append((*workcell.cube_position(task.cube), float(last_command[5]), *workcell.grasp_point(), *goal[:2],
                     *head_goal[0]))
        return views

    result = run_policy_episode(workcell, policy, embeddings, kind, split, seed, execute_h, on_step=on_step)
    a = np.asarray(rows)
    cube, command, jaws, goal, head = a[:, 0:3], a[:, 3], a[:, 4:7], a[:, 7:9], a[:, 9:11]
    held = (np.linalg.norm(cube - jaws, axis=1) < HELD_M) & (cube[:, 2] > CUBE_HALF_M + 0.01)
    report = {"seed": seed, "instruction": result.instruction, "success": bool(result.success),
              "stage": result.outcome["stage"]}
    # where the cube ended: the two nearest squares or other cubes (held-out stacking carried it to a square: README,
    # point 22)
    places = {f"square {c}": workcell.square_position(c)[:2] for c in SQUARE_COLOURS}
    places.update({f"cube {c}": workcell.cube_position(c)[:2] for c in CUBE_COLOURS if c != result_task[0].cube})
    ended = sorted((round(100 * float(np.linalg.norm(cube[-1, :2] - np.asarray(xy))), 1), name)
                   for name, xy in places.items())
    report["ended_nearest_cm"] = [[name, d] for d, name in ended[:2]]
    if not held.any():
        return {**report, "released": None}
    last = int(np.flatnonzero(held)[-1])
    if frames_dir and replans:  # what the cameras showed at the last replan before the release
        from PIL import Image
        at = max(k for k in replans if k <= last)
        for camera, frame in replans[at].items():
            Image.fromarray(frame).save(f"{frames_dir}/{kind}_{split}_{seed}_step{at}_{camera}.png")
    return {**report, "held_steps": int(held.sum()), "released_at_step": last,
            "gripper_command_rad_before": [round(float(c), 2) for c in command[max(0, last - 20):last + 1:5]],
            "cube_z_cm": round(100 * float(cube[last, 2]), 1),
            "cube_to_goal_xy_cm": round(100 * float(np.linalg.norm(cube[last, :2] - goal[last])), 1),
            "final_to_goal_xy_cm": round(100 * float(np.linalg.norm(cube[-1, :2] - goal[-1])), 1),
            "final_z_cm": round(100 * float(cube[-1, 2]), 1),
            **({} if np.isnan(head[last]).any() else {
                "head_goal_error_first_cm": round(100 * head_first[0], 1),  # at the first replan (the arm at home)
                "head_goal_error_cm": round(100 * float(np.linalg.norm(head[last] - goal[last])), 1),
                "cube_to_head_goal_xy_cm": round(100 * float(np.linalg.norm(cube[last, :2] - head[last])), 1)})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--task", choices=("stack", "pick_place"), default="stack")
    parser.add_argument("--seeds", required=True, help="comma-separated episode seeds")
    parser.add_argument("--split", choices=("train", "heldout"), default="train")
    parser.add_argument("--table-dir", default=None, help="feature cache with instruction tables (else the encoder)")
    parser.add_argument("--execute-h", type=int, help="actions per chunk (default: what the checkpoint declares)")
    parser.add_argument("--frames-dir", help="save each camera's frame at the last replan before the release here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, extra = load_checkpoint(args.checkpoint, "cpu")
    execute_h = args.execute_h or declared_execute_steps(extra)
    policy = NanoVLAPolicy(model)
    embeddings = instruction_embeddings(model.config.language_encoder_id, args.table_dir)
    workcell = Workcell()
    try:
        for seed in (int(s) for s in args.seeds.split(",")):
            print(json.dumps(trace(workcell, policy, embeddings, args.task, args.split, seed, execute_h,
                                   args.frames_dir)), flush=True)
    finally:
        workcell.close()


if __name__ == "__main__":
    main()
