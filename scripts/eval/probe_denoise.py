#!/usr/bin/env python3
"""Does suppressing sensor noise before the policy undo its collapse under noise? (issue #28: the shipped policy,
trained on clean renders, falls from ~21 to ~2 of 24 episodes with Gaussian pixel noise of std 4 in 0-255 units.)

Filters (``nanovla_ros.model.photometric.FrameDenoise``) side by side on the same seeds, closed loop, training
split, through `nanovla evaluate`'s path (ONNX Runtime int8): ``none`` (as deployed), ``gaussian:SIGMA`` (pixels of
a 224 frame), ``median``. Conditions: nominal, the robustness suite's noise strengths, and the families a blur
could hurt (blur, JPEG).

    python scripts/eval/probe_denoise.py [--checkpoint CKPT] [--episodes 6] --table-dir CACHE --out OUT.json
"""
from __future__ import annotations

import argparse

from probe_frame_gain import KINDS, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="nanovla_ros/checkpoints/nanovla_s_workcell.safetensors")
    parser.add_argument("--episodes", type=int, default=6, help="per task and condition")
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--modes", nargs="+", default=["none", "gaussian:0.7", "median"])
    parser.add_argument("--conditions", nargs="+", default=["", "noise=4", "noise=8", "blur_px=1", "jpeg_quality=30"])
    parser.add_argument("--table-dir", default="data/tables")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    from nanovla_ros.evaluation.closed_loop import evaluate
    from nanovla_ros.model.photometric import FrameDenoise

    results = []  # (mode, condition, kind, seed, success)
    for mode in args.modes:
        name, _, sigma = mode.partition(":")
        denoise = None if name == "none" else FrameDenoise(name, float(sigma or 0.7))
        for r in evaluate(args.checkpoint, list(KINDS), ["train"], args.episodes, execute_steps=20,
                          workers=args.workers, table_dir=args.table_dir, first_seed=args.first_seed,
                          perturb=list(args.conditions), backend="onnxruntime", precision="int8", denoise=denoise):
            results.append((mode, r.perturbation, r.kind, r.seed, bool(r.success)))
    report(results, args.modes, args.episodes, args.out, {"checkpoint": args.checkpoint})

if __name__ == "__main__":
    main()
