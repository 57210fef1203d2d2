#!/usr/bin/env python3
"""Which cube goes on which? (issue #27: stacking said in held-out phrasing families succeeds about half as often
as in training ones; the failures include grasps at the base cube, as if the sentence were read with the two cubes
swapped.)

For stacking scenes of the workcell (the arm at home, seeds from --first-seed), the checkpoint's auxiliary task
head (``NanoVLA.predict_task_xy``: the x, y of the named cube and of its goal, read from the fused tokens) is asked,
for every phrasing-bank sentence that says a stack of two of the scene's cubes (every ordered pair, training or
held-out families), which cube is to be moved and onto which: each read is the scene's cube nearest the predicted
point. A sentence is read right (top and base), swapped (top read as the base and the base as the top) or otherwise
wrong. Prints, per split, those rates and, for the held-out families, the rate per core phrase and the sentences
read swapped most often. A probe of the language path: the actions do not go through the task head.

    python docs/experiments/probes/probe_read_stack.py [--checkpoint CKPT] [--scenes 6] --table-dir CACHE
"""
from __future__ import annotations

import collections
import itertools
import json

import numpy as np


def main() -> None:
    from task_head_probe import TaskHeadProbe, parse_args

    from nanovla_ros import phrasings

    args = parse_args(__doc__)
    probe = TaskHeadProbe(args.checkpoint, args.table_dir)
    tally = {s: collections.Counter() for s in ("train", "heldout")}
    by_core, by_text = collections.defaultdict(list), collections.defaultdict(list)
    for seed in range(args.first_seed, args.first_seed + args.scenes):
        _, layout = probe.scene(seed)
        cubes = list(layout.cubes)
        xy = {c: probe.workcell.cube_position(c)[:2] for c in cubes}
        features, state = probe.observe()
        nearest = lambda point: min(cubes, key=lambda c: np.linalg.norm(point - xy[c]))  # noqa: E731
        for split in ("train", "heldout"):
            for top, base in itertools.permutations(cubes, 2):
                texts = phrasings.sentences_of("stack", top, base, split)
                reads = probe.read(features, state, texts)  # every sentence of this pair at once, on the same scene
                for text, read in zip(texts, reads, strict=True):
                    got = (nearest(read[:2]), nearest(read[2:]))
                    verdict = "right" if got == (top, base) else "swapped" if got == (base, top) else "other"
                    tally[split]["sentences"] += 1
                    tally[split][verdict] += 1
                    if split == "heldout":
                        by_core[probe.core_of_text(text)].append(verdict)
                        by_text[text].append(verdict)
    probe.close()
    rate = lambda verdicts, v: round(float(np.mean([x == v for x in verdicts])), 3)  # noqa: E731
    report = {"checkpoint": args.checkpoint, "scenes": args.scenes,
              "splits": {s: {"sentence-scenes": t["sentences"], **{v: round(t[v] / t["sentences"], 3)
                                                                   for v in ("right", "swapped", "other")}}
                         for s, t in tally.items()},
              "heldout_by_core": {c: {v: rate(x, v) for v in ("right", "swapped")} for c, x in sorted(by_core.items())},
              "heldout_most_swapped": sorted(((rate(x, "swapped"), t) for t, x in by_text.items()), reverse=True)[:15]}
    for split, r in report["splits"].items():
        print(f"{split}: {r['sentence-scenes']} sentence-scenes: read right {r['right']:.1%}, swapped {r['swapped']:.1%}, "
              f"other {r['other']:.1%}")
    print("held-out, by core (right / swapped):")
    for c, r in sorted(report["heldout_by_core"].items(), key=lambda kv: kv[1]["right"]):
        print(f"  {r['right']:.0%} / {r['swapped']:.0%}  {c!r}")
    print("held-out sentences read swapped most often:")
    for r, t in report["heldout_most_swapped"]:
        print(f"  {r:.0%}  {t!r}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
