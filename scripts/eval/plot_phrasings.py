#!/usr/bin/env python3
"""Success per task and phrasing split, models side by side (issue #27's plot): one panel per way of saying the
tasks (the templates' training and held-out splits, the phrasing bank's training and held-out families), one bar
per task and model, 95 % Wilson intervals.

    python scripts/eval/plot_phrasings.py --results "run 30/templates=A.json" "run 30/bank=B.json" \
        "aligned/templates=C.json,D.json" "aligned/bank=E.json,F.json" --out docs/experiments/plots/phrasings.png

NAME/SAYING=FILE[,FILE...]: `nanovla evaluate` results of model NAME said with SAYING (templates or bank); files
of one model and saying are merged (e.g. one per split).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

from nanovla_ros.evaluation.closed_loop import wilson_interval
from nanovla_ros.tasks import KINDS

PANELS = (("templates", "train", "templates, training phrasings"), ("templates", "heldout", "templates, held-out"),
          ("bank", "train", "bank, training families"), ("bank", "heldout", "bank, held-out families"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", nargs="+", required=True, metavar="NAME/SAYING=FILE[,FILE]")
    parser.add_argument("--out", default="out/plots/phrasings.png")
    args = parser.parse_args()
    counts: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])  # model, saying, split, kind
    models: list[str] = []
    for item in args.results:
        label, _, files = item.partition("=")
        model, _, saying = label.rpartition("/")
        models += [model] if model not in models else []
        for path in files.split(","):
            for e in json.load(open(path))["episodes"]:
                cell = counts[(model, saying, e["split"], e["kind"])]
                cell[0] += int(e["success"])
                cell[1] += 1
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), sharey=True)
    width = 0.8 / len(models)
    for ax, (saying, split, title) in zip(axes, PANELS, strict=True):
        for m, model in enumerate(models):
            xs, rates, low, high = [], [], [], []
            for k, kind in enumerate(KINDS):
                s, n = counts.get((model, saying, split, kind), (0, 0))
                if not n:
                    continue
                lo, hi = wilson_interval(s, n)
                xs.append(k + (m - (len(models) - 1) / 2) * width)
                rates.append(100 * s / n)
                low.append(100 * s / n - 100 * lo)
                high.append(100 * hi - 100 * s / n)
            ax.bar(xs, rates, width, yerr=[low, high], capsize=2, label=model, color=f"C{m}")  # a model keeps its colour
        total = {model: [sum(counts.get((model, saying, split, k), (0, 0))[i] for k in KINDS) for i in (0, 1)]
                 for model in models}
        ax.set_title(title + "\n" + "\n".join(f"{m}: {s}/{n}" for m, (s, n) in total.items() if n), fontsize=9)
        ax.set_xticks(range(len(KINDS)), [k.replace("_", "-") for k in KINDS])
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("success (%)")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=f"C{m}", label=model) for m, model in enumerate(models)], fontsize=8,
               loc="lower center", ncol=len(models), frameon=False)  # a model missing from a panel keeps its entry
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    from pathlib import Path

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"[plot] {args.out}")


if __name__ == "__main__":
    main()
