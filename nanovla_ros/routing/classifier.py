"""NanoVLA-R's text-conditioned router (paper section 3.3; no ROS).

From per-task trial counts of every model, each ordered pair (i, j) of models gets a soft target
pi_{i>j}(l) = Pr(p_i > p_j) under the Beta-Binomial posteriors (``beta.py``). A small classifier
f(l, i, j) -> Pr(i > j | l) reads the cached small-encoder embedding of the instruction l and the model pair
(one-hot each), and is trained with the Bernoulli log-loss on those targets. Because it reads the
instruction's embedding, an instruction never seen in training still gets a prediction.

Routing: small by default; large when the predicted Pr(large > small | l) exceeds tau. The naive router for
comparison thresholds the empirical success rate of the small model on the nearest known task.

The router file is one safetensors file: classifier weights, and in its metadata the trial counts, the
prior, the model names and the id of the encoder whose embeddings it reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nanovla_ros.routing.beta import clipped_target, posterior, win_probability

MODELS = ("small", "large")
FORMAT = "nanovla-router/1"

# counts[instruction][model] = (successes, trials)
TrialCounts = dict[str, dict[str, tuple[int, int]]]


def counts_from_episodes(episodes_by_model: dict[str, list[dict]]) -> TrialCounts:
    """Trial counts per instruction from `nanovla evaluate` episode lists, one list per model."""
    counts: TrialCounts = {}
    for model, episodes in episodes_by_model.items():
        for e in episodes:
            s, n = counts.setdefault(e["instruction"], {}).get(model, (0, 0))
            counts[e["instruction"]][model] = (s + int(e["success"]), n + 1)
    return counts


def soft_targets(counts: TrialCounts, models=MODELS, a0: float = 1.0, b0: float = 1.0) -> list[tuple[str, int, int, float]]:
    """(instruction, i, j, clipped pi_{i>j}) for every ordered pair of models with counts."""
    rows = []
    for text, per_model in sorted(counts.items()):
        for i, mi in enumerate(models):
            for j, mj in enumerate(models):
                if i == j or mi not in per_model or mj not in per_model:
                    continue
                ai, bi = posterior(*per_model[mi], a0, b0)
                aj, bj = posterior(*per_model[mj], a0, b0)
                rows.append((text, i, j, clipped_target(win_probability(ai, bi, aj, bj))))
    return rows


class WinClassifier(nn.Module):
    """f(l, i, j) -> logit of Pr(model i beats model j on instruction l)."""

    def __init__(self, embed_dim: int, n_models: int = len(MODELS), hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_models = n_models
        self.net = nn.Sequential(nn.Linear(embed_dim + 2 * n_models, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, embedding: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([nn.functional.one_hot(i, self.n_models), nn.functional.one_hot(j, self.n_models)], -1)
        return self.net(torch.cat([embedding, pair.float()], dim=-1)).squeeze(-1)  # (B,)


@dataclass
class RouterModel:
    classifier: WinClassifier
    counts: TrialCounts
    encoder_id: str
    a0: float = 1.0
    b0: float = 1.0
    known_embeddings: dict[str, np.ndarray] | None = None  # the training instructions' vectors (naive router)

    def naive_router(self) -> NaiveRouter:
        if not self.known_embeddings:
            raise ValueError("this router file holds no instruction embeddings for the naive router")
        return NaiveRouter(self.known_embeddings, self.counts)

    @torch.no_grad()
    def win_probabilities(self, embedding: np.ndarray) -> tuple[float, float]:
        """(Pr(small > large | l), Pr(large > small | l)) for one instruction embedding."""
        self.classifier.eval()
        e = torch.as_tensor(np.asarray(embedding, np.float32))[None].repeat(2, 1)  # (2, L)
        i, j = torch.tensor([0, 1]), torch.tensor([1, 0])
        p = torch.sigmoid(self.classifier(e, i, j)).numpy()
        return float(p[0]), float(p[1])

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "encoder_id": self.encoder_id, "models": json.dumps(MODELS),
                "counts": json.dumps(self.counts), "a0": str(self.a0), "b0": str(self.b0),
                "embed_dim": str(self.classifier.net[0].in_features - 2 * self.classifier.n_models),
                "hidden": str(self.classifier.net[0].out_features)}
        tensors = {k: v.contiguous() for k, v in self.classifier.state_dict().items()}
        if self.known_embeddings:
            texts = sorted(self.known_embeddings)
            meta["known_texts"] = json.dumps(texts)
            tensors["known_embeddings"] = torch.as_tensor(np.stack([self.known_embeddings[t] for t in texts]),
                                                          dtype=torch.float32)
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RouterModel:
        from safetensors import safe_open

        from nanovla_ros.configuration import ConfigError

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"router weights {str(path)!r} do not exist (train them: nanovla train-router)")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ConfigError(f"{str(path)!r} is not a NanoVLA router file (format {meta.get('format')!r})")
            state = {k: f.get_tensor(k) for k in f.keys()}
        known = state.pop("known_embeddings", None)
        classifier = WinClassifier(int(meta["embed_dim"]), len(json.loads(meta["models"])), int(meta["hidden"]))
        classifier.load_state_dict(state)
        counts = {t: {m: tuple(v) for m, v in c.items()} for t, c in json.loads(meta["counts"]).items()}
        known_embeddings = (dict(zip(json.loads(meta["known_texts"]), known.numpy(), strict=True)) if known is not None else None)
        return cls(classifier.eval(), counts, meta["encoder_id"], float(meta["a0"]), float(meta["b0"]), known_embeddings)


def train_router(embeddings: dict[str, np.ndarray], counts: TrialCounts, encoder_id: str, epochs: int = 400,
                 lr: float = 3e-3, seed: int = 0, a0: float = 1.0, b0: float = 1.0) -> RouterModel:
    """Fit the classifier to the clipped soft targets with the Bernoulli log-loss (full batch)."""
    torch.manual_seed(seed)
    rows = soft_targets(counts, MODELS, a0, b0)
    if not rows:
        raise ValueError("no instruction has trial counts for both models")
    missing = sorted({t for t, *_ in rows} - set(embeddings))
    if missing:
        raise ValueError(f"no embedding for {missing[:3]}")
    e = torch.as_tensor(np.stack([embeddings[t] for t, *_ in rows]), dtype=torch.float32)  # (R, L)
    i = torch.tensor([r[1] for r in rows])
    j = torch.tensor([r[2] for r in rows])
    y = torch.tensor([r[3] for r in rows], dtype=torch.float32)
    classifier = WinClassifier(e.shape[1])
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=1e-3)
    for _ in range(epochs):
        classifier.train()
        loss = nn.functional.binary_cross_entropy_with_logits(classifier(e, i, j), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    known = {t: np.asarray(embeddings[t], np.float32) for t in counts if t in embeddings}
    return RouterModel(classifier.eval(), counts, encoder_id, a0, b0, known)


class NaiveRouter:
    """Empirical success rates of the nearest known instruction (cosine similarity of embeddings)."""

    def __init__(self, embeddings: dict[str, np.ndarray], counts: TrialCounts) -> None:
        self.texts = [t for t in counts if t in embeddings and all(m in counts[t] for m in MODELS)]
        table = np.stack([embeddings[t] for t in self.texts])
        self.table = table / np.linalg.norm(table, axis=1, keepdims=True)
        self.rates = np.array([[counts[t][m][0] / max(1, counts[t][m][1]) for m in MODELS] for t in self.texts])

    def success_rates(self, embedding: np.ndarray) -> tuple[float, float]:
        e = np.asarray(embedding, np.float64)
        nearest = int(np.argmax(self.table @ (e / np.linalg.norm(e))))
        return float(self.rates[nearest, 0]), float(self.rates[nearest, 1])


def train_router_from_evaluations(evaluations: dict[str, str | Path], table_dir: str | Path, encoder_id: str | None = None,
                                  **kwargs) -> RouterModel:
    """Router from `nanovla evaluate` results (model name -> results JSON) and a feature cache holding the
    small encoder's instruction table (``nanovla dataset --cache`` or ``write_instruction_tables``)."""
    from nanovla_ros.language.encoders import ENCODER_SPECS
    from nanovla_ros.model.feature_cache import read_instruction_table, table_id_for

    episodes = {model: json.loads(Path(p).read_text())["episodes"] for model, p in evaluations.items()}
    encoder_id = encoder_id or table_id_for(table_dir, ENCODER_SPECS["small"].name)
    texts, table = read_instruction_table(table_dir, encoder_id)
    return train_router(dict(zip(texts, table, strict=True)), counts_from_episodes(episodes), encoder_id, **kwargs)
