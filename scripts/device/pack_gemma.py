#!/usr/bin/env python3
"""Gemma-3-270M cut down for a lent GPU machine, which cannot reach the package index (issue #31's training).

The workcell's instructions and the phrasing bank's sentences use 179 of Gemma's 262,144 tokens, so the copy keeps
the embedding rows of those alone (in a new order) and every layer, stored in fp16 (loaded as fp32): ~200 MB instead
of 1.07 GB, ~113 MB xz-compressed (the dequantised Q4_K weights take few distinct values: 4 calls instead of 7). Its
`tokens.json` holds each of those sentences' ids in the new order (the lent machine has no tokenizer to run): a
copy computes, on those sentences, exactly what the packaged model computes, so a checkpoint trained with it
deploys with the packaged model (`train_early_fusion` records no `lm_dir` for a cut-down copy). The weights are
written xz-compressed (``--no-xz``: as they are) in parts of at most --part-mb each (a call to the lent machine
carries 64 MiB with the tree, ~29 MB of it):

    python scripts/device/pack_gemma.py --out .gemma        # then carry .gemma/p1, .gemma/p2, ... one per call:
    bash scripts/device/sim_run.sh gemma                      # on the lent machine: puts /root/gemma together
"""
from __future__ import annotations

import argparse
import json
import lzma
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nanovla_ros import phrasings
from nanovla_ros.language.encoders import prepare_gemma
from nanovla_ros.model.early_fusion import TRIMMED_MARKER
from nanovla_ros.tasks import all_instructions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=".gemma")
    parser.add_argument("--part-mb", type=int, default=32)
    parser.add_argument("--no-xz", action="store_true", help="parts of the raw safetensors file (7 instead of 4)")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    source = prepare_gemma()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    texts = sorted(set(all_instructions()) | set(phrasings.all_sentences()))
    ids = {t: tokenizer(t)["input_ids"] for t in texts}
    kept = sorted({tokenizer.pad_token_id} | {i for row in ids.values() for i in row})  # pad first (id 0)
    new_id = {old: k for k, old in enumerate(kept)}
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    staging = out / "model"
    staging.mkdir(parents=True)
    with safe_open(str(source / "model.safetensors"), framework="pt") as f:
        tensors = {k: (f.get_tensor(k)[kept] if k.endswith("embed_tokens.weight") else f.get_tensor(k))
                   .to(torch.float16).contiguous() for k in f.keys()}  # fp16: loaded as fp32, within 5e-4
    save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config.update(vocab_size=len(kept), pad_token_id=new_id[tokenizer.pad_token_id])
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "tokens.json").write_text(json.dumps({t: [new_id[i] for i in row] for t, row in ids.items()}))
    (out / TRIMMED_MARKER).write_text(json.dumps({"source": str(source), "tokens": len(kept), "texts": len(texts)}))
    blob = (staging / "model.safetensors").read_bytes()
    name = "model.safetensors" if args.no_xz else "model.safetensors.xz"
    if not args.no_xz:
        print(f"compressing {len(blob) / 1e6:.0f} MB (xz, ~2.5 min on 2 cores)", flush=True)
        blob = lzma.compress(blob, preset=6)
    size = args.part_mb * 1024 * 1024
    n = (len(blob) + size - 1) // size
    for k in range(n):  # p1 also carries the small files
        folder = out / f"p{k + 1}"
        folder.mkdir()
        (folder / f"{name}.part{k + 1}-of-{n}").write_bytes(blob[k * size:(k + 1) * size])
    for name in ("config.json", "tokens.json", TRIMMED_MARKER):
        shutil.move(str(out / name), str(out / "p1" / name))
    shutil.rmtree(staging)
    print(f"{len(kept)} tokens of {len(texts)} sentences; {len(blob) / 1e6:.0f} MB in {n} parts: "
          + " ".join(f"{out}/p{k + 1}" for k in range(n)))


if __name__ == "__main__":
    main()
