"""Instruction grounding: the policy acts on a training phrasing of what the user asked, chosen by what it reads.

The action decoder of a trained NanoVLA acts worse on an instruction vector it never saw, even when the model reads
the instruction right: with the shipped model, stacking said in held-out phrasing families succeeded about half the
time where the task head read the sentence right, against about 70 % for training phrasings, and such pushes 80 %
against 94 % (`docs/experiments/probes/probe_read_episodes.py`). Grounding keeps the instruction vector the
decoder sees on the training distribution: at the first chunk of a task the task head (``NanoVLA.predict_task_xy``)
reads, on the current frames, where the user's instruction asks to act (the named cube's x, y and its goal's), and
where each *candidate* instruction asks to act: one training phrasing per task the workcell's tasks can express
(every kind, cube and target). The candidate whose reading is nearest the user's is what the decoder reads for the
rest of the task. When no candidate reads within ``max_distance_m`` of the user's instruction, the user's own vector
is kept: a request the head cannot place among the known tasks is not forced onto one.

Candidates are training phrasings only (the first training template of each task); no held-out phrasing is used
anywhere. The reading needs the model's task head (``task_loss_weight > 0``) and runs in torch (fp32) whatever the
backend of the per-step path: one batched pass over the candidates per task (~0.2-0.5 s on a 2-core CPU).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from nanovla_ros.model.modeling_nanovla import NanoVLA, NanoVLAPolicy, policy_inputs
from nanovla_ros.tasks import CUBES, TEMPLATES, say, targets_of

MAX_DISTANCE_M = 0.06  # farther than any two distinct goals of one scene are apart, less than two cubes' spacing


def candidate_instructions() -> list[str]:
    """One training phrasing of every task the workcell's tasks can express: the first training template of each
    kind, for every cube and target (pick-and-place's held-out colour pairings included: they are tasks a user may
    ask; their sentences are training templates)."""
    return [say(TEMPLATES[kind][0][0], cube, target)
            for kind in TEMPLATES for cube in CUBES for target in targets_of(kind, cube)]


class TaskReader:
    """The task head of ``model`` (torch, fp32, CPU unless given a device), reading many instructions at once on one
    observation."""

    def __init__(self, model: NanoVLA, device: str = "cpu") -> None:
        if model.task_head is None:
            raise ValueError("grounding reads the task head: this model has none (trained with task_loss_weight = 0)")
        self.policy = NanoVLAPolicy(model.float().eval().to(device))
        self.device = device

    @property
    def config(self):
        return self.policy.config

    @torch.inference_mode()
    def read(self, image, state: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """(K, 4) metres: the named cube's x, y and its goal's for each of ``vectors`` (K, L), on one observation."""
        frames = policy_inputs(self.config, image, state, np.asarray(vectors[0], np.float32))
        pixels = self.policy.image_encoder.preprocess(torch.from_numpy(frames).to(self.device))
        features = self.policy.image_encoder.features(pixels)[None]  # (1, N, C, h, w)
        k = len(vectors)
        return self.policy.model.predict_task_xy(
            features.expand(k, *features.shape[1:]), torch.as_tensor(np.asarray(vectors, np.float32), device=self.device),
            torch.as_tensor(state, dtype=torch.float32, device=self.device)[None].expand(k, -1)).cpu().numpy()


def choose(user_read: np.ndarray, candidate_reads: np.ndarray, max_distance_m: float = MAX_DISTANCE_M) -> int | None:
    """Index of the candidate whose reading (named cube and goal, (K, 4)) is nearest ``user_read`` (4,): the larger
    of the cube's and the goal's distances, so that both must agree; None when even the nearest is farther than
    ``max_distance_m``."""
    cube = np.linalg.norm(candidate_reads[:, :2] - user_read[:2], axis=1)
    goal = np.linalg.norm(candidate_reads[:, 2:] - user_read[2:], axis=1)
    distance = np.maximum(cube, goal)
    best = int(np.argmin(distance))
    return best if distance[best] <= max_distance_m else None


class GroundedPolicy:
    """``policy`` (anything with ``predict_chunk`` and ``config``) reading, for each task, the candidate instruction
    that its task head places where it places the user's (``choose``), or the user's own vector when none is near.
    ``begin_task()`` starts a task (the next chunk grounds again); within one, an instruction is grounded once, on
    the frames of its first chunk. ``last`` records the latest choice (text or None, distance)."""

    def __init__(self, policy, reader: TaskReader, candidates: dict[str, np.ndarray] | None = None,
                 max_distance_m: float = MAX_DISTANCE_M) -> None:
        self.policy, self.reader, self.max_distance_m = policy, reader, max_distance_m
        self.texts: list[str] = []
        self.vectors: np.ndarray | None = None
        self._chosen: dict[bytes, np.ndarray] = {}
        self.last: dict = {}
        if candidates:
            self.set_candidates(candidates)

    @property
    def has_candidates(self) -> bool:
        return self.vectors is not None

    def set_candidates(self, candidates: dict[str, np.ndarray]) -> None:
        """The candidate instructions and their vectors (of the policy's language encoder). Until they are set the
        policy acts on each instruction's own vector."""
        if not candidates:
            raise ValueError("grounding needs candidate instructions and their vectors")
        self.texts = list(candidates)
        self.vectors = np.stack([np.asarray(candidates[t], np.float32) for t in self.texts])
        self._chosen.clear()

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    def begin_task(self) -> None:
        self._chosen.clear()
        if hasattr(self.policy, "begin_task"):
            self.policy.begin_task()

    def ground(self, image, state: np.ndarray, instruction_embedding: np.ndarray) -> np.ndarray:
        """The vector the decoder reads for ``instruction_embedding`` on this observation."""
        reads = self.reader.read(image, state, np.concatenate([instruction_embedding[None].astype(np.float32),
                                                               self.vectors]))
        index = choose(reads[0], reads[1:], self.max_distance_m)
        self.last = {"candidate": None if index is None else self.texts[index],
                     "user_read_m": reads[0].round(4).tolist()}
        return instruction_embedding if index is None else self.vectors[index]

    def predict_chunk(self, image, state, instruction_embedding):
        if self.vectors is None:  # not yet: its own vector, and grounded once the candidates come
            self.last = {"candidate": None, "reason": "no candidate vectors yet"}
            return self.policy.predict_chunk(image, state, instruction_embedding)
        key = hashlib.sha1(np.ascontiguousarray(instruction_embedding, np.float32).tobytes()).digest()
        if key not in self._chosen:
            self._chosen[key] = self.ground(image, state, instruction_embedding)
        return self.policy.predict_chunk(image, state, self._chosen[key])
