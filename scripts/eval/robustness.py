#!/usr/bin/env python3
"""The robustness suite: one checkpoint, closed loop, in the training workcell and in perturbed ones.

    python scripts/eval/robustness.py CKPT [--episodes 6] [--split train] [--families light camera_shift_cm ...]
        [--strengths all|plausible] [--workers 2] [--device cpu] [--out out/robustness]

For every family of ``nanovla_ros.sim.perturbation.SUITE`` (or those given) and each of its strengths, the same
seeds (1000+) and tasks as the nominal run: prints success per family and strength beside the nominal one, and
writes ``robustness.json`` and ``robustness.png`` (success against strength, one panel per family) into --out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nanovla_ros.evaluation.closed_loop import evaluate
from nanovla_ros.model.checkpoint import checkpoint_execute_steps
from nanovla_ros.sim.perturbation import SUITE

TASKS = ("touch", "push", "pick_place", "stack")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=6, help="per task and condition")
    parser.add_argument("--split", default="train")
    parser.add_argument("--families", nargs="+", default=list(SUITE), choices=list(SUITE))
    parser.add_argument("--strengths", choices=["all", "plausible"], default="all",
                        help="plausible: the strengths a real workcell plausibly differs by (all but the last)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--table-dir", default=None)
    parser.add_argument("--out", default="out/robustness")
    args = parser.parse_args()

    h = checkpoint_execute_steps(args.checkpoint)
    conditions = [""] + [f"{family}={s:g}" for family in args.families
                         for s in (SUITE[family][0][:-1] if args.strengths == "plausible" else SUITE[family][0])]
    rows = []
    for condition in conditions:
        results = evaluate(args.checkpoint, list(TASKS), [args.split], args.episodes, h, args.workers, args.device,
                           args.table_dir, progress=False, perturb=condition)
        per_task = {k: sum(r.success for r in results if r.kind == k) for k in TASKS}
        rows.append({"condition": condition or "none", "successes": sum(per_task.values()), "episodes": len(results),
                     "per_task": per_task})
        print(f"[robustness] {rows[-1]['condition']:22s} {rows[-1]['successes']:3d} / {len(results)}  "
              + "  ".join(f"{k} {v}" for k, v in per_task.items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps({"checkpoint": args.checkpoint, "split": args.split,
                                                     "episodes_per_task": args.episodes, "rows": rows}, indent=1))
    plot(rows, out / "robustness.png")
    print(f"[robustness] {out / 'robustness.json'}, {out / 'robustness.png'}")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nominal = rows[0]["successes"] / rows[0]["episodes"]
    families = sorted({r["condition"].split("=")[0] for r in rows[1:]})
    fig, axes = plt.subplots(1, max(1, len(families)), figsize=(3.2 * max(1, len(families)), 3), sharey=True)
    axes = axes if len(families) > 1 else [axes]
    for ax, family in zip(axes, families, strict=True):
        points = [(float(r["condition"].split("=")[1]), r["successes"] / r["episodes"]) for r in rows[1:]
                  if r["condition"].split("=")[0] == family]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="perturbed")
        ax.axhline(nominal, color="grey", linestyle="--", label="nominal")
        ax.axhline(0.9 * nominal, color="grey", linestyle=":", label="90 % of nominal")
        ax.set_title(family)
        ax.set_ylim(0, 1)
        ax.set_xlabel("strength")
    axes[0].set_ylabel("success")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
