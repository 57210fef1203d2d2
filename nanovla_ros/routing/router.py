"""Backbone choice per instruction.

PLACEHOLDER (issue #7): "auto" resolves to the configured default backbone. The Bayesian
Beta-Binomial router of the NanoVLA paper (section 3.3) replaces ``_predict`` once trial counts
exist; until then predictions are NaN and RouteDecision.reason is "default".
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

    def route(self, instruction: str, requested: str) -> RouteChoice:
        requested = (requested or "auto").strip().lower()
        if requested not in REQUESTABLE:
            raise RouteError(f"backbone {requested!r} is not one of {list(REQUESTABLE)}")
        p_small, p_large = self._predict(instruction)
        if requested != "auto":
            return RouteChoice(requested, "requested", p_small, p_large, self.config.threshold)
        return RouteChoice(self.config.default_backbone, "default", p_small, p_large, self.config.threshold)

    def _predict(self, instruction: str) -> tuple[float, float]:
        """Predicted success of (small, large); unknown until the router model exists."""
        return math.nan, math.nan
