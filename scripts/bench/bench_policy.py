#!/usr/bin/env python3
"""Benchmark: per-step policy latency (p50/p95) and peak memory, side by side in one run:

  nanovla_s_cached     NanoVLA-S, instruction vector from the cache (the deployed path)
  nanovla_s_uncached   NanoVLA-S, re-encoding the instruction with MiniLM every step
  nanovla_l_cached     NanoVLA-L, cached Gemma-3-270M vector
  nanovla_l_uncached   NanoVLA-L, re-encoding with Gemma-3-270M every step
  early_fusion_joint   EdgeVLA-style early fusion through Gemma-3-270M, joint readout of H actions
  early_fusion_ar      the same, autoregressive readout (one LM step per action)
  shipped_s            the shipped checkpoint as `make demo` runs it: NanoVLA-S reading two cameras at 320 px
                       (two 480x640 frames per step), cached instruction
  shipped_s_onnxruntime  the same step exported to ONNX (`nanovla export --onnx`), run by ONNX Runtime (CPU
                       provider, or CUDA with --device cuda; policy node `backend:=onnxruntime`)
  shipped_s_onnxruntime_int8  the same with the transformer's matrix products in int8 (dynamic quantisation;
                       `precision: int8`)
  shipped_s_tensorrt   the same through ONNX Runtime's TensorRT provider (cuda only; needs onnxruntime-gpu and
                       tensorrt)
  shipped_s_tensorrt_fp16  the same with an fp16 TensorRT engine (`precision: fp16`)
  shipped_s_fp16       the shipped step in torch under CUDA fp16 autocast (cuda only; `precision: fp16`)
  shipped_s_half       the shipped step in torch with fp16 weights and activations (NanoVLAPolicy half_weights;
                       cuda only)
  shipped_s_half_cl    the same with the image encoder in channels-last (NHWC) layout (NanoVLAPolicy
                       channels_last; cuda only)
  *_cudagraph          a torch variant's step torch.compile'd, replayed as a CUDA graph on a GPU (`compile: true`):
                       nanovla_s_cached, nanovla_l_cached, shipped_s, shipped_s_fp16, shipped_s_half, shipped_s_half_cl
  preprocess_torch     the shipped step's pre-processing alone (two 480x640 frames -> 2 x 3 x 320 x 320, resized
                       and normalised) as the torch policy does it (`preprocess_frames`)
  preprocess_reused    the same as the ONNX policy does it (`FramePreprocessor`: OpenCV, buffers reused)

Each variant runs in its own process (so peak memory is its own). A "step" is one inference producing
an H = 100 chunk from a 480x640 camera frame. Real packaged weights; readout heads random (timing only).

    .venv/bin/python scripts/bench/bench_policy.py [--device cpu|cuda] [--threads 1 2] [--repeats 20]
        [--random-encoders DIR]

--random-encoders DIR (for the GPU machine, which the packaged weights cannot reach): DIR/minilm and
DIR/gemma hold the encoders' configs and tokenizers; the language models are built with random weights.
Latency and memory do not depend on weight values; the image encoder keeps its real weights.
--random-vectors: the cached variants read a random unit vector of the encoder's size instead of encoding
INSTRUCTION (no language model is loaded: a host without the packaged encoders, e.g. the GPU machine).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("nanovla_s_cached", "nanovla_s_uncached", "nanovla_l_cached", "nanovla_l_uncached",
            "early_fusion_joint", "early_fusion_ar", "shipped_s", "shipped_s_onnxruntime", "shipped_s_onnxruntime_int8",
            "shipped_s_tensorrt", "shipped_s_tensorrt_fp16", "shipped_s_fp16", "nanovla_s_cached_cudagraph",
            "nanovla_l_cached_cudagraph", "shipped_s_cudagraph", "shipped_s_fp16_cudagraph", "shipped_s_half",
            "shipped_s_half_cudagraph", "shipped_s_half_cl", "shipped_s_half_cl_cudagraph", "preprocess_torch",
            "preprocess_reused")
CUDA_ONLY = ("shipped_s_tensorrt", "shipped_s_tensorrt_fp16", "shipped_s_fp16", "shipped_s_fp16_cudagraph",
             "shipped_s_half", "shipped_s_half_cudagraph", "shipped_s_half_cl", "shipped_s_half_cl_cudagraph")
INSTRUCTION = "put the red cube in the yellow square"


def encode(encoder, device: str):
    """The encoder's pooled vector for INSTRUCTION, computed on ``device`` (the service runs on CPU)."""
    import torch

    batch = encoder.tokenizer([INSTRUCTION], return_tensors="pt").to(device)
    with torch.inference_mode():
        return encoder.pool(batch)[0].float().cpu().numpy()


def hardware(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load_text_encoder(backbone: str, random_dir: str | None):
    from nanovla_ros.language.encoders import HuggingFaceEncoder, load_encoder

    if random_dir is None:
        return load_encoder(backbone)

    class RandomWeights(HuggingFaceEncoder):
        def __init__(self, model_dir: str) -> None:  # same pooling, weights from the config's init
            from transformers import AutoConfig, AutoModel, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModel.from_config(AutoConfig.from_pretrained(model_dir)).float().eval()
            self.encoder_id, self.dim = f"random:{backbone}", int(self.model.config.hidden_size)
            self._skip_first = backbone == "large"
            self._layers = "all" if backbone == "large" else "last"

    return RandomWeights(str(Path(random_dir) / ("minilm" if backbone == "small" else "gemma")))


def random_vector(dim: int):
    import numpy as np

    vector = np.random.default_rng(1).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def run_variant(variant: str, device: str, threads: int, repeats: int, random_dir: str | None = None,
                compiled: bool = False, random_vectors: bool = False, checkpoint: str | None = None) -> dict:
    import numpy as np
    import torch

    compiled = compiled or variant.endswith("_cudagraph")
    variant_name, variant = variant, variant.removesuffix("_cudagraph")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    state = np.zeros(6, np.float32)
    if variant.startswith("shipped_s"):
        from nanovla_ros.graph import SHIPPED_CHECKPOINT
        from nanovla_ros.model.onnx_policy import load_policy

        half, channels_last = variant.startswith("shipped_s_half"), variant.endswith("_cl")
        backend = (variant.removeprefix("shipped_s").removesuffix("_cl").removesuffix("_int8").removesuffix("_fp16").removesuffix("_half")
                   .lstrip("_") or "torch")
        precision = variant.rsplit("_", 1)[-1] if variant.endswith(("_int8", "_fp16")) else "fp32"
        policy, _ = load_policy(checkpoint or SHIPPED_CHECKPOINT, backend, device, threads=threads,  # export cached
                                precision=precision)
        if getattr(policy, "reads_text", False):  # a trained early-fusion checkpoint: torch, the instruction's words
            frames = {camera: image for camera in policy.config.cameras}

            def step():
                return policy.predict_chunk(frames, state, INSTRUCTION)
        elif half:
            from nanovla_ros.model.modeling_nanovla import NanoVLAPolicy

            policy = NanoVLAPolicy(policy.model, policy.image_encoder, half_weights=True, channels_last=channels_last)
        if not getattr(policy, "reads_text", False):
            if compiled and backend == "torch":
                policy.compile()
            cached = (random_vector(policy.config.language_dim) if random_vectors  # the service's vector, once
                      else encode(load_text_encoder("small", random_dir), "cpu"))
            frames = {camera: image for camera in policy.config.cameras}

            def step():
                return policy.predict_chunk(frames, state, cached)
    elif variant.startswith("preprocess"):
        from nanovla_ros.model.modeling_nanovla import preprocess_frames
        from nanovla_ros.model.onnx_policy import FramePreprocessor

        pair = np.stack([image, image])
        if variant == "preprocess_torch":
            def step():
                return preprocess_frames(torch.from_numpy(pair), 320).numpy()
        else:
            import cv2

            cv2.setNumThreads(threads)
            reused = FramePreprocessor(320)

            def step():
                return reused([image, image])
    elif variant.startswith("nanovla"):
        from nanovla_ros.model.configuration_nanovla import nanovla_l, nanovla_s
        from nanovla_ros.model.modeling_nanovla import NanoVLA, NanoVLAPolicy

        backbone = "small" if "_s_" in variant else "large"
        config = nanovla_s() if backbone == "small" else nanovla_l()
        policy = NanoVLAPolicy(NanoVLA(config)).to(device)
        if compiled:
            policy.compile()
        if random_vectors and variant.endswith("_cached"):
            cached = random_vector(config.language_dim)
        else:
            encoder = load_text_encoder(backbone, random_dir)
            encoder.model.to(device)
            cached = encode(encoder, device)

        def step():
            embedding = cached if variant.endswith("_cached") else encode(encoder, device)
            return policy.predict_chunk(image, state, embedding)
    else:
        from nanovla_ros.model.baselines import EarlyFusionVLA

        model = EarlyFusionVLA(readout="joint" if variant.endswith("joint") else "autoregressive",
                               lm_dir=str(Path(random_dir) / "gemma") if random_dir else None,
                               random_lm_weights=random_dir is not None).to(device)

        def step():
            return model.predict_chunk(image, state, INSTRUCTION)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(5 if compiled else 3):  # warm-up (compilation and CUDA-graph capture happen here)
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n = repeats if variant != "early_fusion_ar" or device == "cuda" else max(3, repeats // 5)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"variant": variant_name, "threads": threads, "n": n, "p50": float(np.percentile(times, 50)),
            "p95": float(np.percentile(times, 95)), "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--random-encoders", default=None, help="config+tokenizer dirs: random LM weights")
    parser.add_argument("--compile", action="store_true", help="torch.compile NanoVLA's step (CUDA graphs on GPU)")
    parser.add_argument("--random-vectors", action="store_true", help="cached variants: a random instruction vector "
                        "(no language model loaded)")
    parser.add_argument("--checkpoints", nargs="+", default=None, metavar="CKPT", help="shipped_s* variants: run "
                        "each on every one of these checkpoints, side by side (default: the shipped one); a trained "
                        "early-fusion checkpoint among them runs as shipped_s only (torch fp32, reading INSTRUCTION)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.device, args.threads[0], args.repeats, args.random_encoders,
                                     args.compile, args.random_vectors, args.checkpoint)))
        return
    from nanovla_ros.model.early_fusion import is_early_fusion_checkpoint

    if any(v.startswith(("shipped_s_onnx", "shipped_s_tensorrt")) for v in args.variants):  # the ONNX export, once
        from nanovla_ros.graph import SHIPPED_CHECKPOINT
        from nanovla_ros.model.onnx_policy import cached_export

        for checkpoint in [c for c in args.checkpoints or [SHIPPED_CHECKPOINT] if not is_early_fusion_checkpoint(c)]:
            cached_export(checkpoint)
            if "shipped_s_onnxruntime_int8" in args.variants:
                cached_export(checkpoint, precision="int8")
    variants = [v for v in args.variants if args.device == "cuda" or not (v in CUDA_ONLY or v.endswith("_cudagraph"))]
    rows = []
    # (variant, checkpoint or None): the shipped_s* variants once per --checkpoints entry, labelled by its file name
    # (early-fusion checkpoints among them: the torch variant `shipped_s` alone, in fp32, reading the words)
    runs = [(v, c) for v in variants for c in ((args.checkpoints or [None]) if v.startswith("shipped_s") else [None])
            if c is None or v == "shipped_s" or not is_early_fusion_checkpoint(c)]
    for threads in args.threads if args.device == "cpu" else [1]:
        for variant, checkpoint in runs:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--device", args.device,
                                  "--threads", str(threads), "--repeats", str(args.repeats)]
                                 + (["--random-encoders", args.random_encoders] if args.random_encoders else [])
                                 + (["--compile"] if args.compile else [])
                                 + (["--random-vectors"] if args.random_vectors else [])
                                 + (["--checkpoint", checkpoint] if checkpoint else []),
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            if checkpoint:
                rows[-1]["variant"] += f" ({Path(checkpoint).stem})"
            print(f"[bench] {rows[-1]['variant']} threads={threads}: p50 {rows[-1]['p50']:.1f} ms", file=sys.stderr,
                  flush=True)
    memory = "peak GPU memory allocated (MiB)" if args.device == "cuda" else "peak RSS (MiB)"
    weights = "; language models with RANDOM weights (timing only)" if args.random_encoders else ""
    weights += "; NanoVLA step torch.compile'd" if args.compile else ""
    print(f"# Policy step latency, H = 100 chunk from a 480x640 frame ({hardware(args.device)}, {args.device}{weights})\n")
    print(f"| variant | threads | runs | p50 (ms) | p95 (ms) | {memory} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['threads']} | {r['n']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['peak_mb']:.0f} |")
    print("\nRatios (p50, same run):")
    for threads in sorted({r["threads"] for r in rows}):
        p = {r["variant"]: r["p50"] for r in rows if r["threads"] == threads}
        pairs = [("caching speeds NanoVLA-S up", "nanovla_s_uncached", "nanovla_s_cached"),
                 ("caching speeds NanoVLA-L up", "nanovla_l_uncached", "nanovla_l_cached"),
                 ("NanoVLA-L (cached) vs early fusion, joint readout", "early_fusion_joint", "nanovla_l_cached"),
                 ("NanoVLA-L (cached) vs early fusion, autoregressive", "early_fusion_ar", "nanovla_l_cached"),
                 ("joint vs autoregressive readout (early fusion)", "early_fusion_ar", "early_fusion_joint"),
                 ("two cameras at 320 px (shipped) cost vs one at 224 px", "shipped_s", "nanovla_s_cached"),
                 ("ONNX Runtime vs torch, shipped step", "shipped_s", "shipped_s_onnxruntime"),
                 ("ONNX Runtime int8 vs fp32, shipped step", "shipped_s_onnxruntime", "shipped_s_onnxruntime_int8"),
                 ("TensorRT vs torch, shipped step", "shipped_s", "shipped_s_tensorrt"),
                 ("TensorRT fp16 vs torch, shipped step", "shipped_s", "shipped_s_tensorrt_fp16"),
                 ("torch fp16 (autocast) vs fp32, shipped step", "shipped_s", "shipped_s_fp16"),
                 ("CUDA graph vs eager, shipped step", "shipped_s", "shipped_s_cudagraph"),
                 ("CUDA graph fp16 vs eager fp32, shipped step", "shipped_s", "shipped_s_fp16_cudagraph"),
                 ("fp16 weights vs autocast, shipped step, CUDA graph", "shipped_s_fp16_cudagraph",
                  "shipped_s_half_cudagraph"),
                 ("channels-last vs NCHW, fp16 weights, CUDA graph", "shipped_s_half_cudagraph",
                  "shipped_s_half_cl_cudagraph"),
                 ("CUDA graph vs eager, NanoVLA-L cached", "nanovla_l_cached", "nanovla_l_cached_cudagraph"),
                 ("reused-buffer pre-processing vs torch's", "preprocess_torch", "preprocess_reused")]
        for label, slow, fast in pairs:
            if slow in p and fast in p:
                print(f"- threads={threads}: {label}: {p[slow] / p[fast]:.1f}x")
        for variant in [v for v in variants if v.startswith("shipped_s")] if args.checkpoints else []:
            first = Path(args.checkpoints[0]).stem
            for other in (Path(c).stem for c in args.checkpoints[1:]):
                a, b = p.get(f"{variant} ({first})"), p.get(f"{variant} ({other})")
                if a and b:
                    print(f"- threads={threads}: {variant}, {first} vs {other}: {a / b:.2f}x the time")


if __name__ == "__main__":
    main()
