"""The robustness suite: one checkpoint, closed loop, in the training workcell and in perturbed ones (no ROS).

``nanovla evaluate CKPT --suite robustness`` runs every family of ``nanovla_ros.sim.perturbation.SUITE`` (or those
named) at each of its strengths on the same seeds and tasks as the nominal run, and writes the report
(``robustness.json``), a Markdown table (``robustness.md``) and a plot (``robustness.png``: success against
strength, one panel per family, with the nominal rate and 90 % of it).
"""
from __future__ import annotations

import json
from pathlib import Path

from nanovla_ros.evaluation.closed_loop import EpisodeResult, evaluate, wilson_interval
from nanovla_ros.sim.perturbation import SUITE, plausible_strengths

TASKS = ("touch", "push", "pick_place", "stack")
RELATIVE_GOAL = 0.9  # a plausible perturbation should keep this share of the nominal success


def conditions(families: list[str] | None = None, strengths: str = "all") -> list[str]:
    """"" (nominal) then "FAMILY=STRENGTH" for each family and strength; ``strengths``: "all" or "plausible"."""
    out = [""]
    for family in families or list(SUITE):
        chosen = plausible_strengths(family) if strengths == "plausible" else SUITE[family][0]
        out += [f"{family}={s:g}" for s in chosen]
    return out


def report(results: list[EpisodeResult], tasks: tuple[str, ...] = TASKS) -> dict:
    """Success per condition (and per task) from ``evaluate`` results over several perturbations."""
    rows = []
    for condition in dict.fromkeys(r.perturbation for r in results):
        group = [r for r in results if r.perturbation == condition]
        wins = sum(r.success for r in group)
        family, _, strength = condition.partition("=")
        rows.append({"condition": condition or "none", "family": family or "none",
                     "strength": float(strength) if strength else None, "successes": wins, "episodes": len(group),
                     "ci95": list(wilson_interval(wins, len(group))),
                     "plausible": not condition or float(strength) in plausible_strengths(family),
                     "per_task": {k: sum(r.success for r in group if r.kind == k) for k in tasks}})
    nominal = rows[0]["successes"] / max(1, rows[0]["episodes"])
    for row in rows:
        row["relative"] = row["successes"] / row["episodes"] / nominal if nominal else None
    return {"nominal_rate": nominal, "relative_goal": RELATIVE_GOAL, "rows": rows}


def markdown(summary: dict) -> str:
    lines = ["| condition | success | of nominal | " + " | ".join(TASKS) + " |",
             "|---|---|---|" + "---|" * len(TASKS)]
    for row in summary["rows"]:
        relative = "" if row["relative"] is None else f"{row['relative']:.0%}"
        mark = "" if row["condition"] == "none" or not row["plausible"] else (
            " ok" if (row["relative"] or 0) >= summary["relative_goal"] else " **below**")
        name = row["condition"] + ("" if row["plausible"] else " (beyond)")
        lines.append(f"| {name} | {row['successes']} / {row['episodes']} | {relative}{mark} | "
                     + " | ".join(str(row["per_task"][k]) for k in TASKS) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    nominal = summary["nominal_rate"]
    families = list(dict.fromkeys(r["family"] for r in rows[1:]))
    columns = min(6, max(1, len(families)))
    lines = (len(families) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(2.6 * columns, 2.3 * lines), sharey=True, squeeze=False)
    for ax in axes.flat[len(families):]:
        ax.axis("off")
    for ax, family in zip(axes.flat, families, strict=False):
        points = sorted((r["strength"], r["successes"] / r["episodes"], r["plausible"])
                        for r in rows if r["family"] == family)
        ax.plot([p[0] for p in points], [p[1] for p in points], "-", color="tab:blue")
        for strength, rate, plausible in points:
            ax.plot(strength, rate, "o" if plausible else "x", color="tab:blue")
        ax.axhline(nominal, color="grey", linestyle="--", linewidth=1)
        ax.axhline(summary["relative_goal"] * nominal, color="grey", linestyle=":", linewidth=1)
        ax.set_title(family, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
    fig.suptitle("success by perturbation (o plausible, x beyond; dashed nominal, dotted 90 % of it)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_suite(checkpoint: str, out_dir: str, families: list[str] | None = None, strengths: str = "all",
              episodes: int = 6, split: str = "train", **evaluate_kwargs) -> dict:
    """Evaluate ``checkpoint`` in every condition (``episodes`` per task each, seeds from ``first_seed``) in one
    worker pool; write robustness.json / .md / .png into ``out_dir``; return the summary."""
    results = evaluate(checkpoint, list(TASKS), [split], episodes, perturb=conditions(families, strengths),
                       **evaluate_kwargs)
    summary = report(results) | {"checkpoint": checkpoint, "split": split, "episodes_per_task": episodes,
                                 "backend": evaluate_kwargs.get("backend", "torch"),
                                 "precision": evaluate_kwargs.get("precision", "fp32"),
                                 "frame_gain": getattr(evaluate_kwargs.get("frame_gain"), "mode", "off"),
                                 "denoise": getattr(evaluate_kwargs.get("denoise"), "mode", "off"),
                                 "view_warp": getattr(evaluate_kwargs.get("view_warp"), "mode", "off"),
                                 "ground": bool(evaluate_kwargs.get("ground", False))}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(summary, indent=1))
    (out / "robustness.md").write_text(markdown(summary))
    plot(summary, out / "robustness.png")
    return summary
