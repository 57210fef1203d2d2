#!/usr/bin/env python3
"""Benchmark: the early-fusion baseline's autoregressive readout (issue #31), three ways side by side in one run:

  dynamic   ``decode``: a growing key-value cache, one eager language-model step per action
  static    ``decode(static=True)``: the cache allocated once at its final length, written in place
  graphed   ``decode_graphed``: the static cache with the H - 1 single-token steps replayed from one CUDA graph
            (cuda only)
  joint     the joint readout (one pass for the whole chunk), for scale

Gemma-3-270M's architecture (18 layers, width 640) with random weights unless NANOVLA_GEMMA_DIR holds the real
model (latency does not depend on weight values); the prefix as the workcell's model has it: two cameras' 9 x 9
cells at 288 px, a 16-token instruction, the joint state; H = 40. Prints per-chunk p50 / p95 in ms, the ratios to
``dynamic``, and the largest difference of each decode from ``dynamic``'s chunk (they compute the same thing).

    .venv/bin/python scripts/bench/bench_early_fusion_decode.py [--device cpu|cuda] [--repeats 20] [--batch 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

GEMMA_270M = dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                  max_position_embeddings=32768, rope_theta=1000000.0, query_pre_attn_scalar=256)


def build(readout: str, device: str, horizon: int, lm=None):
    from nanovla_ros.model.configuration_early_fusion import EarlyFusionConfig
    from nanovla_ros.model.early_fusion import EarlyFusionPolicyModel

    real = bool(os.environ.get("NANOVLA_GEMMA_DIR"))
    config = EarlyFusionConfig(horizon=horizon, cameras=("front", "wrist"), image_size=288, readout=readout,
                               lm_config="" if real else json.dumps(GEMMA_270M))
    torch.manual_seed(0)
    return EarlyFusionPolicyModel(config, lm=lm).to(device).eval()


def timed(fn, device: str, repeats: int) -> tuple[np.ndarray, torch.Tensor]:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = fn()  # warm-up (and, for the graphed decode, the capture)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return np.asarray(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ar = build("autoregressive", args.device, args.horizon)
    joint = build("joint", args.device, args.horizon, lm=ar.lm)
    c = ar.config
    features = torch.randn(args.batch, len(c.cameras), c.image_channels, c.grid, c.grid, device=args.device)
    tokens = torch.randint(1, 1000, (args.batch, args.tokens), device=args.device)
    mask = torch.ones(args.batch, args.tokens, dtype=torch.bool, device=args.device)
    state = torch.randn(args.batch, c.state_dim, device=args.device)
    prefix = ar._prefix(features, tokens, state)
    runs = {"dynamic": lambda: ar.decode(prefix, mask), "static": lambda: ar.decode(prefix, mask, static=True)}
    if args.device == "cuda":
        runs["graphed"] = lambda: ar.decode_graphed(prefix, mask)
    runs["joint"] = lambda: joint(features, tokens, mask, state)[0]
    hardware = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads"
    print(f"early-fusion readout, batch {args.batch}, prefix {prefix.shape[1]} tokens, H = {c.horizon}, "
          f"{'real' if os.environ.get('NANOVLA_GEMMA_DIR') else 'random'} Gemma-3-270M weights, {hardware}")
    results = {}
    for name, fn in runs.items():
        results[name] = timed(fn, args.device, args.repeats if name != "dynamic" or args.device == "cuda"
                              else max(3, args.repeats // 4))
    base = np.median(results["dynamic"][0])
    print(f"{'readout':<10} {'p50 ms':>9} {'p95 ms':>9} {'x dynamic':>10} {'max |diff|':>11}")
    for name, (times, out) in results.items():
        diff = "" if name in ("dynamic", "joint") else f"{(out - results['dynamic'][1]).abs().max().item():.2e}"
        print(f"{name:<10} {np.median(times):9.1f} {np.percentile(times, 95):9.1f} {base / np.median(times):10.2f} "
              f"{diff:>11}")


if __name__ == "__main__":
    main()
