#!/usr/bin/env python3
"""Two models' `nanovla evaluate` results, paired by seed: totals per task and split, the episodes only each
succeeds in and a two-sided sign test (nanovla_ros/evaluation/compare.py).

    tar -xJf docs/experiments/runs/run29.tar.xz -C out/    # the archived per-episode results of a run
    python scripts/eval/compare_eval.py --a out/run29/s_f40.json out/run29/s_f40_6000.json \
        --b out/run29/s_shipped_1000.json out/run29/s_shipped_6000.json

Give each model's files in the same order (seed set by seed set): the i-th file of one pairs with the i-th of the
other.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nanovla_ros.evaluation.compare import compare, episode_outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", required=True, type=Path, help="results files of model A")
    parser.add_argument("--b", nargs="+", required=True, type=Path, help="results files of model B, same order")
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        parser.error(f"{len(args.a)} files for A and {len(args.b)} for B: give one of each per seed set")
    r = compare(*(episode_outcomes([json.loads(p.read_text()) for p in paths]) for paths in (args.a, args.b)))
    print("| task | split | A | B | episodes |\n|---|---|---|---|---|")
    for (kind, split), (sa, sb, n) in r.per_cell.items():
        print(f"| {kind} | {split} | {sa} | {sb} | {n} |")
    print(f"\nA {r.successes_a} / {r.episodes}, B {r.successes_b} / {r.episodes}; only A {r.only_a}, only B "
          f"{r.only_b}; two-sided sign test p = {r.p_value:.3f}")
    if r.unpaired:
        print(f"({r.unpaired} episodes only one side has were left out: other seeds or tasks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
