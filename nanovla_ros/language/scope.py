"""Out-of-scope refusal: is an instruction something the policy was trained to do, with objects the workcell has?

Two checks, both needed (no ROS, no torch):

1. **Which tasks it could be**, from the instruction's small-encoder vector: its cosine similarity to the centroid
   of each training phrasing family (``nanovla_ros.phrasings``) gives, per task kind, the best match; every kind
   within ``margin`` of the best one is a candidate.
2. **Grounding**, from the words: it names a cube the workcell has (red, green, blue) and its colours fit a
   candidate kind (pick-and-place: one cube and one square; stacking: two cubes; touch and push: one cube, no
   square), and every destination it names ("in the oven", "at the wall") is something the workcell has (a
   coloured object or a direction).

The vectors place an instruction among the tasks (paraphrases the bank never had land near the right one); the
words catch what vectors blur: "put the red cube in the fridge" is close to a pick-and-place, but no fridge exists.
A refusal says which check failed and what the arm can do instead. The centroids, their kinds, the encoder they
come from and the calibrated margin are one safetensors file (``ScopeModel.save``), made by ``nanovla fit-scope``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanovla_ros import phrasings
from nanovla_ros.configuration import ConfigError
from nanovla_ros.tasks import CUBES, DIRECTION_WORDS, KINDS, SQUARES

# A destination is a preposition followed by a determiner ("into the microwave"); "to" before a verb is not one.
_PREPOSITIONS = {"in", "into", "inside", "onto", "on", "at", "to", "towards", "toward", "under", "behind", "beside",
                 "near", "over", "through", "across"}
_DETERMINERS = {"the", "a", "an", "my", "your", "this", "that", "his", "her", "our", "their", "some"}
# Words that ground a destination besides the colours: directions and where a stack goes.
_PLACE_WORDS = set(DIRECTION_WORDS) | {"away", "further", "side", "leftwards", "rightwards", "top", "table"}
FORMAT = "nanovla-scope/1"


@dataclass(frozen=True)
class ScopeDecision:
    in_scope: bool
    reason: str  # why not, or the candidate kinds
    kinds: tuple[str, ...]  # the task kinds it could be


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def colours_fit(words: list[str], kind: str) -> bool:
    """Whether the colours named fit a task of ``kind``."""
    cubes = [w for w in words if w in CUBES]
    squares = [w for w in words if w in SQUARES]
    if kind == "pick_place":
        return len(set(cubes)) == 1 and len(set(squares)) == 1
    if kind == "stack":
        return len(set(cubes)) == 2 and not squares
    return len(set(cubes)) == 1 and not squares


def unknown_destination(words: list[str]) -> str | None:
    """The first destination phrase that names nothing the workcell has ("in the oven"), or None."""
    known = set(CUBES) | set(SQUARES) | _PLACE_WORDS
    for i, word in enumerate(words):
        if word in _PREPOSITIONS and i + 1 < len(words) and words[i + 1] in _DETERMINERS:
            phrase = words[i + 2:i + 5]
            if phrase and not set(phrase) & known:
                return " ".join(words[i:i + 4])
    return None


class ScopeModel:
    def __init__(self, centroids: np.ndarray, kinds: list[str], encoder_id: str, margin: float) -> None:
        """``centroids`` (F, D): unit vectors, one per training phrasing family; ``kinds`` (F,) their task kinds."""
        centroids = np.asarray(centroids, np.float32)
        if centroids.ndim != 2 or len(kinds) != centroids.shape[0]:
            raise ConfigError(f"scope model: {centroids.shape} centroids and {len(kinds)} kinds do not pair")
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ConfigError(f"scope model names task kinds {unknown} the workcell does not have")
        self.centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        self.kinds = np.asarray(kinds)
        self.encoder_id = encoder_id
        self.margin = float(margin)

    @classmethod
    def fit(cls, vectors: np.ndarray, kinds: list[str], families: list[str], encoder_id: str,
            margin: float) -> ScopeModel:
        """Centroids of each family's training sentences' vectors ((N, D), with each sentence's kind and family)."""
        vectors, families = np.asarray(vectors, np.float32), np.asarray(families)
        names = sorted(set(families.tolist()))
        centroids = np.stack([vectors[families == f].mean(0) for f in names])  # (F, D)
        family_kinds = [kinds[int(np.flatnonzero(families == f)[0])] for f in names]
        return cls(centroids, family_kinds, encoder_id, margin)

    def candidate_kinds(self, vector: np.ndarray) -> tuple[str, ...]:
        v = np.asarray(vector, np.float32).reshape(-1)
        v = v / (np.linalg.norm(v) or 1.0)
        similarity = self.centroids @ v  # (F,)
        best = {k: float(similarity[self.kinds == k].max()) for k in KINDS if np.any(self.kinds == k)}
        top = max(best.values())
        return tuple(k for k, s in sorted(best.items(), key=lambda kv: -kv[1]) if s >= top - self.margin)

    def check(self, text: str, vector: np.ndarray) -> ScopeDecision:
        """Whether ``text`` (normalised) with its small-encoder ``vector`` is in scope, and why not."""
        words = _words(text)
        kinds = self.candidate_kinds(vector)
        if not set(words) & set(CUBES):
            return ScopeDecision(False, f"this arm can only move the {', '.join(CUBES)} cubes and the instruction "
                                        f"names none of them; say which cube, e.g. 'put the red cube in the yellow "
                                        f"square'", kinds)
        where = unknown_destination(words)
        if where:
            return ScopeDecision(False, f"'{where}' is not in this workcell: it has the {', '.join(SQUARES)} squares, "
                                        f"the {', '.join(CUBES)} cubes and the table (push left, right or away)",
                                 kinds)
        fitting = tuple(k for k in kinds if colours_fit(words, k))
        if not fitting:
            return ScopeDecision(False, f"read as {' or '.join(k.replace('_', '-') for k in kinds)}, but the "
                                        "colours named do not fit it (pick-and-place: a cube and a square; stacking: "
                                        "two cubes; touch and push: one cube)", kinds)
        return ScopeDecision(True, f"in scope: {' or '.join(fitting)}", fitting)

    # ------------------------------------------------------------------ file
    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"centroids": self.centroids.astype(np.float16)}, str(path), metadata={
            "format": FORMAT, "encoder_id": self.encoder_id, "margin": repr(self.margin),
            "kinds": json.dumps(self.kinds.tolist())})
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScopeModel:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ConfigError(f"{path} is not a scope file (format {meta.get('format')!r}, expected {FORMAT})")
                centroids = f.get_tensor("centroids").astype(np.float32)
        except (OSError, ValueError, SafetensorError) as error:  # missing or damaged file
            raise ConfigError(f"cannot read the scope file {str(path)!r}: {error}") from error
        return cls(centroids, json.loads(meta["kinds"]), meta["encoder_id"], float(meta["margin"]))


MARGINS = (0.0, 0.02, 0.05, 0.08, 0.12, 0.16, 0.2)


def fit_and_measure(encode, encoder_id: str, margins: tuple[float, ...] = MARGINS) -> tuple[ScopeModel, dict]:
    """Fit a scope model with ``encode`` (list of normalised texts -> (N, D) vectors of the small encoder) and
    measure it.

    Centroids: the training families' sentences (``phrasings.bank("train")``). The margin: the largest of
    ``margins`` that refuses at most 1 % of other sentences of the training families (another seed) and at least
    95 % of ``OUT_OF_SCOPE_CALIBRATION``. Then, with that margin and never to choose it: the refusal rates on the
    held-out families and on ``OUT_OF_SCOPE_HELDOUT``. Returns the model and the rates."""
    from nanovla_ros.language.text import normalise_instruction

    def vectors(texts):
        return np.asarray(encode([normalise_instruction(t) for t in texts]), np.float32)

    train = phrasings.bank("train", per_family=1, seed=0)
    model = ScopeModel.fit(vectors([r[0] for r in train]), [r[1] for r in train], [r[4] for r in train],
                           encoder_id, 0.0)
    sets = {"training families": [r[0] for r in phrasings.bank("train", per_family=1, seed=1)],
            "out of scope (calibration)": list(phrasings.OUT_OF_SCOPE_CALIBRATION),
            "held-out families": [r[0] for r in phrasings.bank("heldout", per_family=1, seed=0)],
            "out of scope (held out)": list(phrasings.OUT_OF_SCOPE_HELDOUT)}
    encoded = {name: vectors(texts) for name, texts in sets.items()}

    def refused(name: str) -> float:
        texts = [normalise_instruction(t) for t in sets[name]]
        return float(np.mean([not model.check(t, v).in_scope for t, v in zip(texts, encoded[name], strict=True)]))

    chosen = None
    for margin in margins:
        model.margin = margin
        if refused("training families") <= 0.01 and refused("out of scope (calibration)") >= 0.95:
            chosen = margin
    if chosen is None:
        raise ConfigError(f"no margin of {list(margins)} refuses <= 1 % of the training families and >= 95 % of the "
                          "out-of-scope calibration requests")
    model.margin = chosen
    rates = {name: {"refused": refused(name), "n": len(texts)} for name, texts in sets.items()}
    return model, {"margin": chosen, "rates": rates}
