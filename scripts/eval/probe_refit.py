#!/usr/bin/env python3
"""How well does a NanoVLA checkpoint move to the other language encoder? (`nanovla train --refit-language`)

`NanoVLA.with_other_language_encoder` keeps every weight of a checkpoint but its instruction projection, which it
fits by ridge regression so that the other encoder's vectors of the training instructions give the instruction
tokens the checkpoint's own encoder gave. This probe does that fit for the workcell's instructions from the cached
tables of both encoders and reports, per ridge strength: the fit's error on the training instructions, and on the
held-out phrasings how far the refitted tokens land from the checkpoint's own and which task's training
instructions they land nearest (the checkpoint's own tokens put every held-out paraphrase nearest its own task).

    python scripts/eval/probe_refit.py nanovla_ros/checkpoints/nanovla_s_workcell.safetensors --table-dir data/tables

With ``--out L.safetensors`` it also writes the checkpoint refitted at the first ``--ridge`` (fp16), an L that has
not been trained at all, to evaluate as it is (`nanovla evaluate L.safetensors --table-dir ...`).
"""
from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch

from nanovla_ros.model.checkpoint import load_checkpoint, save_checkpoint
from nanovla_ros.model.feature_cache import instruction_table_ids, read_instruction_table
from nanovla_ros.tasks import TEMPLATES, instruction_rows
from nanovla_ros.training.alignment import instruction_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--table-dir", default="data/tables", help="a cache with both encoders' instruction tables")
    parser.add_argument("--ridge", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1, 1.0])
    parser.add_argument("--out", help="also write the checkpoint refitted at the first --ridge here (fp16)")
    args = parser.parse_args()
    model, extra = load_checkpoint(args.checkpoint)
    model.eval()
    own = model.config.language_encoder_id
    others = [i for i in instruction_table_ids(args.table_dir) if i != own]
    if own not in instruction_table_ids(args.table_dir) or not others:
        raise SystemExit(f"probe_refit: {args.table_dir} needs the tables of {own!r} and of another encoder")
    tables = {i: dict(zip(*read_instruction_table(args.table_dir, i), strict=True)) for i in [own, others[0]]}
    rows = [r for r in instruction_rows() if r[0] in tables[own] and r[0] in tables[others[0]]]
    train = [r for r in rows if r[2] == "train"]
    old = np.stack([tables[own][t] for t, _, _ in train])
    new = np.stack([tables[others[0]][t] for t, _, _ in train])
    own_train = instruction_tokens(model, old)
    print(f"{model.config.language_encoder_id} -> {others[0]}: {len(train)} training instructions, "
          f"{len(rows) - len(train)} held-out; token rms {np.sqrt((own_train ** 2).mean()):.3f}")
    print("| ridge | fit error rms (train) | held-out kind: token distance rms to the checkpoint's own, "
          "nearest training task |")
    print("|---|---|---|")
    for ridge in args.ridge:
        refit = model.with_other_language_encoder(others[0], new, old, ridge=ridge)
        refit_train = instruction_tokens(refit, new)
        cells = []
        for kind in TEMPLATES:
            held = [t for t, k, s in rows if k == kind and s == "heldout"]
            if not held:
                continue
            a = instruction_tokens(model, np.stack([tables[own][t] for t in held]))
            b = instruction_tokens(refit, np.stack([tables[others[0]][t] for t in held]))
            nearest = Counter(train[int(np.argmin(((refit_train - x) ** 2).sum(1)))][1] for x in b)
            cells.append(f"{kind} ({len(held)}) {np.sqrt(((a - b) ** 2).mean()):.2f}, "
                         + " ".join(f"{k} {n}" for k, n in nearest.most_common()))
        print(f"| {ridge:g} | {np.sqrt(((own_train - refit_train) ** 2).mean()):.3f} | {'; '.join(cells)} |")
        if args.out and ridge == args.ridge[0]:
            record = {"step": 0, "init": extra, "refit_language": {"from": own, "to": others[0], "ridge": ridge,
                                                                  "instructions": len(train)}}
            if "execute_steps" in extra:
                record["execute_steps"] = extra["execute_steps"]
            save_checkpoint(refit, args.out, record, dtype=torch.float16)
            print(f"refitted checkpoint (ridge {ridge:g}, not trained): {args.out}")


if __name__ == "__main__":
    main()
