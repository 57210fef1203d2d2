#!/usr/bin/env python3
"""Does normalising each frame's brightness (and colour) to the training workcell's undo lighting and exposure
changes? (issue #28: the shipped policy collapses under light x 0.6, colour temperature, exposure.)

A camera's auto-exposure and auto-white-balance, done in software before the policy: the front frame's mean
(per channel, or its luminance) is compared with a reference measured on nominal workcell scenes (other seeds
than the test's), and the gains that bring it there (clipped to 1/3-3) are applied to every camera's frame (one
light falls on both). Variants side by side on the same seeds, closed loop, training split: ``none`` (as deployed),
``luma`` (one gain for all channels), ``rgb`` (a gain per channel). Conditions: the nominal workcell and the
photometric families of the robustness suite at their plausible strengths.

    python scripts/eval/probe_frame_gain.py [--checkpoint CKPT] [--episodes 6] --table-dir CACHE --out OUT.json
"""
from __future__ import annotations

import argparse
import json

import numpy as np

CONDITIONS = ("", "light=0.5", "light=0.6", "light=1.4", "light=1.6", "light_colour_k=4000", "light_colour_k=9000",
              "exposure=0.7", "exposure=1.3", "table=0.8")
KINDS = ("touch", "push", "pick_place", "stack")


def reference_rgb(scenes: int = 24, first_seed: int = 90000) -> list[float]:
    """The front camera's mean colour over nominal workcell scenes, the arm at home."""
    from nanovla_ros.sim.tasks import sample_layout
    from nanovla_ros.sim.workcell import Workcell

    workcell, means = Workcell(), []
    for seed in range(first_seed, first_seed + scenes):
        layout = sample_layout(np.random.default_rng(seed))
        workcell.place(layout.cubes, layout.squares)
        means.append(workcell.render("front").reshape(-1, 3).mean(0))
    workcell.close()
    return np.mean(means, 0).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="nanovla_ros/checkpoints/nanovla_s_workcell.safetensors")
    parser.add_argument("--episodes", type=int, default=6, help="per task and condition")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--modes", nargs="+", default=["none", "luma", "rgb"])
    parser.add_argument("--table-dir", default="data/tables")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    reference = reference_rgb()
    print(f"reference front-camera mean (RGB, nominal scenes): {np.round(reference, 1).tolist()}", flush=True)
    from nanovla_ros.evaluation.closed_loop import evaluate
    from nanovla_ros.model.photometric import FrameGain

    results = []  # (mode, condition, kind, seed, success): each mode through nanovla evaluate --frame-gain's path
    for mode in args.modes:
        gain = None if mode == "none" else FrameGain(mode, tuple(reference))
        for r in evaluate(args.checkpoint, list(KINDS), ["train"], args.episodes, execute_steps=20,
                          workers=args.workers, table_dir=args.table_dir, first_seed=args.first_seed,
                          perturb=list(CONDITIONS), backend="onnxruntime", precision="int8", frame_gain=gain):
            results.append((mode, r.perturbation, r.kind, r.seed, bool(r.success)))
    report(results, args.modes, args.episodes, args.out, {"checkpoint": args.checkpoint, "reference_rgb": reference})


def report(results: list[tuple], modes: list[str], episodes: int, out: str, header: dict) -> dict:
    """Prints successes per condition and mode (a markdown table; perturbed conditions summed) and writes them with
    every episode to ``out`` (JSON, beside ``header``). ``results``: (mode, condition, kind, seed, success)."""
    table = {}
    for mode, condition, kind, _, ok in results:
        cell = table.setdefault(condition or "none", {}).setdefault(mode, {k: 0 for k in KINDS})
        cell[kind] += ok
    n = len(KINDS) * episodes
    print(f"\n| condition | {' | '.join(modes)} |\n|---|{'---|' * len(modes)}")
    for condition, row in table.items():
        print(f"| {condition} | " + " | ".join(f"{sum(row[m].values())} / {n}" for m in modes) + " |")
    totals = {m: sum(sum(row[m].values()) for c, row in table.items() if c != "none") for m in modes}
    print(f"perturbed conditions together: {totals} of {n * (len(table) - ('none' in table))}")
    if out:
        with open(out, "w") as f:
            fields = ("mode", "condition", "kind", "seed", "success")
            json.dump({**header, "episodes_per_task": episodes, "table": table,
                       "episodes": [dict(zip(fields, r, strict=True)) for r in results]}, f, indent=1)
    return table

if __name__ == "__main__":
    main()
