"""Closed-loop episodes of a NanoVLA checkpoint in the MuJoCo workcell, in process.

Each episode: the scene of ``seed`` (the same layout and task the workcell node lays out for that seed),
the arm at home; every ``execute_steps`` control steps the model's cameras are rendered, the policy predicts a chunk
of H_train joint targets from (image, joint positions, instruction embedding), and ``execute_steps`` of them are
executed (long-short chunking) by the driver's own ``ChunkExecutor`` with its default settings (time-aligned
execution, the cross-fade between chunks, the calibrated joint limits, the per-step limit), so that the harness
moves the arm as the deployed graph does. An episode succeeds when the task's success check holds for
``SUSTAIN_STEPS`` consecutive steps (a cube dropped in its square must stay there) within ``max_steps``.

Evaluation seeds start at 1000, away from the seeds demonstrations are collected with (0..).
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from nanovla_ros.phrasings import sample_phrasing
from nanovla_ros.sim.perturbation import Perturbation
from nanovla_ros.sim.perturbation import apply as apply_perturbation
from nanovla_ros.sim.perturbation import parse as parse_perturbation

EVAL_FIRST_SEED = 1000
SUSTAIN_STEPS = 10
MAX_STEPS = {"pick_place": 450, "stack": 450, "push": 300, "touch": 240}


@dataclass
class EpisodeResult:
    kind: str
    split: str
    seed: int
    instruction: str
    success: bool
    steps: int
    inference_ms: list[float] = field(default_factory=list)
    outcome: dict | None = None  # nanovla_ros.sim.outcome.EpisodeOutcome as a dict: how far the episode got
    perturbation: str = ""  # "FAMILY=STRENGTH" the workcell was perturbed by; "": the training workcell
    grounded_as: str | None = None  # grounding on: the candidate instruction the policy read ("": its own vector)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def run_policy_episode(workcell, policy, embeddings: dict[str, np.ndarray], kind: str, split: str, seed: int,
                       execute_steps: int, max_steps: int | None = None, on_step=None,
                       latency_steps: int = 0, phrasings: str = "templates",
                       perturb: str | Perturbation = "", view_calibration=None) -> EpisodeResult:
    """``on_step(task, step, last_command)``, if given, runs before each control step and may return the frames
    it rendered ({camera: frame}), which the policy then reuses if it replans at that step (DAgger records the
    states it visits this way).

    ``perturb``: "FAMILY=STRENGTH" of ``nanovla_ros.sim.perturbation.SUITE`` (camera pose, light, table colour,
    sensor noise), applied for this episode only; "" the training workcell; a ``Perturbation`` as it is (a
    randomised episode's draw, recorded as "randomised").

    ``phrasings``: "templates" says each task with the workcell's templates of ``split``; "bank" with a sentence
    of the phrasing bank's families of ``split`` (held-out families for "heldout"), the scene unchanged.

    ``latency_steps`` L: what the deployed graph does on a slow host, reproducibly. The chunk planned from the
    observation of step c reaches the arm at step c + L and is executed time-aligned, from its index L on (as the
    driver skips a late chunk's past steps); until the first chunk arrives the arm holds. 0: no delay. A chunk
    older than the driver's ``chunk_timeout_ms`` on arrival is dropped, as the driver drops it.

    ``view_calibration``: a ``ViewCalibration``: the front camera's view calibrated for this episode's look (table
    points found in the training view and in the moved one) and the policy's frames warped back by it first."""
    look = perturb if isinstance(perturb, Perturbation) else parse_perturbation(perturb, seed)
    if view_calibration is not None:
        clicks_rng = np.random.default_rng([seed, 19])
        training_px = view_calibration.found(workcell, clicks_rng)  # before the look: the training workcell
    undo = apply_perturbation(workcell, look, np.random.default_rng([seed, 11]))
    try:
        if view_calibration is not None:
            from nanovla_ros.evaluation.view_calibration import homography
            from nanovla_ros.model.photometric import GainNormalisedPolicy
            from nanovla_ros.model.view_warp import ViewWarp

            warp = ViewWarp(homography(training_px, view_calibration.found(workcell, clicks_rng)))
            policy = GainNormalisedPolicy(policy, warp) if warp.mode != "off" else policy
        result = _episode(workcell, policy, embeddings, kind, split, seed, execute_steps, max_steps, on_step,
                          latency_steps, phrasings)
    finally:
        undo()
    return replace(result, perturbation=perturb if isinstance(perturb, str) else "randomised")


def _episode(workcell, policy, embeddings, kind, split, seed, execute_steps, max_steps, on_step, latency_steps,
             phrasings) -> EpisodeResult:
    from nanovla_ros.driver.config import DriverConfig
    from nanovla_ros.driver.executor import Chunk, ChunkExecutor, ChunkRejected
    from nanovla_ros.sim.outcome import OutcomeMonitor
    from nanovla_ros.sim.servo_bridge import sim_calibration
    from nanovla_ros.sim.tasks import SuccessMonitor, sample_layout, sample_task

    rng = np.random.default_rng(seed)
    layout = sample_layout(rng)
    task = sample_task(rng, kind, split)
    if phrasings == "bank":  # the same scene and task, said by a sentence of the bank's families of this split
        task = replace(task, instruction=sample_phrasing(task, np.random.default_rng([seed, 7]), split))
    workcell.place(layout.cubes, layout.squares)
    if hasattr(policy, "begin_task"):  # a grounded policy grounds each episode's instruction afresh
        policy.begin_task()
    monitor, outcome = SuccessMonitor(task, workcell), OutcomeMonitor(task, workcell)
    # what the policy reads of the instruction: its cached vector, or its words (an early-fusion policy)
    embedding = task.instruction if getattr(policy, "reads_text", False) else embeddings[task.instruction]
    driver = DriverConfig()
    executor = ChunkExecutor.from_config(driver, sim_calibration(workcell).limits_rad(driver.joint_names))
    executor.reset(workcell.joint_positions.astype(np.float64))
    dt_s = 1.0 / workcell.config.control_rate_hz
    last = workcell.joint_positions.astype(np.float64)
    in_flight, sustained, timings = [], 0, []  # in_flight: (captured step, chunk)
    steps = max_steps or MAX_STEPS[kind]
    from nanovla_ros.policy.runner import steps_to_execute

    # as the policy node does (PolicyRunner.effective_steps): a chunk L steps late must last until the next arrives
    execute_steps = steps_to_execute(execute_steps, policy.config.horizon, latency_steps)
    for step in range(steps):
        views = on_step(task, step, last) if on_step is not None else None
        if step % execute_steps == 0:
            # At the camera's size (what the camera node publishes and the demonstrations recorded), not the
            # encoder's: the policy resizes frames itself, as it does in the graph.
            image = views or {name: workcell.render(name) for name in policy.config.cameras}
            started = time.perf_counter()
            in_flight.append((step, policy.predict_chunk(image, workcell.joint_positions.astype(np.float32),
                                                         embedding)))
            timings.append((time.perf_counter() - started) * 1e3)
        while in_flight and step >= in_flight[0][0] + latency_steps:  # arrived: the newest one replaces the last
            captured, chunk = in_flight.pop(0)
            try:
                executor.submit(Chunk(captured, captured * dt_s, dt_s, execute_steps, np.asarray(chunk, np.float64)),
                                step * dt_s)
            except ChunkRejected:
                pass  # stale: the driver drops it too, and the arm goes on with what it has
        last = executor.step(step * dt_s, workcell.joint_positions.astype(np.float64)).positions
        workcell.step(last)
        monitor.update()
        outcome.update()
        sustained = sustained + 1 if monitor.success() else 0
        if sustained >= SUSTAIN_STEPS:
            break
    success = sustained >= SUSTAIN_STEPS
    grounded = getattr(policy, "last", None) if hasattr(policy, "begin_task") else None
    return EpisodeResult(kind, split, seed, task.instruction, success, step + 1, timings,
                         asdict(outcome.outcome(success)),
                         grounded_as=None if grounded is None else (grounded.get("candidate") or ""))


# --------------------------------------------------------------------------- several processes
_WORKER: dict = {}


def _init_worker(checkpoint: str, embeddings: dict[str, np.ndarray], device: str, backend: str = "torch",
                 precision: str = "fp32", transforms: tuple = (), ground_from: str | None = None) -> None:
    """One evaluation worker's policy and workcell. ``transforms``: frame transforms (``FrameGain``, ``FrameDenoise``,
    ``ViewWarp``, ...) the policy reads its frames through, the first applied first."""
    import torch

    from nanovla_ros.model.onnx_policy import load_policy
    from nanovla_ros.sim.workcell import Workcell

    torch.set_num_threads(1)
    policy, _ = load_policy(checkpoint, backend, device, threads=1, precision=precision)
    if ground_from:  # the instruction grounded by the checkpoint's task head (nanovla_ros.model.grounding)
        from nanovla_ros.model.checkpoint import load_checkpoint
        from nanovla_ros.model.grounding import GroundedPolicy, TaskReader, candidate_instructions

        model, _ = load_checkpoint(ground_from)
        policy = GroundedPolicy(policy, TaskReader(model, "cuda" if device == "cuda" else "cpu"),
                                {t: embeddings[t] for t in candidate_instructions()})
    from nanovla_ros.model.photometric import read_through

    policy = read_through(policy, transforms)
    _WORKER.update(policy=policy, workcell=Workcell(), embeddings=embeddings)


def _run_one(job: tuple) -> EpisodeResult:
    kind, split, seed, execute_steps, max_steps, latency_steps, phrasings, perturb, view_calibration = job
    return run_policy_episode(_WORKER["workcell"], _WORKER["policy"], _WORKER["embeddings"], kind, split, seed,
                              execute_steps, max_steps, latency_steps=latency_steps, phrasings=phrasings,
                              perturb=perturb, view_calibration=view_calibration)


def instruction_embeddings(language_encoder_id: str, table_dir: str | None = None,
                           with_bank: bool = False) -> dict[str, np.ndarray]:
    """Every workcell instruction's embedding (and the phrasing bank's sentences' with ``with_bank``): from a
    feature cache's table if given, else the encoder."""
    from nanovla_ros.phrasings import all_sentences
    from nanovla_ros.tasks import all_instructions

    texts = sorted(set(all_instructions()) | (set(all_sentences()) if with_bank else set()))
    if table_dir:
        from nanovla_ros.model.feature_cache import read_instruction_table

        held, table = read_instruction_table(table_dir, language_encoder_id)
        row = {t: i for i, t in enumerate(held)}
        return {t: table[row[t]] for t in texts if t in row}
    from nanovla_ros.language.encoders import ENCODER_SPECS, encoder_id, load_encoder

    backbone = next((b for b in ENCODER_SPECS if encoder_id(b) == language_encoder_id), None)
    if backbone is None:
        raise ValueError(f"no packaged language encoder has the id {language_encoder_id!r}")
    encoder = load_encoder(backbone)
    vectors = np.concatenate([encoder.encode(texts[i:i + 256]) for i in range(0, len(texts), 256)])
    return dict(zip(texts, vectors, strict=True))


def evaluate(checkpoint: str, kinds: list[str], splits: list[str], episodes: int, execute_steps: int = 10,
             workers: int = 1, device: str = "cpu", table_dir: str | None = None, first_seed: int = EVAL_FIRST_SEED,
             progress: bool = True, max_steps: int | None = None, latency_steps: int = 0,
             phrasings: str = "templates", perturb: str | Sequence[str] = "", backend: str = "torch",
             precision: str = "fp32", frame_gain=None, ground: bool = False, denoise=None,
             view_warp=None, view_calibration=None) -> list[EpisodeResult]:
    """Run ``episodes`` per (kind, split) in ``workers`` processes; results in job order. ``max_steps``: the
    episode length for every task (default: ``MAX_STEPS`` per task); ``latency_steps``: see
    ``run_policy_episode``; ``backend``: the policy's runtime (``nanovla_ros.model.onnx_policy.load_policy``).
    ``perturb``: one "FAMILY=STRENGTH" or several (every (kind, split) in each; same seeds; one worker pool).
    ``frame_gain``: a ``nanovla_ros.model.photometric.FrameGain`` the policy reads its frames through (the policy
    node's ``frame_gain``); None: the frames as rendered. ``denoise``: a ``FrameDenoise`` applied before it (the
    node's ``denoise``); ``view_warp``: a ``ViewWarp`` applied before both (the node's ``view_homography``).
    ``ground``: the policy reads each task as the training
    phrasing its task head places where it places the instruction (``nanovla_ros.model.grounding``; the policy
    node's ``ground_instructions``). ``view_calibration``: a ``ViewCalibration`` made for each episode's look
    (``run_policy_episode``), for looks that move the camera (e.g. ``perturb="random_camera"``)."""
    import json
    import multiprocessing as mp

    from nanovla_ros.driver.config import DriverConfig
    from nanovla_ros.model.checkpoint import read_metadata
    from nanovla_ros.sim.workcell import CONTROL_RATE_HZ

    timeout_ms = DriverConfig().chunk_timeout_ms
    if latency_steps * 1e3 / CONTROL_RATE_HZ > timeout_ms:
        print(f"[evaluate] warning: latency_steps={latency_steps} is more than the driver's chunk_timeout_ms="
              f"{timeout_ms:g}: every chunk arrives stale and is dropped, as the driver drops it; the arm never moves")
    from nanovla_ros.model.early_fusion import is_early_fusion_checkpoint

    transforms = (view_warp, denoise, frame_gain)  # as the policy node: the view, the noise, then the gains
    ground_from = None
    if ground:
        if is_early_fusion_checkpoint(checkpoint) or checkpoint.endswith(".onnx"):
            raise ValueError("grounding reads a NanoVLA checkpoint's task head: give its .safetensors")
        ground_from = checkpoint
    if is_early_fusion_checkpoint(checkpoint):
        language_id = ""  # it reads the instruction's words: no table of vectors
    elif checkpoint.endswith(".onnx") or backend != "torch":
        from nanovla_ros.model.onnx_policy import cached_export, read_onnx_metadata

        if not checkpoint.endswith(".onnx"):
            checkpoint = str(cached_export(checkpoint, precision=precision))  # once here, not raced for by workers
        language_id = json.loads(read_onnx_metadata(checkpoint)["config"])["language_encoder_id"]
    else:
        language_id = json.loads(read_metadata(checkpoint)["config"])["language_encoder_id"]
    embeddings = instruction_embeddings(language_id, table_dir, with_bank=phrasings == "bank") if language_id else {}
    conditions = [perturb] if isinstance(perturb, str) else list(perturb)
    for condition in conditions:
        parse_perturbation(condition)  # a bad one is refused before any worker starts
    jobs = [(k, s, first_seed + i, execute_steps, max_steps, latency_steps, phrasings, condition, view_calibration)
            for condition in conditions for k in kinds for s in splits for i in range(episodes)]
    os.environ.setdefault("MUJOCO_GL", "egl")
    from nanovla_ros.sim.workcell import build_model

    build_model()  # the decimated meshes are cached once here, not raced for by the workers
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"evaluate h={execute_steps}", unit="episode")
    results: list[EpisodeResult] = []
    if workers <= 1:
        _init_worker(checkpoint, embeddings, device, backend,  # an exported file: its precision is in it
                     precision if backend == "torch" else "fp32", transforms, ground_from)
        for job in jobs:
            results.append(_run_one(job))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")
    else:
        with mp.get_context("spawn").Pool(workers, _init_worker, (checkpoint, embeddings, device, backend,
                                                                   precision if backend == "torch" else "fp32",
                                                                   transforms, ground_from)) as pool:
            for result in pool.imap(_run_one, jobs):
                results.append(result)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")
    if bar is not None:
        bar.close()
    return results


def summarise(results: list[EpisodeResult]) -> list[dict]:
    rows = []
    groups: dict[tuple[str, str], list[EpisodeResult]] = {}
    for r in results:
        groups.setdefault((r.kind, r.split), []).append(r)
    for (kind, split), rs in groups.items():
        wins = sum(r.success for r in rs)
        low, high = wilson_interval(wins, len(rs))
        latency = [t for r in rs for t in r.inference_ms]
        outcomes = [r.outcome for r in rs if r.outcome]
        stages = Counter(o["stage"] for o in outcomes)
        rows.append({"kind": kind, "split": split, "episodes": len(rs), "successes": wins, "rate": wins / len(rs),
                     "ci95": [low, high], "inference_ms_p50": float(np.percentile(latency, 50)) if latency else None,
                     "inference_ms_p95": float(np.percentile(latency, 95)) if latency else None,
                     "stages": dict(stages.most_common()),
                     "closest_cm_p50": float(np.median([o["closest_cm"] for o in outcomes])) if outcomes else None})
    return rows


def results_json(results: list[EpisodeResult]) -> list[dict]:
    return [asdict(r) | {"inference_ms": [round(t, 2) for t in r.inference_ms]} for r in results]
