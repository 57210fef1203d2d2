"""Backbone choice per instruction (NanoVLA-R).

With a router file (``router_weights``), "auto" is decided per instruction from its small-encoder embedding:
the Bayesian router (classifier.py) escalates to large when Pr(large beats small | l) > tau; the naive one
when the small model's empirical success on the nearest known instruction is below tau. Without a router
file "auto" is the configured default backbone and the predictions are NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from nanovla_ros.routing.config import REQUESTABLE, RouterConfig


class RouteError(ValueError):
    """A request naming an unknown backbone."""


@dataclass(frozen=True)
class RouteChoice:
    backbone: str
    reason: str  # "requested" | "default" | "router"
    predicted_success_small: float
    predicted_success_large: float
    threshold: float


class BackboneRouter:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.model = None
        self.naive = None
        if config.router_weights:
            from nanovla_ros.routing.classifier import RouterModel

            self.model = RouterModel.load(config.router_weights)  # ConfigError with the reason if unusable
            if config.policy == "naive":
                self.naive = self.model.naive_router()

    @property
    def needs_embedding(self) -> bool:
        """Whether "auto" needs the instruction's small-encoder embedding (a router file is loaded)."""
        return self.model is not None

    @property
    def encoder_id(self) -> str | None:
        return self.model.encoder_id if self.model is not None else None

    def route(self, instruction: str, requested: str, embedding=None) -> RouteChoice:
        """``embedding``: the instruction's vector from the router's encoder (needed for "auto" with a router)."""
        requested = (requested or "auto").strip().lower()
        if requested not in REQUESTABLE:
            raise RouteError(f"backbone {requested!r} is not one of {list(REQUESTABLE)}")
        p_small, p_large = self._predict(embedding)
        tau = self.config.threshold
        if requested != "auto":
            return RouteChoice(requested, "requested", p_small, p_large, tau)
        if self.model is None or embedding is None:
            return RouteChoice(self.config.default_backbone, "default", p_small, p_large, tau)
        if self.naive is not None:
            return RouteChoice("large" if p_small < tau else "small", "naive", p_small, p_large, tau)
        return RouteChoice("large" if p_large > tau else "small", "router", p_small, p_large, tau)

    def _predict(self, embedding) -> tuple[float, float]:
        """Bayes: (Pr(small beats large), Pr(large beats small)); naive: empirical success rates of the
        nearest known instruction; NaN without a router file or an embedding."""
        if self.model is None or embedding is None:
            return math.nan, math.nan
        if self.naive is not None:
            return self.naive.success_rates(embedding)
        return self.model.win_probabilities(embedding)
