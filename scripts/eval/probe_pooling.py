#!/usr/bin/env python3
"""Which pooling of which encoder layer tells the phrasing bank's tasks apart best? (CPU, no simulator)

For each pooling of the frozen encoders' hidden states (mean over the real tokens of a layer, Gemma's without its
<bos>; the last token; the mean over all layers), the shipped NanoVLA-S is aligned into those vectors as
`nanovla align --variant l` aligns it into Gemma's (`nanovla_ros.training.alignment`: the instruction projection
refitted by ridge so that every training-family sentence lands on its task's token), and scored by
`token_scores`: "right", the share of sentences whose token lies nearest their own task's. The ridge and the
pooling are chosen on training-family sentences left out of the fit the way the held-out split is made (cores,
styles and nouns of the training families left out together: `cross_validate(by="rules")`); the held-out
families' column is read once, for the report, never for choosing.

    python scripts/eval/probe_pooling.py [--encoders small large] [--out out/probe_pooling]

Encoding the bank (~9.6k sentences) takes ~1 min with MiniLM and ~10 min with Gemma-3-270M on 2 cores; the pooled
vectors are kept in --out and reused.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nanovla_ros import phrasings
from nanovla_ros.language.encoders import first_last_mean, load_encoder, masked_mean
from nanovla_ros.model.checkpoint import load_checkpoint
from nanovla_ros.model.feature_cache import read_instruction_table
from nanovla_ros.training.alignment import (
    RIDGES,
    align_phrasings,
    cross_validate,
    task_distances,
    token_scores,
    training_templates,
)

SHIPPED = "nanovla_ros/checkpoints/nanovla_s_workcell.safetensors"


def texts_to_pool() -> list[str]:
    from nanovla_ros.tasks import CUBES, TEMPLATES, targets_of

    templates = {t for kind in TEMPLATES for cube in CUBES for target in targets_of(kind, cube)
                 for t in training_templates(kind, cube, target)}
    return sorted(templates | {row[0] for row in phrasings.bank("train")} | {row[0] for row in phrasings.bank("heldout")})


@torch.inference_mode()
def poolings(backbone: str, texts: list[str], batch: int = 64) -> dict[str, np.ndarray]:
    """name -> (N, D) L2-normalised vectors of ``texts``, one per pooling of the encoder's hidden states."""
    encoder = load_encoder(backbone)
    model, tokenizer = encoder.model, encoder.tokenizer
    n_layers = model.config.num_hidden_layers
    layers = sorted({n_layers, (3 * n_layers) // 4, n_layers // 2, n_layers // 4})
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(texts), batch):
        tokens = tokenizer(texts[start:start + batch], padding=True, return_tensors="pt")
        hidden = model(**tokens, output_hidden_states=True).hidden_states  # n_layers + 1 of (B, T, D)
        mask = encoder.pooling_mask(tokens["attention_mask"])  # the deployed pooling's tokens
        means = {f"mean/layer{k}": masked_mean(hidden[k], mask) for k in layers}
        means["mean/all_layers"] = torch.stack([masked_mean(h, mask) for h in hidden[1:]]).mean(dim=0)
        last = tokens["attention_mask"].shape[1] - 1 - tokens["attention_mask"].flip(1).float().argmax(dim=1)
        means["last_token"] = hidden[n_layers][torch.arange(len(last)), last]
        # order-aware: the last layer's mean beside means weighted towards the sentence's start and its end (a
        # linear ramp over the pooled tokens), so that "the red one onto the blue one" and "the blue one onto the
        # red one" differ by more than the context mixed into each word; and the lexical first layer beside the last
        ramp = torch.cumsum(mask.float(), dim=1) * mask
        ramp = ramp / ramp.amax(dim=1, keepdim=True).clamp(min=1.0)
        top = hidden[n_layers]
        unit = lambda v: torch.nn.functional.normalize(v, dim=-1)  # noqa: E731
        means["order/mean+ramps"] = torch.cat([unit(masked_mean(top, mask)), unit(masked_mean(top, ramp)),
                                               unit(masked_mean(top, (1.0 - ramp) * mask))], dim=-1)
        means["order/layer1+last"] = first_last_mean(hidden, mask)  # the small encoder's pooling
        # the first position's last state (BERT's [CLS]; Gemma's <bos>, an attention sink) alone and beside those
        means["first_token"] = top[:, 0]
        means["order/layer1+last+first_token"] = torch.cat([means["order/layer1+last"], unit(top[:, 0])], dim=-1)
        for name, vectors in means.items():
            out.setdefault(name, []).append(torch.nn.functional.normalize(vectors, dim=-1).numpy())
        print(f"\r{backbone}: {min(start + batch, len(texts))} / {len(texts)}", end="", flush=True)
    print()
    return {name: np.concatenate(parts) for name, parts in out.items()}


def swapped_share(model, table: dict[str, np.ndarray], rows: list[tuple]) -> float:
    """Of stacking sentences in ``rows``: the share whose token lies nearest the task with cube and target swapped
    (the word order read wrongly)."""
    stack = [r for r in rows if r[1] == "stack"]
    tasks, _, distances = task_distances(model, table, stack)
    nearest = distances.argmin(axis=1)
    return float(np.mean([tasks[n] == ("stack", r[3], r[2]) for r, n in zip(stack, nearest, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", nargs="+", default=["small", "large"], choices=("small", "large"))
    parser.add_argument("--checkpoint", default=SHIPPED)
    parser.add_argument("--table-dir", default="data/tables")
    parser.add_argument("--out", default="out/probe_pooling")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, _ = load_checkpoint(args.checkpoint)
    own = dict(zip(*read_instruction_table(args.table_dir, model.config.language_encoder_id), strict=True))
    texts = texts_to_pool()
    train, held = phrasings.bank("train"), phrasings.bank("heldout")
    rows = []
    for backbone in args.encoders:
        path = out / f"{backbone}.npz"
        if not path.is_file():
            np.savez(path, texts=np.array(texts), **{k.replace("/", "__"): v for k, v in poolings(backbone, texts).items()})
        saved = np.load(path)
        names = [k for k in saved.files if k != "texts"]
        for name in names:
            reading = (f"{backbone}/{name}", dict(zip(saved["texts"].tolist(), saved[name], strict=True)))
            cv = cross_validate(model, own, list(RIDGES), reading=reading, by="rules")
            ridge = max(RIDGES, key=lambda r: (round(cv[r]["right"], 3), -cv[r]["off"]))
            by_cores = cross_validate(model, own, [ridge], reading=reading)[ridge]
            aligned = align_phrasings(model, own, ridge, reading=reading)
            held_scores = token_scores(aligned, reading[1], held)
            per_kind = {kind: token_scores(aligned, reading[1], [r for r in held if r[1] == kind])["right"]
                        for kind in ("touch", "pick_place", "push", "stack")}
            rows.append({"encoder": backbone, "pooling": name.replace("__", "/"), "ridge": ridge,
                         "cv_right": cv[ridge]["right"], "cv_off": cv[ridge]["off"],
                         "cv_cores_right": by_cores["right"],
                         "train_right": token_scores(aligned, reading[1], train)["right"],
                         "heldout_right": held_scores["right"], "heldout_off": held_scores["off"],
                         "heldout_right_by_kind": per_kind,
                         "heldout_stack_swapped": swapped_share(aligned, reading[1], held)})
            r = rows[-1]
            print(f"{backbone:5s} {r['pooling']:16s} ridge {ridge:<5g} CV (rules) right {100 * r['cv_right']:.1f} % off "
                  f"{r['cv_off']:.2f} (cores {100 * r['cv_cores_right']:.1f} %) | held-out right "
                  f"{100 * r['heldout_right']:.1f} % off {r['heldout_off']:.2f} "
                  + " ".join(f"{k} {100 * v:.0f}" for k, v in per_kind.items())
                  + f" (stack swapped {100 * r['heldout_stack_swapped']:.0f})", flush=True)
    (out / "pooling.json").write_text(json.dumps(rows, indent=1))
    print("| encoder | pooling | ridge (CV) | left out by rules: right / off | left out by cores: right | "
          "held-out families: right / off |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['encoder']} | {r['pooling']} | {r['ridge']:g} | {100 * r['cv_right']:.1f} % / {r['cv_off']:.2f} | "
              f"{100 * r['cv_cores_right']:.1f} % | "
              f"{100 * r['heldout_right']:.1f} % / {r['heldout_off']:.2f} |")


if __name__ == "__main__":
    main()
