"""A learned pooling of a frozen language encoder's token states (no ROS).

A fixed pooling (the mean of a layer's tokens) is what the small encoder reads well and the large one does not:
Gemma-3-270M's mean over all layers lands 78.9 % of the phrasing bank's held-out-family sentences nearest their
own task, MiniLM's first + last layers 93.9 % (`scripts/eval/probe_pooling.py`). ``AttentionPooling`` is a few
hundred weights on top of the frozen encoder: a softmax mix of some of its layers' token states, then attention
pooling with K learned queries over the sentence's real tokens (zero queries: the plain mean), the K pooled vectors
unit length, side by side. It is fitted on the bank's training families and the workcell's training templates
(``fit_pooling``: the pooled vector, through a linear map, regressed onto each sentence's task token), chosen by
the rule folds, never on held-out families (`scripts/eval/probe_learned_pooling.py`).

The fitted head ships as a small safetensors file beside the checkpoints; its digest is part of the encoder id, so
cached tables and checkpoints made with another pooling are told apart.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

ALL_LAYERS = "all"  # a view: the mean over every layer (hidden_states[1:]), as the fixed "all" pooling reads


class AttentionPooling(nn.Module):
    """Hidden states of a frozen encoder -> (B, K * D): ``views`` (layer indices into ``hidden_states``, or
    ``ALL_LAYERS``) mixed by a learned softmax, then K attention poolings over the tokens of ``mask``."""

    def __init__(self, views: tuple[int | str, ...], dim: int, queries: int = 1) -> None:
        super().__init__()
        self.views_ = tuple(v if v == ALL_LAYERS else int(v) for v in views)
        self.mix = nn.Parameter(torch.zeros(len(views)))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.queries = nn.Parameter(torch.zeros(queries, dim))  # zero: every query starts as the plain mean

    @property
    def out_dim(self) -> int:
        return self.queries.shape[0] * self.queries.shape[1]

    def views(self, hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(B, T, V, D): the token states of each view."""
        picked = [torch.stack(hidden_states[1:]).mean(dim=0) if v == ALL_LAYERS else hidden_states[v]
                  for v in self.views_]
        return torch.stack(picked, dim=2)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``states`` (B, T, V, D), ``mask`` (B, T) bool (the tokens pooled) -> (B, K * D)."""
        x = (states * self.mix.softmax(0)[None, None, :, None]).sum(2)  # (B, T, D)
        scores = torch.einsum("btd,kd->bkt", self.norm(x), self.queries) / x.shape[-1] ** 0.5
        weights = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)  # (B, K, T)
        pooled = nn.functional.normalize(torch.einsum("bkt,btd->bkd", weights, x), dim=-1)
        return pooled.flatten(1)


def fit_pooling(states: torch.Tensor, mask: torch.Tensor, index: torch.Tensor, targets: torch.Tensor,
                views: tuple[int | str, ...], queries: int = 1, weight_decay: float = 0.01, epochs: int = 20,
                seed: int = 0) -> AttentionPooling:
    """A pooling fitted with a linear map (K * D -> d, then dropped) so that sentence ``index[i]`` of ``states``
    (N, T, V, D; any float dtype) with ``mask`` (N, T) lands on ``targets[i]`` (d,) (AdamW, batches of 256, MSE
    on targets scaled to unit std)."""
    torch.manual_seed(seed)
    head = AttentionPooling(views, states.shape[3], queries)
    to_token = nn.Linear(head.out_dim, targets.shape[1])
    opt = torch.optim.AdamW(list(head.parameters()) + list(to_token.parameters()), lr=3e-3,
                            weight_decay=weight_decay)
    scale = targets.std()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(index), generator=generator).split(256):
            rows = index[batch]
            loss = (((to_token(head(states[rows].float(), mask[rows])) - targets[batch]) / scale) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval().requires_grad_(False)


def save_pooling(head: AttentionPooling, path: str | Path, record: dict) -> Path:
    """The head's weights and how it was made (``record``: the base encoder, the fit's choices) as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"views": json.dumps(list(head.views_)), "queries": str(head.queries.shape[0]),
            "dim": str(head.queries.shape[1]), "record": json.dumps(record, sort_keys=True)}
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path), metadata=meta)
    return path


def load_pooling(path: str | Path) -> AttentionPooling:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    head = AttentionPooling(tuple(json.loads(meta["views"])), int(meta["dim"]), int(meta["queries"]))
    head.load_state_dict(load_file(str(path)))
    return head.eval().requires_grad_(False)


def pooling_digest(path: str | Path) -> str:
    """The first 8 hex digits of the file's sha256: part of the encoder id of vectors pooled by it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]
