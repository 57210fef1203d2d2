"""Phrasing alignment: refit a checkpoint's instruction projection so that the phrasing bank's training-family
sentences give the instruction token its training templates give (no images, no simulator: seconds on a CPU).

A model trained on the workcell's templates acts on the *token* its instruction projection makes of an
instruction vector. Each task (kind, cube, target) has a *task vector*: the mean of the instruction vectors of its
training templates (``nanovla_ros.tasks``: training phrasings, training-only ones included), whose token is the
mean of their tokens (the projection is affine). The refit is the ridge regression of
``NanoVLA.with_other_language_encoder`` with the same encoder on both sides: every training-family sentence of the
bank and every training template is a row, its target the task vector of its task, so that a sentence said in a
way the templates never said lands where the model already acts on the task; each training template is also
``TEMPLATE_REPEATS`` rows aimed at its own token, so that what the model was trained on stays where it was. Every
other weight is kept. Held-out families (``phrasings.bank("heldout")``) are never rows. The ridge is chosen by
leaving cores, styles and nouns of the training families out of the fit as the held-out split is made
(``cross_validate(by="rules")``).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nanovla_ros import phrasings
from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.modeling_nanovla import NanoVLA
from nanovla_ros.tasks import CUBES, TEMPLATES, TRAINING_ONLY_TEMPLATES, say, targets_of

Task = tuple[str, str, str]  # kind, cube, target
Keep = Callable[[str, str], bool]  # (bank sentence, its family id) -> whether it is a row of the fit
RIDGES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  # what `choose_ridge` tries
# Rows of each training template kept at its own token: the templates' tokens then move by ~0.17 of the distance
# between neighbouring tasks' tokens instead of ~0.4, at almost no cost to the bank's sentences
TEMPLATE_REPEATS = 20


def training_templates(kind: str, cube: str, target: str) -> list[str]:
    """The workcell's training phrasings (the held-out paraphrases excluded) of one task."""
    return [say(t, cube, target) for t in TEMPLATES[kind][0] + TRAINING_ONLY_TEMPLATES[kind]]


def task_template_vectors(table: dict[str, np.ndarray],
                          anchors: dict[str, str] | None = None) -> tuple[list[Task], np.ndarray]:
    """Every task of the workcell (both colour splits) and its task vector (T, L) in ``table`` (text -> vector):
    the vector of its kind's anchor template (``anchors``: kind -> a training template) said for the task, or, for a
    kind without one, the mean of its training templates' vectors."""
    anchors = anchors or {}
    tasks = [(kind, cube, target) for kind in TEMPLATES for cube in CUBES
             for target in targets_of(kind, cube)]
    missing = [t for k, c, g in tasks for t in training_templates(k, c, g) if t not in table]
    if missing:
        raise ConfigError(f"{len(missing)} training instructions (e.g. {missing[0]!r}) have no vector in the table: "
                          "regenerate it (nanovla_ros.model.feature_cache.write_instruction_tables)")
    for kind, template in anchors.items():
        if template not in TEMPLATES[kind][0] + TRAINING_ONLY_TEMPLATES[kind]:
            raise ConfigError(f"anchor {template!r} is not a training template of {kind!r}")
    return tasks, np.stack([table[say(anchors[task[0]], *task[1:])] if task[0] in anchors else
                            np.mean([table[t] for t in training_templates(*task)], axis=0) for task in tasks])


def alignment_rows(table: dict[str, np.ndarray], keep: Keep | None = None,
                   reading: dict[str, np.ndarray] | None = None,
                   anchors: dict[str, str] | None = None,
                   template_repeats: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(sentence vectors (N, L'), their task vectors (N, L)): the bank's training-family sentences (of
    which ``keep(text, family id)`` is true only, if given) and the training templates, each paired with its task's vector in ``table``;
    the sentences' vectors from ``reading`` (another encoder's table, L') if given, else from ``table``."""
    tasks, centres = task_template_vectors(table, anchors)
    reading = table if reading is None else reading
    index = {task: i for i, task in enumerate(tasks)}
    rows = [(text, (kind, cube, target)) for text, kind, cube, target, family in phrasings.bank("train")
            if keep is None or keep(text, family)]
    rows += [(text, task) for task in tasks for text in training_templates(*task)]
    missing = [text for text, _ in rows if text not in reading]
    if missing:
        raise ConfigError(f"{len(missing)} phrasing-bank sentences (e.g. {missing[0]!r}) have no vector in the table: "
                          "regenerate it with the bank's sentences (phrasings.all_sentences())")
    sentences = [reading[text] for text, _ in rows]
    targets = [centres[index[task]] for _, task in rows]
    # template_repeats > 0: the training templates also keep the tokens the model was trained on (each its own
    # vector's), as that many rows each
    own = [text for task in tasks for text in training_templates(*task)] * template_repeats
    return np.stack(sentences + [reading[t] for t in own]), np.stack(targets + [table[t] for t in own])


def align_phrasings(model: NanoVLA, table: dict[str, np.ndarray], ridge: float = 0.1,
                    keep: Keep | None = None, reading: tuple[str, dict[str, np.ndarray]] | None = None,
                    anchors: dict[str, str] | None = None) -> NanoVLA:
    """``model`` with its instruction projection refitted on ``alignment_rows`` (``ridge`` per row, on
    standardised vectors, as ``with_other_language_encoder``); in eval mode. ``table``: the model's own encoder's
    vectors; ``reading``: (encoder id, its table) of another encoder the aligned model is to read instead (e.g.
    NanoVLA-S aligned into an L that reads Gemma-3-270M), else the model's own."""
    encoder_id, vectors = reading if reading is not None else (model.config.language_encoder_id, None)
    sentences, targets = alignment_rows(table, keep, vectors, anchors, TEMPLATE_REPEATS)
    return model.with_other_language_encoder(encoder_id, sentences, targets, ridge=ridge)


def instruction_tokens(model: NanoVLA, vectors: np.ndarray) -> np.ndarray:
    """The instruction tokens (N, d) the model reads from instruction vectors (N, L)."""
    import torch

    with torch.no_grad():
        v = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
        return model.language_proj((v - model.language_mean) / model.language_std).numpy()


def task_distances(model: NanoVLA, table: dict[str, np.ndarray], rows: list[tuple],
                   anchors: dict[str, str] | None = None) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """The tasks (kind, cube, target), their tokens (T, d), and the squared distance of each bank row's token to
    each task's (N, T)."""
    tasks, centres = task_template_vectors(table, anchors)
    centre_tokens = instruction_tokens(model, centres)
    own = instruction_tokens(model, np.stack([table[r[0]] for r in rows]))
    return tasks, centre_tokens, ((own[:, None] - centre_tokens[None]) ** 2).sum(-1)


def token_scores(model: NanoVLA, table: dict[str, np.ndarray], rows: list[tuple],
                 anchors: dict[str, str] | None = None) -> dict[str, float]:
    """Of bank ``rows`` (text, kind, cube, target, ...): the fraction whose token lies nearest their own task's
    token among all tasks' ("right"), and the median distance to their task's token over that token's distance
    to the nearest other task's ("off": below 0.5 the sentence is well inside its task)."""
    tasks, centre_tokens, distances = task_distances(model, table, rows, anchors)
    own_task = np.array([tasks.index((r[1], r[2], r[3])) for r in rows])
    gaps = np.sqrt(((centre_tokens[:, None] - centre_tokens[None]) ** 2).sum(-1)) + np.diag(np.full(len(tasks), np.inf))
    off = np.sqrt(distances[np.arange(len(rows)), own_task]) / gaps.min(axis=1)[own_task]
    return {"right": float(np.mean(distances.argmin(axis=1) == own_task)), "off": float(np.median(off))}


def fold_rule(folds: int = 3, seed: int = 0, by: str = "cores") -> Callable[[str, str, int], bool]:
    """``left_out(sentence, family id, k)``: whether a training-family sentence of the bank is left out of fold k's
    fit (and scored) in ``cross_validate``.

    ``by="cores"``: whole core phrases of the training families leave together (every style of a core).
    ``by="rules"``: the way the held-out split is made, within the training families: fold k leaves out a share of
    the cores, a share of the styles, one training noun for the cubes and one for the targets (of those the
    templates do not use); a sentence that uses any of them is left out."""
    if by not in ("cores", "rules"):
        raise ValueError(f"by={by!r} must be 'cores' or 'rules'")
    train = [f for f in phrasings.families() if f.split == "train"]
    rng = np.random.default_rng(seed)
    cores = sorted({(f.kind, f.core) for f in train})
    fold_of_core = dict(zip(cores, rng.permutation(len(cores)) % folds, strict=True))
    styles = sorted({_style(f) for f in train})
    fold_of_style = dict(zip(styles, rng.permutation(len(styles)) % folds, strict=True))
    family_of = {f.id: f for f in train}
    # nouns the workcell's templates use ("cube", "square") are always fitted (the templates are rows of every fit),
    # so only the others can be left out
    template_words = {w for kind in TEMPLATES for t in TEMPLATES[kind][0] + TRAINING_ONLY_TEMPLATES[kind]
                      for w in re.findall(r"[a-z]+", t)}
    noun_groups = tuple(tuple(n for n in group if n not in template_words)
                        for group in (phrasings.CUBE_NOUNS[0], phrasings.SQUARE_NOUNS[0]))

    def left_out(text: str, family_id: str, k: int) -> bool:
        family = family_of[family_id]
        if fold_of_core[(family.kind, family.core)] == k:
            return True
        if by == "cores":
            return False
        words = [group[k % len(group)] for group in noun_groups]
        return fold_of_style[_style(family)] == k or any(re.search(rf"\b{w}\b", text) for w in words)

    return left_out


def _style(family: phrasings.Family) -> str:
    """A family's style (its pattern with the core replaced by {x}; a terse form's is "terse")."""
    return family.pattern.replace(family.core, "{x}") if family.core != family.pattern else "terse"


def cross_validate(model: NanoVLA, table: dict[str, np.ndarray], ridges: list[float], folds: int = 3,
                   seed: int = 0, reading: tuple[str, dict[str, np.ndarray]] | None = None,
                   anchors: dict[str, str] | None = None, by: str = "cores") -> dict[float, dict[str, float]]:
    """Per ridge, ``token_scores`` of training-family sentences left out of the fit (``fold_rule(folds, seed,
    by)``), averaged over the folds; the held-out families are not read. For choosing without the held-out split:
    ``by="rules"`` shows a pooling or ridge that only does well where every word was fitted, ``by="cores"`` less so."""
    left_out = fold_rule(folds, seed, by)
    rows = phrasings.bank("train")
    out = {}
    for ridge in ridges:
        scores = []
        for k in range(folds):
            fitted = align_phrasings(model, table, ridge, lambda text, family, k=k: not left_out(text, family, k),
                                     reading, anchors)
            scores.append(token_scores(fitted, reading[1] if reading else table,
                                       [r for r in rows if left_out(r[0], r[4], k)], anchors))
        out[ridge] = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
    return out


def choose_ridge(model: NanoVLA, table: dict[str, np.ndarray], ridges: tuple[float, ...] = RIDGES,
                 reading: tuple[str, dict[str, np.ndarray]] | None = None,
                 anchors: dict[str, str] | None = None) -> float:
    """The ridge of ``RIDGES`` with the most left-out training-family sentences nearest their task (then the
    smallest "off"), by ``cross_validate(by="rules")``."""
    scores = cross_validate(model, table, list(ridges), reading=reading, anchors=anchors, by="rules")
    return max(ridges, key=lambda r: (round(scores[r]["right"], 3), -scores[r]["off"]))


def align_checkpoint(source: str | Path, destination: str | Path, table_dir: str | Path,
                     ridge: float | None = None, reading_encoder_id: str | None = None,
                     anchors: dict[str, str] | None = None) -> tuple[Path, float]:
    """``source`` aligned (``align_phrasings``) with the instruction tables in ``table_dir`` (its own encoder's,
    and ``reading_encoder_id``'s if the aligned model is to read another encoder), saved fp16 at
    ``destination``; the checkpoint records the alignment (ridge, rows) beside its lineage and keeps the h it
    declares. ``ridge`` None: ``choose_ridge``'s. Returns the path and the ridge."""
    import torch

    from nanovla_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from nanovla_ros.model.feature_cache import read_instruction_table

    model, extra = load_checkpoint(source)
    texts, vectors = read_instruction_table(table_dir, model.config.language_encoder_id)
    table = dict(zip(texts, vectors, strict=True))
    reading = None
    if reading_encoder_id and reading_encoder_id != model.config.language_encoder_id:
        reading = (reading_encoder_id, dict(zip(*read_instruction_table(table_dir, reading_encoder_id), strict=True)))
    ridge = choose_ridge(model, table, reading=reading, anchors=anchors) if ridge is None else ridge
    aligned = align_phrasings(model, table, ridge, reading=reading, anchors=anchors)
    # the trained model's record stays (its training, lineage and declared h): only its instruction projection
    # changed, and how is recorded beside it
    record = {**extra, "phrasing_alignment": {
        "source": Path(source).name, "ridge": ridge, "template_repeats": TEMPLATE_REPEATS,
        "rows": len(alignment_rows(table, anchors=anchors, template_repeats=TEMPLATE_REPEATS)[0]),
        "from_encoder": model.config.language_encoder_id, "anchors": anchors or {},
        "families": len({row[4] for row in phrasings.bank("train")}),
        # an alignment of an aligned checkpoint (e.g. into another pooling): the earlier one's record, kept
        **({"previous": extra["phrasing_alignment"]} if "phrasing_alignment" in extra else {})}}
    return save_checkpoint(aligned, destination, record, dtype=torch.float16), ridge
