#!/usr/bin/env python3
"""NanoVLA-R evaluation (issue #7): sweep tau for the Bayesian router and the naive one.

NanoVLA-S and NanoVLA-L were evaluated on the same scenes (seeds) with `nanovla evaluate`, so each test
episode has an outcome for both; a router's success at tau is the outcome of the model it picks per
episode, from the instruction alone. The router is trained on trial counts from other seeds
(training-split instructions only), so held-out instructions are never seen by it.

Active parameters per episode: the policy process (NanoVLA trainable + frozen image encoder) plus the
language encoder that produced its instruction vector; routed episodes also pay for the small encoder,
which the router reads (MiniLM, 22.7 M) even when large is chosen.

    python scripts/eval/eval_router.py --eval-dir out/eval --table-dir data/demos/cache --out-dir docs/router \
        --router-out nanovla_ros/checkpoints/router_workcell.safetensors

With ``--small S.json --large L.json`` (each one `nanovla evaluate ... --split train heldout` result, same seeds),
their training-split episodes are the trials and their held-out ones the test: written to --eval-dir as
s_router.json / s.json / l_router.json / l.json first.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nanovla_ros.model.feature_cache import read_instruction_table  # noqa: E402
from nanovla_ros.routing.classifier import NaiveRouter, train_router_from_evaluations  # noqa: E402

# Millions of parameters (docs/model.md): policy process + language encoder.
MINILM_M, GEMMA_M = 22.7, 268.0
PARAMS_M = {"small": 15.77 + MINILM_M, "large": 15.74 + GEMMA_M}


def outcomes(path: Path) -> dict[tuple, dict]:
    return {(e["kind"], e["split"], e["seed"]): e for e in json.loads(path.read_text())["episodes"]}


def split_evaluation(path: Path, eval_dir: Path, name: str) -> None:
    """``path``'s training-split episodes to ``{name}_router.json`` (trials), its held-out ones to ``{name}.json``."""
    result = json.loads(path.read_text())
    eval_dir.mkdir(parents=True, exist_ok=True)
    for split, suffix in (("train", "_router"), ("heldout", "")):
        episodes = [e for e in result["episodes"] if e["split"] == split]
        if not episodes:
            raise SystemExit(f"{path} has no {split} episodes: evaluate with --split train heldout")
        (eval_dir / f"{name}{suffix}.json").write_text(json.dumps({**result, "episodes": episodes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-dir", default="out/eval")
    parser.add_argument("--table-dir", default="data/demos/cache")
    parser.add_argument("--out-dir", default="out/router", help="where the plot and the sweep go (the docs' plots "
                        "were copied from there into docs/router/; a default there overwrote them)")
    parser.add_argument("--router-out", default="out/router.safetensors")
    parser.add_argument("--small", default="", help="S's two-split evaluation (see above)")
    parser.add_argument("--large", default="", help="L's two-split evaluation (see above)")
    parser.add_argument("--title", default="test scenes, train + held-out instructions",
                        help="what the test episodes are, for the plot's title")
    args = parser.parse_args()
    eval_dir, out = Path(args.eval_dir), Path(args.out_dir)
    if bool(args.small) != bool(args.large):
        parser.error("--small and --large go together")
    if args.small:
        split_evaluation(Path(args.small), eval_dir, "s")
        split_evaluation(Path(args.large), eval_dir, "l")
    out.mkdir(parents=True, exist_ok=True)
    router = train_router_from_evaluations({"small": eval_dir / "s_router.json", "large": eval_dir / "l_router.json"},
                                           args.table_dir)
    router.save(args.router_out)
    texts, table = read_instruction_table(args.table_dir, router.encoder_id)
    vectors = dict(zip(texts, table, strict=True))
    naive = NaiveRouter(vectors, router.counts)
    small, large = outcomes(eval_dir / "s.json"), outcomes(eval_dir / "l.json")
    keys = sorted(set(small) & set(large))
    p_large = np.array([router.win_probabilities(vectors[small[k]["instruction"]])[1] for k in keys])
    rate_small = np.array([naive.success_rates(vectors[small[k]["instruction"]])[0] for k in keys])
    ok_s = np.array([small[k]["success"] for k in keys], float)
    ok_l = np.array([large[k]["success"] for k in keys], float)
    heldout = np.array([k[1] == "heldout" for k in keys])
    taus = np.round(np.linspace(0.0, 1.0, 21), 3)
    rows = []
    for tau in taus:
        for name, use_large in (("bayes", p_large > tau), ("naive", rate_small < tau)):
            success = np.where(use_large, ok_l, ok_s)
            params = np.where(use_large, PARAMS_M["large"] + MINILM_M, PARAMS_M["small"])
            rows.append({"router": name, "tau": float(tau), "success": float(success.mean()),
                         "success_heldout": float(success[heldout].mean()) if heldout.any() else None,
                         "large_fraction": float(use_large.mean()), "params_m": float(params.mean())})
    best_single = max(ok_s.mean(), ok_l.mean())
    summary = {"episodes": len(keys), "s_only": ok_s.mean(), "l_only": ok_l.mean(), "oracle": np.maximum(ok_s, ok_l).mean(),
               "params_m": PARAMS_M, "router_instructions": len(router.counts), "sweep": rows}
    (out / "router_sweep.json").write_text(json.dumps(summary, indent=1))
    print(f"{len(keys)} test episodes (both models on the same scenes); router trained on {len(router.counts)} "
          f"instructions ({router.encoder_id})")
    print(f"S only: {ok_s.mean():.1%} at {PARAMS_M['small']:.1f} M; L only: {ok_l.mean():.1%} at {PARAMS_M['large']:.1f} M; "
          f"per-episode oracle: {summary['oracle']:.1%}")
    print("\n| router | tau | success | held-out success | large chosen | avg active params (M) | % of L |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["tau"] in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
            held = f"{r['success_heldout']:.1%}" if r["success_heldout"] is not None else "-"
            print(f"| {r['router']} | {r['tau']:.1f} | {r['success']:.1%} | {held} | {r['large_fraction']:.0%} | "
                  f"{r['params_m']:.1f} | {r['params_m'] / PARAMS_M['large']:.0%} |")
    goal = [r for r in rows if r["router"] == "bayes" and r["success"] >= best_single - 0.01
            and r["params_m"] <= 0.6 * PARAMS_M["large"]]
    print(f"\ngoal (Bayes within 1 point of the better of S and L at <= 60 % of L's params): "
          f"{'met at tau = ' + ', '.join(str(r['tau']) for r in goal) if goal else 'not met'}")
    stakes = [r for r in rows if r["router"] == "bayes" and r["success"] >= best_single + 0.02
              and 0.1 <= r["large_fraction"] <= 0.6 and r["params_m"] <= 0.6 * PARAMS_M["large"]]
    print(f"goal with stakes (Bayes 2+ points above the better of S and L, 10-60 % routed to L, <= 60 % of L's "
          f"params): {'met at tau = ' + ', '.join(str(r['tau']) for r in stakes) if stakes else 'not met'}")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, marker in (("bayes", "o"), ("naive", "s")):
        rs = [r for r in rows if r["router"] == name]
        axes[0].plot([r["tau"] for r in rs], [r["success"] for r in rs], marker=marker, label=f"{name}: success")
        axes[0].plot([r["tau"] for r in rs], [r["large_fraction"] for r in rs], marker=marker, ls=":", alpha=0.6,
                     label=f"{name}: fraction routed to L")
        axes[1].plot([r["params_m"] for r in rs], [r["success"] for r in rs], marker=marker, label=name)
    for label, x, y in (("S only", PARAMS_M["small"], ok_s.mean()), ("L only", PARAMS_M["large"], ok_l.mean())):
        axes[1].scatter([x], [y], marker="*", s=120, zorder=3)
        axes[1].annotate(label, (x, y), textcoords="offset points", xytext=(5, -10))
    axes[0].set_xlabel("tau")
    axes[0].set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("average active parameters per episode (M)")
    axes[1].set_ylabel("success rate")
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"NanoVLA-R: routing between NanoVLA-S and NanoVLA-L ({args.title})")
    fig.tight_layout()
    fig.savefig(out / "router_sweep.png", dpi=120)
    print(f"plots and sweep in {out}")


if __name__ == "__main__":
    main()
