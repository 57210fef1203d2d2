#!/usr/bin/env python3
"""What instruction grounding costs (nanovla_ros/model/grounding.py): the task head reading the instruction and the
27 candidates on one observation, once per task, against one policy step, side by side in one run.

    python scripts/bench/bench_grounding.py [--checkpoint CKPT] [--threads 1 2] [--repeats 7]

Prints, per thread count: the grounding read (torch fp32, as the policy node runs it), one policy step with torch and
with ONNX Runtime int8 (the CPU default), their ratios, and the hardware. The candidates' vectors come from the
packaged MiniLM (the shipped model's encoder); the scene is the simulated workcell's, both cameras.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main() -> None:
    from nanovla_ros.graph import SHIPPED_CHECKPOINT
    from nanovla_ros.language.encoders import load_minilm
    from nanovla_ros.model.checkpoint import load_checkpoint
    from nanovla_ros.model.grounding import TaskReader, candidate_instructions
    from nanovla_ros.model.onnx_policy import load_policy
    from nanovla_ros.sim.tasks import scene_observation

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(SHIPPED_CHECKPOINT))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    texts = candidate_instructions()
    vectors = load_minilm().encode(["could you set the red block on top of the blue one"] + texts)
    frames, state = scene_observation(1000)
    state = state.astype(np.float32)
    print(f"hardware: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads by "
          f"default; {args.checkpoint}; {len(vectors)} instructions read per grounding")
    for threads in args.threads:
        torch.set_num_threads(threads)
        model, _ = load_checkpoint(args.checkpoint)
        reader = TaskReader(model)
        torch_policy, _ = load_policy(args.checkpoint, "torch", "cpu", threads=threads)
        int8_policy, _ = load_policy(args.checkpoint, "onnxruntime", "cpu", threads=threads, precision="int8")
        ground_ms = _median_ms(lambda: reader.read(frames, state, vectors), args.repeats)
        torch_ms = _median_ms(lambda: torch_policy.predict_chunk(frames, state, vectors[0]), args.repeats)
        int8_ms = _median_ms(lambda: int8_policy.predict_chunk(frames, state, vectors[0]), args.repeats)
        print(f"{threads} thread(s): grounding {ground_ms:.0f} ms = {ground_ms / torch_ms:.1f}x a torch step "
              f"({torch_ms:.0f} ms), {ground_ms / int8_ms:.1f}x an int8 step ({int8_ms:.0f} ms)")


if __name__ == "__main__":
    main()
