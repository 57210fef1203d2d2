"""Instruction-encoder service configuration."""
from __future__ import annotations

from dataclasses import dataclass

from nanovla_ros.configuration import param, require

BACKBONE_CHOICES = ("small", "large")


@dataclass(frozen=True)
class EncoderConfig:
    # --- models
    backbones: tuple[str, ...] = param(("small", "large"), "Backbones to load: small (MiniLM) and/or large (Gemma-3-270M).")
    num_threads: int = param(0, "torch CPU threads for encoding; 0 keeps torch's default.")
    # --- input checks
    max_instruction_chars: int = param(256, "Longer instructions are rejected with a message.")
    # --- cache
    model_dir: str = param("", "Where converted encoders live; empty = $NANOVLA_CACHE_DIR/models or ~/.cache/nanovla_ros/models.")
    cache_dir: str = param("", "Embedding cache directory; empty = $NANOVLA_CACHE_DIR or ~/.cache/nanovla_ros.")
    disk_cache: bool = param(True, "Keep embeddings on disk (SQLite) so they survive restarts.")
    memory_cache_entries: int = param(1024, "Capacity of the in-memory LRU layer.")
    disk_cache_entries: int = param(100_000, "Capacity of the on-disk layer (least recently used rows evicted).")

    def __post_init__(self) -> None:
        require(len(self.backbones) > 0, "backbones is empty; load at least one of ['small', 'large']")
        for backbone in self.backbones:
            require(backbone in BACKBONE_CHOICES, f"backbones contains {backbone!r}; expected values from {list(BACKBONE_CHOICES)}")
        require(len(set(self.backbones)) == len(self.backbones), f"backbones={list(self.backbones)} repeats a backbone")
        require(self.num_threads >= 0, f"num_threads={self.num_threads} must be >= 0")
        require(1 <= self.max_instruction_chars <= 10_000, f"max_instruction_chars={self.max_instruction_chars} must be within [1, 10000]")
        require(self.memory_cache_entries >= 1, f"memory_cache_entries={self.memory_cache_entries} must be >= 1")
        require(self.disk_cache_entries >= 1, f"disk_cache_entries={self.disk_cache_entries} must be >= 1")
