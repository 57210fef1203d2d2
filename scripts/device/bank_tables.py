#!/usr/bin/env python3
"""The instruction tables a `--phrasings bank` training on the lent GPU machine needs, small enough to travel in one
call: every training-family sentence of the phrasing bank and every workcell instruction, for each language
encoder (MiniLM for NanoVLA-S, Gemma-3-270M through its learned pooling for NanoVLA-L), fp16, taken from a full
table directory made here (where the encoders are installed) into data/tables_bank (what `sim_run.sh gemma`
stages; about 16 MB for both encoders). Held-out families are never written.

    python scripts/device/bank_tables.py [--from data/tables_full] [--out data/tables_bank]
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from nanovla_ros import phrasings
from nanovla_ros.language.encoders import encoder_id
from nanovla_ros.model.feature_cache import read_instruction_table, write_instruction_table
from nanovla_ros.tasks import all_instructions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", default="data/tables_full")
    parser.add_argument("--out", default="data/tables_bank")
    args = parser.parse_args()
    texts = sorted({row[0] for row in phrasings.bank("train")} | set(all_instructions()))
    shutil.rmtree(Path(args.out) / "instructions", ignore_errors=True)  # tables of older encoder ids go
    for backbone in ("small", "large"):
        known, vectors = read_instruction_table(args.source, encoder_id(backbone))
        index = {t: i for i, t in enumerate(known)}
        missing = [t for t in texts if t not in index]
        if missing:
            raise SystemExit(f"{len(missing)} sentences (e.g. {missing[0]!r}) have no {backbone} vector in "
                             f"{args.source}: make its tables again (write_instruction_tables)")
        write_instruction_table(args.out, encoder_id(backbone), texts, np.asarray(vectors)[[index[t] for t in texts]],
                                dtype=np.float16)  # half the size; training reads them as float32
        print(f"{backbone}: {len(texts)} sentences of {encoder_id(backbone)} -> {args.out}")


if __name__ == "__main__":
    main()
