#!/usr/bin/env python3
"""Where do a checkpoint's instruction tokens put the phrasing bank's sentences? (no simulator, seconds on a CPU)

For every task (kind, cube, target) the model's *task token* is the mean of the instruction tokens of the task's
training templates (``nanovla_ros.tasks``). Per split of the bank: "right", the share of sentences whose token lies
nearest their own task's token among all tasks'; "off", the median distance to their task's token over that
token's distance to the nearest other task's (``nanovla_ros.training.alignment.token_scores``). For the checkpoint
as it is and refitted by ``nanovla align`` at each ``--ridge``, with the cross-validated scores over training
families that ``nanovla align`` chooses the ridge by (``cross_validate``: folds of training families left out of the
fit). The held-out column is for reading, never for choosing.

    python scripts/eval/probe_alignment.py nanovla_ros/checkpoints/nanovla_s_workcell.safetensors
"""
from __future__ import annotations

import argparse

from nanovla_ros import phrasings
from nanovla_ros.language.encoders import encoder_id
from nanovla_ros.model.checkpoint import load_checkpoint
from nanovla_ros.model.feature_cache import read_instruction_table
from nanovla_ros.training.alignment import RIDGES, align_phrasings, cross_validate, token_scores
from nanovla_ros.training.pipeline import BACKBONE_OF_VARIANT


def cell(scores: dict[str, float]) -> str:
    return f"{100 * scores['right']:.1f} % / {scores['off']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--table-dir", default="data/tables")
    parser.add_argument("--ridge", type=float, nargs="*", default=list(RIDGES))
    parser.add_argument("--variant", choices=("s", "l"), help="align into a model reading this variant's encoder "
                        "(l: Gemma-3-270M); default: the checkpoint's own")
    args = parser.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    texts, vectors = read_instruction_table(args.table_dir, model.config.language_encoder_id)
    table = dict(zip(texts, vectors, strict=True))
    train, held = phrasings.bank("train"), phrasings.bank("heldout")
    reading = None
    if args.variant:
        other = encoder_id(BACKBONE_OF_VARIANT[args.variant])
        if other != model.config.language_encoder_id:
            reading = (other, dict(zip(*read_instruction_table(args.table_dir, other), strict=True)))
    scored = reading[1] if reading else table
    cv = cross_validate(model, table, args.ridge, reading=reading)
    print("right / off: sentences whose token is nearest their task's; median distance to it over the nearest "
          "other task's")
    print("| model | training families (fitted) | training families left out (3 folds of cores) | held-out families |")
    print("|---|---|---|---|")
    print(f"| as it is | {cell(token_scores(model, table, train))} | | {cell(token_scores(model, table, held))} |")
    for ridge in args.ridge:
        aligned = align_phrasings(model, table, ridge, reading=reading)
        print(f"| aligned, ridge {ridge:g} | {cell(token_scores(aligned, scored, train))} | {cell(cv[ridge])} | "
              f"{cell(token_scores(aligned, scored, held))} |")


if __name__ == "__main__":
    main()
