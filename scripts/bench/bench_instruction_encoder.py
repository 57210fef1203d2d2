#!/usr/bin/env python3
"""Benchmark: instruction-embedding latency per backbone, cold (encoder runs) vs cached (memory LRU,
and SQLite on disk after a restart), measured side by side in one run on one CPU thread.

    .venv/bin/python scripts/bench/bench_instruction_encoder.py [--repeats 20] [--threads 1]

Prints a markdown table (median and p95 of `repeats` distinct instructions) and the speed-up ratios.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nanovla_ros.language.config import EncoderConfig
from nanovla_ros.language.service import InstructionEncoderService

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "cyan"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def instructions(n: int) -> list[str]:
    return [f"put the {COLOURS[i % 10]} cube in the {COLOURS[(i * 3 + 1) % 10]} square number {i}" for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backbone in ("small", "large"):
            config = EncoderConfig(backbones=(backbone,), cache_dir=tmp, num_threads=args.threads)
            start = time.perf_counter()
            service = InstructionEncoderService(config)
            service.start()
            service.wait_loaded()
            load_s = time.perf_counter() - start
            texts = instructions(args.repeats)
            service.encode("warm up the encoder", backbone)
            cold = [service.encode(t, backbone).latency_ms for t in texts]
            memory = [service.encode(t, backbone).latency_ms for t in texts]
            service.cache.clear_memory()  # as after a restart: only the SQLite layer holds them
            disk = [service.encode(t, backbone).latency_ms for t in texts]
            rows.append((backbone, load_s, cold, memory, disk))
            service.close()

    print(f"# Instruction embedding latency ({cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"median / p95 of {args.repeats} distinct instructions)\n")
    print("| backbone | load (s) | cold encode (ms) | cached, memory (ms) | cached, disk (ms) | cold / memory | cold / disk |")
    print("|---|---|---|---|---|---|---|")
    for backbone, load_s, cold, memory, disk in rows:
        med = [statistics.median(x) for x in (cold, memory, disk)]
        print(f"| {backbone} | {load_s:.1f} | {med[0]:.2f} / {percentile(cold, 95):.2f} | "
              f"{med[1]:.4f} / {percentile(memory, 95):.4f} | {med[2]:.3f} / {percentile(disk, 95):.3f} | "
              f"{med[0] / med[1]:.0f}x | {med[0] / med[2]:.0f}x |")


if __name__ == "__main__":
    main()
