#!/usr/bin/env python3
"""Misread or misacted? For each episode of closed-loop evaluation results (`nanovla evaluate --out`), the checkpoint's
task head (``NanoVLA.predict_task_xy``) is asked about the episode's own first observation and instruction: is the
cube it names the right one, and how far off is the goal it reads (cm)? Then success is tabulated against the reading:
if episodes read right fail about as often as the others, the failures are in the actions, not in the reading
(issue #27: stacking said in held-out phrasing families is read right about 80 % of the time in probe scenes, yet
succeeds 44 % of the time).

The scene of each episode is rebuilt as the harness builds it (``sample_layout`` and ``sample_task`` from the
episode's seed, nominal workcell, arm at home); the instruction is the one the episode recorded. A goal is read
right when it is within --goal-cm of the truth (the cube to stack on, the square, the point a push should end at).

    python docs/experiments/probes/probe_read_episodes.py RESULTS.json [...] --kinds stack push --table-dir CACHE \
        [--checkpoint CKPT] [--goal-cm 4]
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from task_head_probe import TaskHeadProbe

    from nanovla_ros.sim.tasks import sample_layout, sample_task, task_positions

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+")
    parser.add_argument("--checkpoint", default="nanovla_ros/checkpoints/nanovla_s_workcell.safetensors")
    parser.add_argument("--kinds", nargs="+", default=["stack", "push"])
    parser.add_argument("--goal-cm", type=float, default=4.0)
    parser.add_argument("--table-dir", default="data/tables")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    probe = TaskHeadProbe(args.checkpoint, args.table_dir)
    rows = []
    try:
        for path in args.results:
            for ep in json.loads(Path(path).read_text())["episodes"]:
                if ep["kind"] not in args.kinds or ep.get("perturbation"):
                    continue
                rng = np.random.default_rng(ep["seed"])
                layout = sample_layout(rng)
                task = sample_task(rng, ep["kind"], ep["split"])
                probe.workcell.place(layout.cubes, layout.squares)
                start = {c: probe.workcell.cube_position(c) for c in layout.cubes}
                truth = task_positions(task, probe.workcell, start)
                features, state = probe.observe()
                read = probe.read(features, state, [ep["instruction"]])[0]
                nearest = min(layout.cubes, key=lambda c: np.linalg.norm(read[:2] - probe.workcell.cube_position(c)[:2]))
                goal_cm = float(np.linalg.norm(read[2:] - truth[2:]) * 100)
                rows.append({"file": Path(path).name, "kind": ep["kind"], "split": ep["split"], "seed": ep["seed"],
                             "instruction": ep["instruction"], "success": bool(ep["success"]),
                             "stage": ep["outcome"]["stage"] if ep.get("outcome") else "",
                             "cube_right": nearest == task.cube, "goal_cm": round(goal_cm, 1),
                             "read_right": nearest == task.cube and goal_cm <= args.goal_cm})
    finally:
        probe.close()
    print(f"{args.checkpoint}; read right = the named cube right and the goal within {args.goal_cm:g} cm")
    print("kind       split    read right: episodes, success | read wrong: episodes, success | goal error cm (median)")
    summary = {}
    for (kind, split), group in sorted(_groups(rows).items()):
        right = [r for r in group if r["read_right"]]
        wrong = [r for r in group if not r["read_right"]]
        rate = lambda g: float(np.mean([r["success"] for r in g])) if g else float("nan")  # noqa: E731
        summary[f"{kind}/{split}"] = {"episodes": len(group), "read_right": len(right), "success_read_right": rate(right),
                                      "read_wrong": len(wrong), "success_read_wrong": rate(wrong),
                                      "wrong_cube": sum(not r["cube_right"] for r in group),
                                      "median_goal_cm": float(np.median([r["goal_cm"] for r in group])),
                                      "failed_read_right_stages": dict(collections.Counter(
                                          r["stage"] for r in right if not r["success"]))}
        s = summary[f"{kind}/{split}"]
        print(f"{kind:10s} {split:8s} {len(right):4d}, {s['success_read_right']:6.1%}         | {len(wrong):4d}, "
              f"{s['success_read_wrong']:6.1%}         | {s['median_goal_cm']:.1f}  (wrong cube: {s['wrong_cube']})")
    if args.out:
        Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "goal_cm": args.goal_cm,
                                              "summary": summary, "episodes": rows}, indent=1))


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["kind"], r["split"])].append(r)
    return groups


if __name__ == "__main__":
    main()
