"""The instruction-embedding service core: validation, cache, and per-backbone encoders loaded in the
background. The ROS node only converts requests and responses."""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanovla_ros.language.cache import EmbeddingCache
from nanovla_ros.language.config import EncoderConfig
from nanovla_ros.language.encoders import TextEncoder, default_cache_dir, encoder_id, load_encoder
from nanovla_ros.language.text import validate_instruction

log = logging.getLogger(__name__)


class BackboneState(enum.Enum):
    NOT_CONFIGURED = "not configured"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class BackboneNotReady(RuntimeError):
    """The requested backbone is loading, failed to load, or is not configured; message says which."""

    def __init__(self, message: str, state: BackboneState) -> None:
        super().__init__(message)
        self.state = state


@dataclass(frozen=True)
class EncodeResult:
    embedding: np.ndarray  # (D,) float32
    encoder_id: str
    cache_hit: bool
    latency_ms: float
    text: str  # the normalised instruction that was encoded


Loader = Callable[[str], TextEncoder]


class InstructionEncoderService:
    def __init__(self, config: EncoderConfig, loader: Loader | None = None) -> None:
        self.config = config
        cache_root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        model_root = Path(config.model_dir) if config.model_dir else None
        self._loader = loader or (lambda backbone: load_encoder(backbone, model_root, config.num_threads or None))
        self.cache = EmbeddingCache(
            cache_root / "embeddings.sqlite3" if config.disk_cache else None, config.memory_cache_entries,
            config.disk_cache_entries)
        self._encoders: dict[str, TextEncoder] = {}
        self._states = {b: BackboneState.LOADING for b in config.backbones}
        self._errors: dict[str, str] = {}
        self._locks = {b: threading.Lock() for b in config.backbones}
        self._loaded = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._load_all, name="encoder_loader", daemon=True)

    def start(self) -> None:
        """Load the configured backbones in the background, small first."""
        self._thread.start()

    def wait_loaded(self, timeout_s: float | None = None) -> bool:
        return self._loaded.wait(timeout_s)

    def state(self, backbone: str) -> BackboneState:
        return self._states.get(backbone, BackboneState.NOT_CONFIGURED)

    def _load_all(self) -> None:
        for backbone in sorted(self.config.backbones, key=("small", "large").index):
            if self._closing.is_set():
                break
            start = time.monotonic()
            try:
                encoder = self._loader(backbone)
            except Exception as error:  # noqa: BLE001 - any load failure is reported, never hidden
                self._errors[backbone] = f"{type(error).__name__}: {error}"
                self._states[backbone] = BackboneState.FAILED
                log.error("backbone %s failed to load: %s", backbone, self._errors[backbone])
                continue
            self._encoders[backbone] = encoder
            self._states[backbone] = BackboneState.READY
            log.info("backbone %s ready (%s, %d-d) in %.1f s", backbone, encoder.encoder_id, encoder.dim,
                     time.monotonic() - start)
        self._loaded.set()

    def encode(self, text: str | bytes, backbone: str) -> EncodeResult:
        """Encode one instruction; raise InstructionError for bad text, BackboneNotReady otherwise."""
        start = time.perf_counter()
        normalised = validate_instruction(text, self.config.max_instruction_chars)
        state = self.state(backbone)
        if state is BackboneState.NOT_CONFIGURED:
            raise BackboneNotReady(
                f"backbone {backbone!r} is not served here; configured backbones: {list(self.config.backbones)}", state
            )
        key_id = encoder_id(backbone)
        cached = self.cache.get(key_id, normalised)
        if cached is not None:
            return EncodeResult(cached, key_id, True, (time.perf_counter() - start) * 1e3, normalised)
        if state is BackboneState.LOADING:
            raise BackboneNotReady(f"backbone {backbone!r} is still loading; retry in a few seconds", state)
        if state is BackboneState.FAILED:
            raise BackboneNotReady(f"backbone {backbone!r} failed to load: {self._errors[backbone]}", state)
        encoder = self._encoders[backbone]
        with self._locks[backbone]:
            vector = encoder.encode([normalised])[0]  # (D,)
        self.cache.put(key_id, normalised, vector)
        return EncodeResult(self.cache.get(key_id, normalised), key_id, False,
                            (time.perf_counter() - start) * 1e3, normalised)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop loading further backbones and wait for the one being loaded: a process that exits while a
        daemon thread is inside torch's weight loading can abort (seen: exit code -6 on Ctrl-C)."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.cache.close()
