"""The learned pooling of a frozen encoder's token states (nanovla_ros.language.pooling), CPU, synthetic states."""
from __future__ import annotations

import json

import pytest
import torch

from nanovla_ros.language.encoders import ENCODER_SPECS, GEMMA_POOLING, encoder_id, masked_mean
from nanovla_ros.language.pooling import (
    ALL_LAYERS,
    AttentionPooling,
    fit_pooling,
    load_pooling,
    pooling_digest,
    save_pooling,
)


def test_an_unfitted_head_is_the_mean_of_its_views_and_reads_only_real_tokens():
    torch.manual_seed(0)
    hidden = tuple(torch.randn(3, 7, 16) for _ in range(5))  # embeddings + 4 layers
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    head = AttentionPooling((1, 4, ALL_LAYERS), 16)
    states = head.views(hidden)
    assert states.shape == (3, 7, 3, 16)
    torch.testing.assert_close(states[:, :, 2], torch.stack(hidden[1:]).mean(0))
    expected = masked_mean((hidden[1] + hidden[4] + torch.stack(hidden[1:]).mean(0)) / 3, mask)
    torch.testing.assert_close(head(states, mask), torch.nn.functional.normalize(expected, dim=-1))
    other = states.clone()
    other[0, 4:] = 100.0  # what stands in the padding does not matter
    torch.testing.assert_close(head(other, mask), head(states, mask))


def test_a_fitted_head_reads_what_the_mean_blurs():
    """Sentences whose task is told by one marked token among distractors: the plain mean of their states blurs
    it, the fitted attention finds the marked token (on sentences it was not fitted on)."""
    g = torch.Generator().manual_seed(0)
    n, t, d, tasks = 600, 8, 16, 4
    keys = torch.randn(tasks, d, generator=g)
    marker = torch.zeros(d)
    marker[0] = 6.0
    states = torch.randn(n, t, 1, d, generator=g)
    task = torch.randint(0, tasks, (n,), generator=g)
    where = torch.randint(0, t, (n,), generator=g)
    states[torch.arange(n), where, 0] = keys[task] + marker  # the marked token carries the task
    mask = torch.ones(n, t, dtype=torch.bool)
    targets = torch.nn.functional.one_hot(task, tasks).float() * 3.0
    fitted = torch.arange(400)

    def accuracy(head):
        pooled = head(states[400:], mask[400:])
        nearest = (pooled @ torch.nn.functional.normalize(keys + marker, dim=-1).T).argmax(1)
        return (nearest == task[400:]).float().mean().item()

    plain = AttentionPooling((0,), d)
    head = fit_pooling(states, mask, fitted, targets[fitted], views=(0,), epochs=200)
    assert accuracy(plain) < 0.75 and accuracy(head) > 0.95


def test_a_head_round_trips_and_its_digest_names_its_weights(tmp_path):
    head = AttentionPooling((1, ALL_LAYERS), 8, queries=2)
    with torch.no_grad():
        head.queries.normal_()
    path = save_pooling(head, tmp_path / "p.safetensors", {"fit": "test"})
    back = load_pooling(path)
    assert back.views_ == (1, ALL_LAYERS) and back.out_dim == 16
    states, mask = torch.randn(2, 5, 2, 8), torch.ones(2, 5, dtype=torch.bool)
    torch.testing.assert_close(back(states, mask), head(states, mask))
    with torch.no_grad():
        head.queries.add_(1.0)
    assert pooling_digest(save_pooling(head, tmp_path / "q.safetensors", {"fit": "test"})) != pooling_digest(path)


def test_the_large_encoder_reads_through_the_shipped_pooling():
    """The shipped head fits Gemma-3-270M (18 layers, width 640, what NanoVLA-L reads) and names the large
    encoder's id, so tables and checkpoints of another pooling are told apart."""
    from safetensors import safe_open

    head = load_pooling(GEMMA_POOLING)
    assert head.out_dim == ENCODER_SPECS["large"].dim
    assert all(v == ALL_LAYERS or 1 <= v <= 18 for v in head.views_)
    assert encoder_id("large").endswith(f"/learned-pool-{pooling_digest(GEMMA_POOLING)}-nobos-l2")
    with safe_open(str(GEMMA_POOLING), "pt") as f:
        record = json.loads(f.metadata()["record"])
    assert record["model"] == "gemma-3-270m" and "training families" in record["fit"]
    with pytest.raises(ValueError, match="pooling head"):
        from nanovla_ros.language.encoders import HuggingFaceEncoder

        HuggingFaceEncoder(None, "x", True, layers="learned")
