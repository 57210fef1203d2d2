#!/usr/bin/env python3
"""Does a trained policy head for the cube its instruction names? (the README's "data loop" diagnosis)

For scenes with the arm at home, the checkpoint is asked "touch the <colour> cube" for each colour and a fresh
scripted expert plans the same task; both chunks' command ``--step`` (forward kinematics of the gripper frame)
is compared with the cubes: which cube each is nearest to (a confusion matrix, rows = the colour asked), the
distance to the asked cube, and how far the policy's answers for the three colours lie apart in one scene
(near zero: the instruction's colour is ignored). A model with a task head (``--task-loss-weight``) is also
asked where it thinks the named cube is: the same confusion matrix and distance for the head's answer, and
where it thinks the goal is (README diagnosis 14): asked "put the <cube> cube in the <colour> square" for each
square, which square its goal answer is nearest to (a confusion matrix) and how far from the asked one; asked
"stack the <cube> cube on the <other> cube", how often its goal answer is nearest the other cube named; asked
with the held-out stacking paraphrase, whether its goal is nearest the other cube, the named one or a square
(README diagnosis 17: the paraphrase reads as a pick-and-place).

    python docs/experiments/probes/probe_first_chunk.py out/run10/nanovla_s_front_wrist.safetensors --scenes 12 --table-dir data/tables
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import nanovla_ros.sim  # noqa: F401  (chooses the headless GL before mujoco is imported)
import mujoco

from nanovla_ros.evaluation.closed_loop import instruction_embeddings
from nanovla_ros.model.checkpoint import load_checkpoint
from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy
from nanovla_ros.evaluation.dagger import expert_chunk
from nanovla_ros.sim.tasks import TEMPLATES, Task, sample_layout
from nanovla_ros.sim.workcell import CUBE_COLOURS, SQUARE_COLOURS, Workcell

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--step", type=int, default=99, help="which command of the chunk (0-based)")
    parser.add_argument("--first-seed", type=int, default=50000)
    parser.add_argument("--table-dir", default="", help="feature cache with instruction tables (else the encoder runs)")
    parser.add_argument("--out", default="", help="also write the JSON here (stdout carries the encoder's messages too)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, _ = load_checkpoint(args.checkpoint)
    policy = NanoVLAPolicy(model)
    embeddings = instruction_embeddings(model.config.language_encoder_id, args.table_dir or None)
    workcell = Workcell()
    m, d = workcell.model, workcell.data
    site, kinematics = m.site("gripperframe").id, mujoco.MjData(m)

    def gripper_at(q: np.ndarray) -> np.ndarray:
        kinematics.qpos[:] = d.qpos
        for value, name in zip(q, JOINTS):
            kinematics.qpos[m.jnt_qposadr[m.joint(name).id]] = value
        mujoco.mj_kinematics(m, kinematics)
        return kinematics.site_xpos[site].copy()

    who_all = ("policy", "expert") + (("task_head",) if model.task_head is not None else ())
    confusion = {who: np.zeros((3, 3), int) for who in who_all}
    error = {who: [] for who in who_all}
    spread = []
    goal_confusion, goal_error, stack_hits, stack_error = np.zeros((3, 3), int), [], [], []
    heldout_stack = {"other cube": 0, "named cube": 0, "a square": 0}  # the held-out paraphrase's goal, nearest to

    def head_goal(views: dict, q: np.ndarray, text: str) -> np.ndarray:
        features = policy.image_encoder(torch.from_numpy(np.stack([views[c] for c in model.config.cameras])))
        return model.predict_task_xy(features[None], torch.from_numpy(embeddings[text])[None],
                                     torch.from_numpy(q)[None])[0, 2:].numpy()

    for seed in range(args.first_seed, args.first_seed + args.scenes):
        layout = sample_layout(np.random.default_rng(seed))
        workcell.place(layout.cubes, layout.squares)
        views = {c: workcell.render(c) for c in model.config.cameras}
        q = workcell.joint_positions.astype(np.float32)
        answers = []
        for i, colour in enumerate(CUBE_COLOURS):
            text = f"touch the {colour} cube"
            chunks = {"policy": policy.predict_chunk(views, q, embeddings[text]),
                      "expert": expert_chunk(workcell, Task("touch", colour, "", text, "train"), q, 100, 0.05)}
            points = {who: gripper_at(chunk[min(args.step, len(chunk) - 1)]) for who, chunk in chunks.items()}
            if model.task_head is not None:
                features = policy.image_encoder(torch.from_numpy(np.stack([views[c] for c in model.config.cameras])))
                xy = model.predict_task_xy(features[None], torch.from_numpy(embeddings[text])[None],
                                           torch.from_numpy(q)[None])[0, :2].numpy()
                points["task_head"] = np.array([xy[0], xy[1], 0.0])
            for who, point in points.items():
                distances = [np.linalg.norm(point[:2] - np.asarray(layout.cubes[c])) for c in CUBE_COLOURS]
                confusion[who][i, int(np.argmin(distances))] += 1
                error[who].append(distances[i])
                if who == "policy":
                    answers.append(point)
        spread.append(np.mean([np.linalg.norm(a - b) for a in answers for b in answers if a is not b]))
        if model.task_head is not None:
            cube = list(CUBE_COLOURS)[seed % len(CUBE_COLOURS)]
            with torch.inference_mode():
                for i, square in enumerate(SQUARE_COLOURS):
                    goal = head_goal(views, q, TEMPLATES["pick_place"][0][0].format(cube=cube, target=square))
                    distances = [np.linalg.norm(goal - np.asarray(layout.squares[c])) for c in SQUARE_COLOURS]
                    goal_confusion[i, int(np.argmin(distances))] += 1
                    goal_error.append(distances[i])
                for other in (c for c in CUBE_COLOURS if c != cube):
                    goal = head_goal(views, q, TEMPLATES["stack"][0][0].format(cube=cube, target=other))
                    distances = {c: np.linalg.norm(goal - np.asarray(layout.cubes[c]))
                                 for c in CUBE_COLOURS if c != cube}
                    stack_hits.append(min(distances, key=distances.get) == other)
                    stack_error.append(distances[other])
                    goal = head_goal(views, q, TEMPLATES["stack"][1][0].format(cube=cube, target=other))
                    places = {"other cube": np.linalg.norm(goal - np.asarray(layout.cubes[other])),
                              "named cube": np.linalg.norm(goal - np.asarray(layout.cubes[cube])),
                              "a square": min(np.linalg.norm(goal - np.asarray(xy)) for xy in layout.squares.values())}
                    heldout_stack[min(places, key=places.get)] += 1
    cm = lambda values: round(float(np.median(values)) * 100, 1)  # noqa: E731
    goal = {"pick_place_confusion_rows_asked_square_cols_nearest": goal_confusion.tolist(),
            "pick_place_median_distance_to_asked_square_cm": cm(goal_error) if goal_error else None,
            "stack_nearest_the_named_other_cube": round(float(np.mean(stack_hits)), 2) if stack_hits else None,
            "stack_median_distance_to_it_cm": cm(stack_error) if stack_error else None,
            "stack_heldout_paraphrase_goal_nearest": heldout_stack if stack_error else None}
    text = json.dumps({"checkpoint": args.checkpoint, "scenes": args.scenes, "step": args.step,
                       "confusion_rows_asked_cols_nearest": {k: v.tolist() for k, v in confusion.items()},
                       "median_distance_to_asked_cube_cm": {k: cm(v) for k, v in error.items()},
                       "policy_answers_apart_across_colours_cm": cm(spread),
                       **({"task_head_goal": goal} if goal_error else {})}, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    workcell.close()


if __name__ == "__main__":
    main()
