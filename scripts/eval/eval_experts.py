#!/usr/bin/env python3
"""Scripted-expert success per task over N seeds, sim speed, and one picture per task.

    .venv/bin/python scripts/eval/eval_experts.py [--seeds 50] [--split train] [--out out/workcell]

Prints a markdown table (successes / episodes with a 95 % Wilson interval), control steps/s without
rendering, rendered frames/s at 224x224, and what holding still scores (it must be about 0 %).
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from nanovla_ros.sim.experts import run_expert_episode
from nanovla_ros.sim.tasks import KINDS, SuccessMonitor, sample_layout, sample_task
from nanovla_ros.sim.workcell import Workcell


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--split", default="train", choices=["train", "heldout"])
    parser.add_argument("--out", default="out/workcell")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workcell = Workcell()
    rows, still = [], {}
    steps_total, sim_time = 0, 0.0
    for kind in KINDS:
        successes, still_successes = 0, 0
        for seed in tqdm(range(args.seeds), desc=kind, unit="episode"):
            rng = np.random.default_rng(seed)
            layout, task = sample_layout(rng), sample_task(rng, kind, args.split)
            workcell.place(layout.cubes, layout.squares)
            if seed == 0:
                before = workcell.render("front", 320)
            start = time.perf_counter()
            ok, steps, _ = run_expert_episode(workcell, task)
            sim_time += time.perf_counter() - start
            steps_total += steps
            successes += ok
            if seed == 0:
                after = workcell.render("front", 320)
                picture = np.concatenate([before, after], axis=1)
                cv2.putText(picture, f"{task.instruction} -> {'success' if ok else 'failure'}", (6, 18),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
                cv2.imwrite(str(out / f"{kind}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
            # Holding still for the same number of steps must not pass the check.
            workcell.place(layout.cubes, layout.squares)
            monitor = SuccessMonitor(task, workcell)
            for _ in range(steps):
                workcell.step(workcell.joint_positions)
                monitor.update()
            still_successes += monitor.success()
        rows.append((kind, successes, args.seeds))
        still[kind] = still_successes
    start = time.perf_counter()
    frames = 60
    for _ in range(frames):
        workcell.render("front", 224)
    fps = frames / (time.perf_counter() - start)
    print(f"# Scripted experts, {args.split} split, {args.seeds} seeds per task\n")
    print("| task | expert successes | rate | 95 % interval | holding still |")
    print("|---|---|---|---|---|")
    for kind, s, n in rows:
        low, high = wilson(s, n)
        print(f"| {kind} | {s} / {n} | {s / n:.0%} | {low:.0%} - {high:.0%} | {still[kind]} / {n} |")
    print(f"\nsimulation (experts' IK included): {steps_total / sim_time:.0f} control steps/s at 30 Hz "
          f"({steps_total / sim_time / 30:.1f}x real time); rendering: {fps:.1f} frames/s at 224x224 (front camera)")
    print(f"pictures (first seed of each task, before | after): {out}/<task>.png")


if __name__ == "__main__":
    main()
