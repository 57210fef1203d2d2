#!/usr/bin/env python3
"""A learned pooling of a frozen encoder's token states, trained on the phrasing bank's training families: does it
read held-out families better than the fixed poolings? (issue #27; CPU, no simulator)

The fixed poolings (`scripts/eval/probe_pooling.py`) average a layer's tokens; Gemma-3-270M's mean over all layers
reads 78.9 % of held-out-family sentences nearest their own task (MiniLM's first + last layers 93.9 %), which is
why NanoVLA-L reads the user worse than NanoVLA-S. Here a small head pools the token states instead: a softmax
mix of the encoder's layers, then attention pooling with K learned queries (each query's weights over the
sentence's real tokens), the K pooled vectors side by side. It is trained (AdamW) so that a linear map of the
pooled vector lands each training-family sentence and training template on its task's target: the instruction
token the shipped NanoVLA-S makes of its task's template vector, the target `nanovla align` fits to. Then the
same score as probe_pooling (`token_scores`): the shipped S aligned by ridge into the learned vectors, "right" =
the share of sentences whose token lies nearest their own task's.

K, the weight decay and the epochs are chosen by the rule folds (`fold_rule(by="rules")`: cores, styles and
nouns of the training families left out together, as the held-out split is made); the held-out families are read
once, for the report.

    python scripts/eval/probe_learned_pooling.py [--encoders small large] [--out out/probe_learned_pooling]

Token states are computed once (~1 min MiniLM, ~10 min Gemma-3-270M on 2 cores) and kept in --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_pooling import SHIPPED, swapped_share, texts_to_pool  # noqa: E402

from nanovla_ros import phrasings  # noqa: E402
from nanovla_ros.language.encoders import ENCODER_SPECS, HuggingFaceEncoder, load_encoder, prepare_gemma  # noqa: E402
from nanovla_ros.language.pooling import ALL_LAYERS, AttentionPooling, fit_pooling, save_pooling  # noqa: E402
from nanovla_ros.model.checkpoint import load_checkpoint  # noqa: E402
from nanovla_ros.model.feature_cache import read_instruction_table  # noqa: E402
from nanovla_ros.training.alignment import (  # noqa: E402
    align_phrasings,
    fold_rule,
    instruction_tokens,
    task_template_vectors,
    token_scores,
    training_templates,
)

# the token states kept and pooled: layers of Gemma-3-270M (18) and their mean, MiniLM's six (hidden_states[0] is the
# embedding layer)
VIEWS = {"large": (1, 4, 9, 13, 18, ALL_LAYERS), "small": (1, 2, 3, 4, 5, 6)}


@torch.inference_mode()
def token_states(backbone: str, texts: list[str], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(rows (sum of tokens, V, D) fp16, offsets (N + 1,)): per sentence the states of its pooled tokens (those the
    deployed pooling reads) in each of VIEWS."""
    # the frozen model under a fixed pooling (the learned one is what this fits): its token states and pooled tokens
    encoder = (HuggingFaceEncoder(prepare_gemma(), "token-states", skip_first_token=True, layers="all")
               if backbone == "large" else load_encoder(backbone))
    model, tokenizer = encoder.model, encoder.tokenizer
    rows, offsets = [], [0]
    for start in range(0, len(texts), batch):
        tokens = tokenizer(texts[start:start + batch], padding=True, return_tensors="pt")
        hidden = model(**tokens, output_hidden_states=True).hidden_states
        stacked = AttentionPooling(VIEWS[backbone], 1).views(hidden)  # (B, T, V, D)
        mask = encoder.pooling_mask(tokens["attention_mask"]).bool()
        for b in range(stacked.shape[0]):
            rows.append(stacked[b][mask[b]].half().numpy())
            offsets.append(offsets[-1] + int(mask[b].sum()))
        print(f"\r{backbone}: {min(start + batch, len(texts))} / {len(texts)}", end="", flush=True)
    print()
    return np.concatenate(rows), np.asarray(offsets)


def padded_all(rows: np.ndarray, offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sentence's token states (N, T, V, D) fp16, zero-padded to the longest, and the mask (N, T)."""
    lengths = np.diff(offsets)
    states = torch.zeros((len(lengths), int(lengths.max())) + rows.shape[1:], dtype=torch.float16)
    mask = torch.zeros((len(lengths), int(lengths.max())), dtype=torch.bool)
    for i, length in enumerate(lengths):
        states[i, :length] = torch.from_numpy(rows[offsets[i]:offsets[i] + length])
        mask[i, :length] = True
    return states, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoders", nargs="+", default=["small", "large"], choices=("small", "large"))
    parser.add_argument("--checkpoint", default=SHIPPED)
    parser.add_argument("--table-dir", default="data/tables")
    parser.add_argument("--queries", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--weight-decays", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--ridge", type=float, default=0.1, help="the alignment's ridge into the learned vectors")
    parser.add_argument("--out", default="out/probe_learned_pooling")
    parser.add_argument("--cache-only", action="store_true", help="compute and keep the token states, then stop")
    parser.add_argument("--save-large", default="", help="save the chosen pooling of the large encoder here "
                        "(what encoders.load_gemma reads: nanovla_ros/checkpoints/pooling_gemma.safetensors)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = texts_to_pool()
    for backbone in args.encoders:
        path = out / f"{backbone}_tokens.npz"
        if not path.is_file():
            rows, offsets = token_states(backbone, texts)
            np.savez(path, texts=np.array(texts), rows=rows, offsets=offsets)
    if args.cache_only:
        return
    model, _ = load_checkpoint(args.checkpoint)
    own = dict(zip(*read_instruction_table(args.table_dir, model.config.language_encoder_id), strict=True))
    tasks, centres = task_template_vectors(own)
    centre_tokens = instruction_tokens(model, centres)
    task_index = {t: i for i, t in enumerate(tasks)}
    train, held = phrasings.bank("train"), phrasings.bank("heldout")
    templates = [(text, *task, "template") for task in tasks for text in training_templates(*task)]
    left_out = fold_rule(3, 0, "rules")
    results = []
    for backbone in args.encoders:
        saved = np.load(out / f"{backbone}_tokens.npz")
        position = {t: i for i, t in enumerate(saved["texts"].tolist())}
        states, mask = padded_all(saved["rows"], saved["offsets"])

        def vectors(head: AttentionPooling, sentences: list[str]) -> dict[str, np.ndarray]:
            with torch.no_grad():
                found = {}
                for start in range(0, len(sentences), 512):
                    part = sentences[start:start + 512]
                    rows = torch.as_tensor([position[t] for t in part])
                    found.update(zip(part, head(states[rows].float(), mask[rows]).numpy(), strict=True))
                return found

        def trained(fit_rows: list[tuple], q: int, wd: float, ep: int) -> AttentionPooling:
            index = torch.as_tensor([position[r[0]] for r in fit_rows])
            targets = torch.from_numpy(centre_tokens[[task_index[(r[1], r[2], r[3])] for r in fit_rows]]).float()
            return fit_pooling(states, mask, index, targets, VIEWS[backbone], q, wd, ep)

        def score(head: AttentionPooling, scored: list[tuple], fitted: list[tuple] | None = None) -> dict[str, float]:
            """S aligned (ridge) into the head's vectors of the bank's training families and the templates (or of
            ``fitted``'s sentences only, in a fold), then token_scores of ``scored``."""
            reading = vectors(head, sorted({r[0] for r in train + templates + scored}))
            keep = None if fitted is None else (lambda text, family, ok={r[0] for r in fitted}: text in ok)
            aligned = align_phrasings(model, own, args.ridge, keep, (f"{backbone}/learned", reading))
            return token_scores(aligned, reading, scored)

        grid = [(q, wd, ep) for q in args.queries for wd in args.weight_decays for ep in args.epochs]
        cv = {}
        for q, wd, ep in grid:
            started = time.monotonic()
            folds = []
            for k in range(3):
                fitted = [r for r in train if not left_out(r[0], r[4], k)] + templates
                scored = [r for r in train if left_out(r[0], r[4], k)]
                folds.append(score(trained(fitted, q, wd, ep), scored, fitted)["right"])
            cv[(q, wd, ep)] = float(np.mean(folds))
            print(f"{backbone} K={q} wd={wd} epochs={ep}: left out by rules, right {100 * cv[(q, wd, ep)]:.1f} % "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
        q, wd, ep = max(grid, key=lambda g: (round(cv[g], 3), -g[0], g[2]))
        head = trained(train + templates, q, wd, ep)
        held_scores = score(head, held)
        reading = vectors(head, sorted({r[0] for r in train + templates + held}))
        aligned = align_phrasings(model, own, args.ridge, None, (f"{backbone}/learned", reading))
        per_kind = {kind: token_scores(aligned, reading, [r for r in held if r[1] == kind])["right"]
                    for kind in ("touch", "pick_place", "push", "stack")}
        results.append({"encoder": backbone, "queries": q, "weight_decay": wd, "epochs": ep, "cv_right": cv[(q, wd, ep)],
                        "cv": {f"K={g[0]} wd={g[1]} ep={g[2]}": v for g, v in cv.items()},
                        "heldout_right": held_scores["right"], "heldout_off": held_scores["off"],
                        "heldout_right_by_kind": per_kind,
                        "heldout_stack_swapped": swapped_share(aligned, reading, held),
                        "layer_mix": head.mix.softmax(0).tolist()})
        record = {"encoder": backbone, "model": ENCODER_SPECS[backbone].name, "queries": q, "weight_decay": wd,
                  "epochs": ep, "cv_right_rules": round(cv[(q, wd, ep)], 4), "targets": Path(args.checkpoint).name,
                  "fit": "bank training families + training templates", "script": "scripts/eval/probe_learned_pooling.py"}
        save_pooling(head, out / f"{backbone}_pooling.safetensors", record)
        if backbone == "large" and args.save_large:
            save_pooling(head, args.save_large, record)
        r = results[-1]
        print(f"{backbone}: chosen K={q} wd={wd} epochs={ep} (CV right {100 * r['cv_right']:.1f} %) | held-out right "
              f"{100 * r['heldout_right']:.1f} % off {r['heldout_off']:.2f} "
              + " ".join(f"{k} {100 * v:.0f}" for k, v in per_kind.items())
              + f" (stack swapped {100 * r['heldout_stack_swapped']:.0f})", flush=True)
    (out / "learned_pooling.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
