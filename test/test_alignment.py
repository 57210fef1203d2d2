"""Phrasing alignment (`nanovla align`): the instruction projection refitted so that the phrasing bank's
training-family sentences give their task's template token; every other weight kept."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from nanovla_ros import phrasings
from nanovla_ros.configuration import ConfigError
from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
from nanovla_ros.model.modeling_nanovla import NanoVLA, language_statistics
from nanovla_ros.training.alignment import (
    align_phrasings,
    alignment_rows,
    instruction_tokens,
    task_template_vectors,
    training_templates,
)

DIM = 64


def _table(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str, str]]]:
    """Vectors as an encoder gives them: the task's meaning (a direction per task) plus how it is said (a direction
    per family, all of them within one 8-dimensional "style" subspace) plus a little noise; the templates are one
    more family."""
    tasks, _ = task_template_vectors({t: np.zeros(1) for k, c, g in _tasks() for t in training_templates(k, c, g)})
    meaning = {task: rng.normal(size=DIM) for task in tasks}
    style_basis = np.linalg.qr(rng.normal(size=(DIM, 8)))[0]  # (DIM, 8)
    style: dict[str, np.ndarray] = {}
    table, task_of = {}, {}

    def add(text: str, task: tuple[str, str, str], family: str) -> None:
        if family not in style:
            style[family] = 8.0 * style_basis @ rng.normal(size=8)
        table[text] = meaning[task] + style[family] + 0.01 * rng.normal(size=DIM)
        task_of[text] = task

    for task in tasks:
        for text in training_templates(*task):
            add(text, task, "templates")
    for split in ("train", "heldout"):
        for text, kind, cube, target, family in phrasings.bank(split):
            add(text, (kind, cube, target), family)
    return table, task_of


def _tasks():
    from nanovla_ros.tasks import CUBES, TEMPLATES, targets_of

    return [(k, c, g) for k in TEMPLATES for c in CUBES for g in targets_of(k, c)]


def _nearest_task_rate(model, table, task_of, texts) -> float:
    tasks, centres = task_template_vectors(table)
    c, own = instruction_tokens(model, centres), instruction_tokens(model, np.stack([table[t] for t in texts]))
    nearest = np.argmin(((own[:, None] - c[None]) ** 2).sum(-1), axis=1)
    return float(np.mean([tasks[n] == task_of[t] for n, t in zip(nearest, texts, strict=True)]))


def test_alignment_sends_unseen_families_to_their_tasks_token_and_keeps_every_other_weight(monkeypatch):
    from nanovla_ros.training import alignment

    rng = np.random.default_rng(0)
    table, task_of = _table(rng)
    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(language_dim=DIM, language_encoder_id="enc", d_model=32, n_heads=4, ffn_dim=64,
                                  enc_layers=1, dec_layers=1, vae_layers=1, horizon=8, latent_dim=8, image_size=64))
    templates = [t for k, c, g in _tasks() for t in training_templates(k, c, g)]
    model.set_normalization(None, None, None, None, *language_statistics(np.stack([table[t] for t in templates])))
    model.eval()
    heldout = [row[0] for row in phrasings.bank("heldout")]
    before = _nearest_task_rate(model, table, task_of, heldout)
    monkeypatch.setattr(alignment, "TEMPLATE_REPEATS", 0)  # the bank's sentences alone
    plain = align_phrasings(model, table, ridge=0.1)
    assert before < 0.5 and _nearest_task_rate(plain, table, task_of, heldout) > 0.95
    assert _nearest_task_rate(plain, table, task_of, templates) == 1.0
    kept = {k for k in model.state_dict() if not k.startswith("language_")}
    assert kept and all(torch.equal(model.state_dict()[k], plain.state_dict()[k]) for k in kept)
    # the templates' own rows keep what the model was trained on closer to where it was, at some cost to unseen
    # families in this made-up geometry (none measured on the real bank: docs/data_loop.md)
    monkeypatch.setattr(alignment, "TEMPLATE_REPEATS", 20)
    keeping = align_phrasings(model, table, ridge=0.1)
    original = instruction_tokens(model, [table[t] for t in templates])
    drift = {name: np.abs(instruction_tokens(m, [table[t] for t in templates]) - original).mean()
             for name, m in (("plain", plain), ("keeping", keeping))}
    assert drift["keeping"] < 0.8 * drift["plain"], drift
    assert _nearest_task_rate(keeping, table, task_of, heldout) > before
    # the fit never reads a held-out family's sentence
    sentences, _ = alignment_rows(table)
    held_rows = {tuple(np.round(table[t], 6)) for t in heldout}
    assert not held_rows & {tuple(np.round(v, 6)) for v in sentences}


def test_alignment_needs_the_bank_in_the_table():
    rng = np.random.default_rng(0)
    table, _ = _table(rng)
    some = next(row[0] for row in phrasings.bank("train"))
    del table[some]
    with pytest.raises(ConfigError, match="phrasing-bank sentences"):
        alignment_rows(table)


def test_nanovla_align_chooses_the_ridge_on_training_cores_and_writes_a_self_describing_checkpoint(tmp_path,
                                                                                                   monkeypatch):
    """`nanovla align CKPT OUT`: the ridge comes from folds of training *cores* left out of the fit (never from
    the held-out families); the written checkpoint says how it was aligned and keeps the h its source declares."""
    from nanovla_ros.model.checkpoint import load_checkpoint, read_metadata, save_checkpoint
    from nanovla_ros.model.feature_cache import write_instruction_table
    from nanovla_ros.training import alignment
    from nanovla_ros.training.alignment import RIDGES, align_checkpoint, cross_validate

    monkeypatch.setattr(alignment, "TEMPLATE_REPEATS", 0)  # this made-up geometry: the bank's sentences alone
    rng = np.random.default_rng(0)
    table, _ = _table(rng)
    write_instruction_table(tmp_path, "enc", sorted(table), np.stack([table[t] for t in sorted(table)]))
    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(language_dim=DIM, language_encoder_id="enc", d_model=32, n_heads=4, ffn_dim=64,
                                  enc_layers=1, dec_layers=1, vae_layers=1, horizon=8, latent_dim=8, image_size=64))
    source = save_checkpoint(model, tmp_path / "s.safetensors", {"step": 7, "execute_steps": 4})
    scores = cross_validate(model, table, [0.1, 1000.0])
    assert scores[0.1]["right"] > 0.9 > scores[1000.0]["right"]  # a ridge that cannot fit does worse on left-out cores
    path, ridge = align_checkpoint(source, tmp_path / "a.safetensors", tmp_path)
    assert ridge in RIDGES
    aligned, extra = load_checkpoint(path)
    assert extra["phrasing_alignment"]["ridge"] == ridge and extra["execute_steps"] == 4
    assert extra["step"] == 7 and extra["phrasing_alignment"]["source"] == "s.safetensors"  # the trained model's
    assert read_metadata(path)  # record stays, the alignment beside it, readable without loading
    assert aligned.config.language_encoder_id == "enc"
    assert "previous" not in extra["phrasing_alignment"]
    again, _ = align_checkpoint(path, tmp_path / "b.safetensors", tmp_path, ridge=0.1)  # aligned twice: both recorded
    _, extra = load_checkpoint(again)
    assert extra["phrasing_alignment"]["ridge"] == 0.1 and extra["phrasing_alignment"]["previous"]["ridge"] == ridge


def test_rule_folds_leave_out_cores_styles_and_nouns_as_the_held_out_split_does():
    """Cross-validation `by="rules"`: fold k leaves out whole cores, whole styles and a training noun of the cubes
    and of the targets that the templates do not use; a fitted sentence uses none of them, and each training
    sentence is scored in some fold."""
    from nanovla_ros import phrasings
    from nanovla_ros.training.alignment import fold_rule

    rows = phrasings.bank("train")
    by_cores, by_rules = fold_rule(by="cores"), fold_rule(by="rules")
    for k in range(3):
        cube_noun, square_noun = "box", ("tile", "patch", "zone")[k]  # the nouns the templates do not use
        fitted = [r for r in rows if not by_rules(r[0], r[4], k)]
        assert fitted and not any(re.search(rf"\b({cube_noun}|{square_noun})\b", r[0]) for r in fitted)
        assert all(by_rules(r[0], r[4], k) for r in rows if by_cores(r[0], r[4], k))  # rules leave out more
        assert any(by_rules(r[0], r[4], k) and not by_cores(r[0], r[4], k) for r in rows)
    assert all(any(by_rules(r[0], r[4], k) for k in range(3)) for r in rows[::50])
    with pytest.raises(ValueError, match="cores"):
        fold_rule(by="words")
