"""Instruction grounding (nanovla_ros.model.grounding): candidates, the choice, and a grounded policy's chunks."""
import numpy as np
import pytest
import torch

from nanovla_ros import phrasings
from nanovla_ros.model.configuration_nanovla import NanoVLAConfig
from nanovla_ros.model.grounding import GroundedPolicy, TaskReader, candidate_instructions, choose
from nanovla_ros.model.modeling_nanovla import NanoVLA, NanoVLAPolicy
from nanovla_ros.tasks import TEMPLATES, instruction_rows

TINY = dict(d_model=32, n_heads=4, ffn_dim=64, enc_layers=1, dec_layers=1, vae_layers=1, horizon=8,
            latent_dim=4, image_size=64, dropout=0.0, kl_weight=1.0, language_dim=16)


def test_candidates_are_training_templates_one_per_task_and_never_a_held_out_phrasing():
    candidates = candidate_instructions()
    assert len(candidates) == len(set(candidates)) == 9 + 9 + 3 + 6  # pick-and-place, push, touch, stack
    training_templates = {t for kind in TEMPLATES for t in TEMPLATES[kind][0]}
    rows = {text: kind for text, kind, _ in instruction_rows()}
    assert all(text in rows for text in candidates)
    held_out = {row[0] for row in phrasings.bank("heldout")} | {t.format(cube="", target="", direction="")
                                                                 for kind in TEMPLATES for t in TEMPLATES[kind][1]}
    assert not set(candidates) & held_out
    assert {t.split(" ")[0] for t in candidates} <= {t.split(" ")[0] for t in training_templates}


def test_the_choice_needs_both_the_cube_and_the_goal_near_and_refuses_a_far_reading():
    candidates = np.array([[0.20, 0.00, 0.25, 0.10],    # cube A to goal 1
                           [0.20, 0.00, 0.25, -0.10],   # cube A to goal 2
                           [0.30, 0.05, 0.25, 0.10]])   # cube B to goal 1
    assert choose(np.array([0.21, 0.01, 0.24, -0.09]), candidates) == 1
    assert choose(np.array([0.29, 0.04, 0.26, 0.09]), candidates) == 2
    assert choose(np.array([0.20, 0.00, 0.40, 0.30]), candidates) is None  # the goal matches nothing: keep its own
    assert choose(np.array([0.20, 0.00, 0.40, 0.30]), candidates, max_distance_m=1.0) is not None


def _trained_reader() -> tuple[NanoVLA, np.ndarray, np.ndarray]:
    """A tiny model whose task head has learned three instruction vectors' places on a real frame's features."""
    torch.manual_seed(0)
    model = NanoVLA(NanoVLAConfig(task_loss_weight=1.0, **TINY))
    places = torch.tensor([[0.2, 0.1, 0.25, -0.1], [0.15, -0.1, 0.2, 0.05], [0.3, 0.0, 0.3, 0.12]])
    model.set_normalization(np.zeros(6), np.ones(6), np.zeros(6), np.ones(6), task_mean=places.mean(0).numpy(),
                            task_std=places.std(0).numpy())
    vectors = torch.randn(3, 16) * 2
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    encoder = NanoVLAPolicy(model).image_encoder
    with torch.no_grad():
        features = encoder.features(encoder.preprocess(torch.from_numpy(frame[None])))[None]  # (1, 1, C, h, w)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    which = torch.arange(24) % 3
    for _ in range(200):
        _, loss = model(features[0].expand(24, -1, -1, -1), vectors[which], torch.zeros(24, 6), torch.zeros(24, 8, 6),
                        task_xy_m=places[which])
        optimizer.zero_grad()
        loss["loss"].backward()
        optimizer.step()
    return model.eval(), vectors.numpy(), frame


def test_a_grounded_policy_acts_on_the_candidate_its_head_places_with_the_instruction_once_per_task():
    model, vectors, frame = _trained_reader()
    reader = TaskReader(model)
    state = np.zeros(6, np.float32)
    reads = reader.read(frame, state, vectors)
    assert reads.shape == (3, 4)
    policy = NanoVLAPolicy(model)
    grounded = GroundedPolicy(policy, reader, {"first": vectors[0], "second": vectors[1]})
    # said otherwise: near the second candidate's vector, so the head reads it where it reads the second
    user = (vectors[1] + 0.5 * np.random.default_rng(1).normal(size=16)).astype(np.float32)
    chunk = grounded.predict_chunk(frame, state, user)
    assert grounded.last["candidate"] == "second"
    np.testing.assert_allclose(chunk, policy.predict_chunk(frame, state, vectors[1]), atol=1e-6)
    assert np.abs(chunk - policy.predict_chunk(frame, state, user)).max() > 1e-4  # not its own vector
    # the third instruction is placed where neither candidate is: it keeps its own vector
    grounded.begin_task()
    np.testing.assert_allclose(grounded.predict_chunk(frame, state, vectors[2]),
                               policy.predict_chunk(frame, state, vectors[2]), atol=1e-6)
    assert grounded.last["candidate"] is None
    # within a task the choice is made once: a later chunk of the same instruction reuses it
    grounded.begin_task()
    grounded.predict_chunk(frame, state, user)
    grounded.last = {}
    grounded.predict_chunk(frame, state, user)
    assert grounded.last == {}
    with pytest.raises(ValueError, match="task head"):
        TaskReader(NanoVLA(NanoVLAConfig(**TINY)))
