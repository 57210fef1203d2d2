#!/usr/bin/env python3
"""Per split and task of a grounded evaluation (`nanovla evaluate --phrasings bank --ground --out R.json`): how many
episodes were grounded to their own task, to another one, or kept their own vector, and how many of each succeeded.
Separates what the task head read from what the decoder did.

    python scripts/eval/grounding_outcomes.py R.json [R2.json ...]
"""
from __future__ import annotations

import json
import sys
from collections import Counter

from nanovla_ros.phrasings import bank
from nanovla_ros.tasks import CUBES, TEMPLATES, say, targets_of

KINDS = ("touch", "pick_place", "push", "stack")


def task_of_sentence() -> dict[str, tuple[str, str, str]]:
    """(kind, cube, target) of every bank sentence the evaluation says and of every grounding candidate."""
    tasks = {text: (kind, cube, target) for split in ("train", "heldout")
             for text, kind, cube, target, _ in bank(split)}
    for kind in TEMPLATES:
        for cube in CUBES:
            for target in targets_of(kind, cube):
                tasks[say(TEMPLATES[kind][0][0], cube, target)] = (kind, cube, target)
    return tasks


def main() -> None:
    tasks = task_of_sentence()
    for path in sys.argv[1:]:
        counts: Counter = Counter()
        for e in json.load(open(path))["episodes"]:
            grounded = e.get("grounded_as") or ""
            own = tasks.get(" ".join(e["instruction"].split()))
            if own is None:
                raise SystemExit(f"{path}: {e['instruction']!r} is no bank sentence")
            how = "own vector" if not grounded else ("right" if tasks.get(grounded) == own else "wrong")
            counts[e["split"], e["kind"], how] += 1
            counts[e["split"], e["kind"], how, "success"] += bool(e["success"])
        print(f"{path}: episodes grounded right / wrong / kept their own vector (successes)")
        for split in ("train", "heldout"):
            for kind in KINDS:
                print(f"  {split:8s} {kind:10s} " + "  ".join(
                    f"{how} {counts[split, kind, how]} ({counts[split, kind, how, 'success']})"
                    for how in ("right", "wrong", "own vector")))


if __name__ == "__main__":
    main()
