"""Which parts of the shipped policy's ONNX graph pay for static int8 on this CPU, and what each costs in chunk
error (issue #29: the step on one CPU thread).

Records the policy's inputs (two frames, joint state, instruction vector) at every replanning step of a few
closed-loop episodes of the fp32 policy (training split, seeds 30000+: none of the evaluation's), fits static
quantisation (QDQ, weights per channel) on the first half and, on the other half, reports per variant the
step's p50 / p95 on one thread and the chunk's difference from fp32 (radians; median and p95 over every action
of every held-out step). Variants: fp32, the shipped dynamic int8 (matrix products), static int8 of the image
encoder's 1x1 convolutions (pointwise), of every convolution but the depthwise ones, of every convolution, each
with the dynamic int8 of the matrix products on top.

    python scripts/bench/probe_static_int8.py [--checkpoint CKPT] [--episodes-per-task 4] [--repeats 30]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def record_inputs(checkpoint: str, episodes: int, first_seed: int, table_dir: str | None) -> list[dict]:
    from nanovla_ros.evaluation.closed_loop import instruction_embeddings, run_policy_episode
    from nanovla_ros.model.onnx_policy import load_policy
    from nanovla_ros.sim.workcell import Workcell

    policy, _ = load_policy(checkpoint, "onnxruntime", "cpu", threads=2, precision="fp32")
    embeddings = instruction_embeddings(policy.config.language_encoder_id, table_dir)
    recorded = []

    class Recorder:
        config = policy.config

        def predict_chunk(self, image, state, instruction):
            recorded.append({"pixels": policy.preprocess([image[c] for c in policy.config.cameras]).copy(),
                             "state": state.astype(np.float32)[None],
                             "instruction": np.asarray(instruction, np.float32)[None]})
            return policy.predict_chunk(image, state, instruction)

    workcell = Workcell()
    for kind in ("pick_place", "push", "touch", "stack"):
        for seed in range(first_seed, first_seed + episodes):
            run_policy_episode(workcell, Recorder(), embeddings, kind, "train", seed, execute_steps=20)
    workcell.close()
    return recorded


def conv_nodes(path: Path) -> dict[str, list[str]]:
    """Conv node names of the graph by kind: pointwise (1x1), depthwise (group == input channels), other."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {i.name: i for i in graph.initializer}
    kinds: dict[str, list[str]] = {"pointwise": [], "depthwise": [], "other": []}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = weights.get(node.input[1])
        shape = list(w.dims) if w is not None else []
        if group > 1:
            kinds["depthwise"].append(node.name)
        elif shape[2:] == [1, 1]:
            kinds["pointwise"].append(node.name)
        else:
            kinds["other"].append(node.name)
    return kinds


def quantize_static_convs(source: Path, destination: Path, calibration: list[dict], exclude: list[str]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration)

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(source), str(destination), Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], per_channel=True, nodes_to_exclude=exclude,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def time_and_error(path: Path, held: list[dict], reference: list[np.ndarray] | None, repeats: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [session.run(["actions"], feed)[0][0] for feed in held]
    for feed in held[:3]:
        session.run(["actions"], feed)
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        session.run(["actions"], held[i % len(held)])
        times.append((time.perf_counter() - started) * 1e3)
    error = None
    if reference is not None:
        diff = np.abs(np.stack(outputs) - np.stack(reference))
        error = (float(np.median(diff)), float(np.percentile(diff, 95)), float(diff.max()))
    return np.percentile(times, 50), np.percentile(times, 95), outputs, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="nanovla_ros/checkpoints/nanovla_s_workcell.safetensors")
    parser.add_argument("--episodes-per-task", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--table-dir", default="data/tables")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    from nanovla_ros.model.onnx_policy import cached_export, quantize_dynamic_int8

    fp32 = cached_export(args.checkpoint)
    int8 = cached_export(args.checkpoint, precision="int8")
    feeds = record_inputs(args.checkpoint, args.episodes_per_task, args.first_seed, args.table_dir or None)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(feeds))
    calibration = [feeds[i] for i in order[: len(feeds) // 2]]
    held = [feeds[i] for i in order[len(feeds) // 2:]]
    print(f"{len(feeds)} recorded steps: {len(calibration)} calibrate, {len(held)} measure")
    kinds = conv_nodes(fp32)
    print({k: len(v) for k, v in kinds.items()})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"fp32": fp32, "dynamic int8 (shipped)": int8}
        for name, exclude in (("static int8 pointwise convs", kinds["depthwise"] + kinds["other"]),
                              ("static int8 convs but depthwise", kinds["depthwise"]),
                              ("static int8 every conv", [])):
            static = Path(tmp) / f"{len(variants)}.onnx"
            quantize_static_convs(fp32, static, calibration, exclude)
            both = Path(tmp) / f"{len(variants)}-dyn.onnx"
            quantize_dynamic_int8(static, both)
            variants[name + " + dynamic matmuls"] = both
        reference = None
        for name, path in variants.items():
            p50, p95, outputs, error = time_and_error(path, held, reference, args.repeats)
            if reference is None:
                reference = outputs
            rows.append({"variant": name, "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                         "error_rad_median_p95_max": [round(e, 4) for e in error] if error else None})
            print(rows[-1], flush=True)
    print(f"hardware: {platform.processor() or platform.machine()}, 1 ONNX Runtime thread")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
