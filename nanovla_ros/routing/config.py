"""Router configuration."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import param, require, require_choice

BACKBONES = ("small", "large")
REQUESTABLE = ("auto",) + BACKBONES


@dataclass(frozen=True)
class RouterConfig:
    default_backbone: str = param("small", "Backbone for backbone='auto' when no router file is given.")
    router_weights: str = param("", "NanoVLA-R router file (nanovla train-router); empty = 'auto' means default_backbone.")
    policy: str = param("bayes", "bayes: large when Pr(large beats small | instruction) > threshold; naive: large when "
                                 "the small model's empirical success on the nearest known instruction < threshold.")
    threshold: float = param(0.5, "tau: the escalation threshold of the chosen policy.")
    max_instruction_chars: int = param(256, "Longer instructions are rejected before any encoding.")
    encode_timeout_s: float = param(30.0, "How long to wait for the encoder service per instruction.")
    max_pending_instructions: int = param(32, "Instructions in progress at once; more are answered 'busy' at once.")
    scope_check: bool = param(True, "Refuse instructions outside what the policy was trained to do, or naming objects "
                                    "the workcell does not have (nanovla_ros.language.scope), with the reason.")
    scope_file: str = param("", "Scope file (`nanovla fit-scope`); empty = the packaged one.")

    def __post_init__(self) -> None:
        require_choice("default_backbone", self.default_backbone, BACKBONES)
        require_choice("policy", self.policy, ("bayes", "naive"))
        require(0.0 <= self.threshold <= 1.0, f"threshold={self.threshold} must be within [0, 1]")
        require(1 <= self.max_instruction_chars <= 10_000, f"max_instruction_chars={self.max_instruction_chars} must be within [1, 10000]")
        require(self.encode_timeout_s > 0.0, f"encode_timeout_s={self.encode_timeout_s} must be positive")
        require(self.max_pending_instructions >= 1,
                f"max_pending_instructions={self.max_pending_instructions} must be >= 1")
