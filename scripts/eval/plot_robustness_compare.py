"""Several checkpoints' robustness suites side by side: success per condition, one bar per checkpoint.

    python scripts/eval/plot_robustness_compare.py shipped=docs/experiments/runs/robustness_shipped.json \
        mixed=out/run33/dagger1.robustness.json --plausible --out docs/experiments/plots/run33_robustness.png

Each file is a ``nanovla evaluate --suite robustness`` result (``robustness.json``); conditions are those of the first
file (``--plausible``: only the strengths a real workcell plausibly differs by, and the nominal one), in its order.
Prints each checkpoint's total over the perturbed conditions.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(path: str) -> dict[str, dict]:
    return {row["condition"]: row for row in json.loads(Path(path).read_text())["rows"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", metavar="NAME=ROBUSTNESS_JSON")
    parser.add_argument("--plausible", action="store_true", help="only plausible strengths (and the nominal row)")
    parser.add_argument("--title", default="success per condition (of each condition's episodes)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    named = [(item.split("=", 1)[0], load(item.split("=", 1)[1])) for item in args.results]
    first = named[0][1]
    conditions = [c for c, row in first.items()
                  if c == "none" or not args.plausible or row.get("plausible", True)]
    conditions = [c for c in conditions if all(c in rows for _, rows in named)]
    width = 0.8 / len(named)
    x = np.arange(len(conditions))
    fig, ax = plt.subplots(figsize=(min(16.0, max(8.0, 0.3 * len(conditions) + 2)), 5.0))
    for i, (name, rows) in enumerate(named):
        rates = [rows[c]["successes"] / rows[c]["episodes"] for c in conditions]
        perturbed = [c for c in conditions if c != "none"]
        total = sum(rows[c]["successes"] for c in perturbed)
        episodes = sum(rows[c]["episodes"] for c in perturbed)
        label = f"{name}: nominal {rows['none']['successes']}/{rows['none']['episodes']}, perturbed {total}/{episodes}"
        print(label)
        ax.bar(x + (i - (len(named) - 1) / 2) * width, rates, width, label=label)
    ax.set_xticks(x, conditions, rotation=75, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title(args.title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.42), ncol=len(named))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
