#!/usr/bin/env python3
"""Tables and plots of `nanovla evaluate` results (issue #6): success per task and split for NanoVLA-S and -L,
and the long-short chunking ablation (execute h of H_train = 100 vs fixed chunking trained with H = h).

    python scripts/eval/plot_eval.py --eval-dir out/eval --out-dir out/plots
Expects s.json, l.json (all tasks and splits), sweep_h<h>.json and fixed_H<h>.json (train split).

    python scripts/eval/plot_eval.py --outcomes "model A=A.json" "model B=B.json" --out-dir out/plots
plots how far the episodes of each results file got, per task (outcomes.png: the stages of
nanovla_ros/sim/outcome.py, which every evaluation records; older files
have none).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from nanovla_ros.evaluation.closed_loop import wilson_interval  # noqa: E402


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def pooled(report: dict, split: str | None = None) -> tuple[int, int, float]:
    rows = [r for r in report["summary"] if split is None or r["split"] == split]
    wins, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
    latency = [t for e in report["episodes"] for t in e["inference_ms"]]
    return wins, n, float(np.median(latency)) if latency else float("nan")


def table(reports: dict[str, dict]) -> str:
    lines = ["| model | task | split | success | 95% CI | episodes |", "| --- | --- | --- | --- | --- | --- |"]
    for name, report in reports.items():
        for r in sorted(report["summary"], key=lambda r: (r["split"] != "train", r["kind"])):
            lines.append(f"| {name} | {r['kind']} | {r['split']} | {r['rate']:.0%} | {r['ci95'][0]:.0%}-{r['ci95'][1]:.0%} "
                         f"| {r['episodes']} |")
        for split in ("train", "heldout"):
            wins, n, _ = pooled(report, split)
            if n:
                low, high = wilson_interval(wins, n)
                lines.append(f"| {name} | **mean** | {split} | **{wins / n:.0%}** | {low:.0%}-{high:.0%} | {n} |")
    return "\n".join(lines)


STAGES = {  # in the order an episode gets through them, with a colour each
    "success": "#2a9d5c", "lifted, not placed": "#8fd18f", "lifted, dropped": "#b6a0d8",
    "reached, not lifted": "#f2d06b",
    "pushed short or off line": "#a8c8f0", "grasp missed": "#f0a35e", "touched another cube": "#d9534f",
    "missed": "#9e9e9e"}


def plot_outcomes(reports: dict[str, dict], path: Path) -> None:
    """One horizontal bar per (task, results file): the share of its episodes ending in each stage."""
    bare = [name for name, rep in reports.items() if not any(e.get("outcome") for e in rep["episodes"])]
    if bare:  # evaluated before the breakdown existed (older result files): nothing to draw
        raise SystemExit(f"plot_eval: no outcomes recorded in {bare}: re-evaluate with `nanovla evaluate`")
    kinds = sorted({e["kind"] for rep in reports.values() for e in rep["episodes"]})
    rows = [(k, name) for k in kinds for name in reports]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    for y, (kind, name) in enumerate(rows):
        episodes = [e for e in reports[name]["episodes"] if e["kind"] == kind and e.get("outcome")]
        left = 0.0
        for stage, colour in STAGES.items():
            share = sum(e["outcome"]["stage"] == stage for e in episodes) / max(1, len(episodes))
            if share:
                ax.barh(y, share, left=left, color=colour, edgecolor="white",
                        label=stage if stage not in ax.get_legend_handles_labels()[1] else None)
                ax.text(left + share / 2, y, f"{round(share * len(episodes))}", ha="center", va="center", fontsize=7)
                left += share
    ax.set_yticks(range(len(rows)), [f"{kind} ({name}, {sum(e['kind'] == kind for e in reports[name]['episodes'])})"
                                     for kind, name in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of episodes, by how far they got (counts in the bars)")
    ax.legend(fontsize=7, ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-dir", default="out/eval")
    parser.add_argument("--out-dir", default="out/plots")
    parser.add_argument("--outcomes", nargs="+", metavar="NAME=JSON", help="results files to compare stage by stage")
    args = parser.parse_args()
    eval_dir, out = Path(args.eval_dir), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.outcomes:
        plot_outcomes({spec.split("=", 1)[0]: load(Path(spec.split("=", 1)[1])) for spec in args.outcomes},
                      out / "outcomes.png")
        print(f"plot: {out / 'outcomes.png'}")
        return
    reports = {name: r for name, r in (("NanoVLA-S", load(eval_dir / "s.json")), ("NanoVLA-L", load(eval_dir / "l.json"))) if r}
    if reports:
        print(table(reports))
        fig, ax = plt.subplots(figsize=(8, 3.6))
        kinds = sorted({r["kind"] for rep in reports.values() for r in rep["summary"]})
        groups = [(k, s) for s in ("train", "heldout") for k in kinds]
        width = 0.8 / len(reports)
        for i, (name, report) in enumerate(reports.items()):
            by = {(r["kind"], r["split"]): r for r in report["summary"]}
            rates = [by[g]["rate"] if g in by else np.nan for g in groups]
            err = np.array([[by[g]["rate"] - by[g]["ci95"][0], by[g]["ci95"][1] - by[g]["rate"]] if g in by else [0, 0]
                            for g in groups]).T
            ax.bar(np.arange(len(groups)) + i * width, rates, width, yerr=err, capsize=2, label=name)
        ax.set_xticks(np.arange(len(groups)) + width * (len(reports) - 1) / 2,
                      [f"{k}\n{s}" for k, s in groups], fontsize=8)
        ax.set_ylabel("success rate (95% CI)")
        ax.set_ylim(0, 1.05)
        ax.legend()
        ax.set_title("Closed-loop success in the workcell (in-process harness)")
        fig.tight_layout()
        fig.savefig(out / "success_by_task.png", dpi=120)
    sweep = {int(p.stem.removeprefix("sweep_h")): load(p) for p in eval_dir.glob("sweep_h*.json")}
    fixed = {int(p.stem.removeprefix("fixed_H")): load(p) for p in eval_dir.glob("fixed_H*.json")}
    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        print("\n| h | long-short (H=100, execute h) | 95% CI | fixed (trained H=h) | 95% CI | per-step latency ms (long-short) |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, runs, marker in (("long-short: H_train=100, execute h", sweep, "o"),
                                    ("fixed chunking: trained with H=h", fixed, "s")):
            if not runs:
                continue
            hs = sorted(runs)
            stats = [pooled(runs[h]) for h in hs]
            rates = np.array([w / n for w, n, _ in stats])
            ci = np.array([wilson_interval(w, n) for w, n, _ in stats])
            per_step = np.array([lat / h for (_, _, lat), h in zip(stats, hs, strict=True)])  # inference amortised over h steps
            axes[0].errorbar(hs, rates, yerr=[rates - ci[:, 0], ci[:, 1] - rates], marker=marker, capsize=3, label=label)
            axes[1].plot(per_step, rates, marker=marker, label=label)
            for h, r, p in zip(hs, rates, per_step, strict=True):
                axes[1].annotate(f"h={h}", (p, r), fontsize=7, textcoords="offset points", xytext=(3, 3))
        for h in sorted(sweep):
            w, n, lat = pooled(sweep[h])
            f = pooled(fixed[h]) if h in fixed else None
            lo, hi = wilson_interval(w, n)
            fixed_cells = f"{f[0] / f[1]:.0%} | {wilson_interval(f[0], f[1])[0]:.0%}-{wilson_interval(f[0], f[1])[1]:.0%}" if f else "- | -"
            print(f"| {h} | {w / n:.0%} | {lo:.0%}-{hi:.0%} | {fixed_cells} | {lat / h:.1f} |")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("h: actions executed per chunk")
        tasks = sorted({r["kind"] for run in sweep.values() for r in run["summary"]})
        axes[0].set_ylabel("success rate (95% CI)")
        axes[0].set_title(" + ".join(tasks), fontsize=8)
        axes[0].set_ylim(0, 1.05)
        axes[1].set_xscale("log")
        axes[1].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes[1].set_xlabel("policy latency per control step, ms (inference / h)")
        axes[1].set_ylim(0, 1.05)
        axes[0].legend(fontsize=7)
        fig.suptitle("Long-short chunking ablation (training-distribution episodes)")
        fig.tight_layout()
        fig.savefig(out / "chunking_ablation.png", dpi=120)
    print(f"\nplots in {out}")


if __name__ == "__main__":
    main()
