#!/usr/bin/env python3
"""Which way does the policy read a push? (issue #27: pushes said in held-out phrasing families fail twice as often
as in training ones, and the failures are pushes gone short or off line.)

For push scenes of the workcell (the arm at home, seeds from --first-seed), the checkpoint's auxiliary task head
(``NanoVLA.predict_task_xy``: the x, y of the named cube and of its goal, read from the fused tokens) is asked for
the goal of every phrasing-bank sentence that says a push of the scene's cube, of the training or the held-out
families. The direction read is the one whose true goal (5 cm from the cube along left, right, away) is nearest
the predicted goal. Prints, per split, how often the direction and the cube are read right, a confusion matrix of
directions, and the held-out direction phrases and cores read worst. A probe of the language path: the actions do
not go through the task head.

    python docs/experiments/probes/probe_read_direction.py [--checkpoint CKPT] [--scenes 6] --table-dir CACHE
"""
from __future__ import annotations

import collections
import json

import numpy as np


def main() -> None:
    from task_head_probe import TaskHeadProbe, parse_args

    from nanovla_ros import phrasings
    from nanovla_ros.sim.tasks import DIRECTIONS, sample_task, task_positions
    from nanovla_ros.tasks import Task

    args = parse_args(__doc__)
    probe = TaskHeadProbe(args.checkpoint, args.table_dir)
    workcell = probe.workcell
    directions = list(DIRECTIONS)
    tally = {s: collections.Counter() for s in ("train", "heldout")}
    confusion = {s: np.zeros((3, 3), int) for s in ("train", "heldout")}
    by_phrase, by_core = collections.defaultdict(list), collections.defaultdict(list)
    for seed in range(args.first_seed, args.first_seed + args.scenes):
        rng, layout = probe.scene(seed)
        task = sample_task(rng, "push", "train")
        start = {c: workcell.cube_position(c) for c in layout.cubes}
        features, state = probe.observe()
        goals = {d: task_positions(Task("push", task.cube, d, "", "train"), workcell, start)[2:] for d in directions}
        cube_xy = workcell.cube_position(task.cube)[:2]
        for split in ("train", "heldout"):
            for truth in directions:
                for text in phrasings.sentences_of("push", task.cube, truth, split):
                    xy = probe.read(features, state, [text])[0]
                    read = directions[int(np.argmin([np.linalg.norm(xy[2:] - goals[d]) for d in directions]))]
                    right_cube = np.linalg.norm(xy[:2] - cube_xy) < 0.03
                    tally[split]["sentences"] += 1
                    tally[split]["direction right"] += read == truth
                    tally[split]["cube within 3 cm"] += bool(right_cube)
                    confusion[split][directions.index(truth), directions.index(read)] += 1
                    if split == "heldout":
                        phrase = next(p for p in sorted((p for pair in phrasings.DIRECTION_PHRASES[truth] for p in pair),
                                                        key=len, reverse=True) if p in text)
                        by_phrase[phrase].append(read == truth)
                        by_core[probe.core_of_text(text)].append(read == truth)
    probe.close()
    report = {"checkpoint": args.checkpoint, "scenes": args.scenes, "directions": directions,
              "splits": {s: {**dict(tally[s]), "confusion (rows: said, columns: read)": confusion[s].tolist()}
                         for s in tally},
              "heldout_by_direction_phrase": {p: round(float(np.mean(v)), 3) for p, v in sorted(by_phrase.items())},
              "heldout_by_core": {c: round(float(np.mean(v)), 3) for c, v in sorted(by_core.items())}}
    for split in ("train", "heldout"):
        t = tally[split]
        print(f"{split}: {t['sentences']} sentence-scenes, direction read right {t['direction right'] / t['sentences']:.1%}, "
              f"cube within 3 cm {t['cube within 3 cm'] / t['sentences']:.1%}; confusion (said x read, "
              f"{directions}): {confusion[split].tolist()}")
    print("held-out, direction read right, by direction phrase:")
    for p, v in sorted(report["heldout_by_direction_phrase"].items(), key=lambda kv: kv[1]):
        print(f"  {v:.0%}  {p!r}")
    print("held-out, by core:")
    for c, v in sorted(report["heldout_by_core"].items(), key=lambda kv: kv[1]):
        print(f"  {v:.0%}  {c!r}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
