"""Shared fixtures. Every test gets its own ROS_DOMAIN_ID and stays on loopback."""
from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_domains = itertools.count()


@pytest.fixture(autouse=True)
def ros_domain(monkeypatch) -> int:
    """A per-test DDS domain (100-199), so concurrent tests and other runs never see each other."""
    domain = 100 + (os.getpid() * 7 + next(_domains)) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty embedding cache; converted models stay in the shared model cache."""
    path = tmp_path / "nanovla_cache"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def minilm():
    from nanovla_ros.language.encoders import load_minilm

    return load_minilm()


def wait_until(condition, timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll ``condition`` until it holds or the timeout passes (never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


class StillPolicy:
    """For tests of the closed-loop harness itself: a front-camera policy that holds the arm where it is (every
    chunk repeats the state) and keeps the frames it was given (``frames``)."""

    class config:
        cameras, horizon = ("front",), 10

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def predict_chunk(self, image, state, embedding):
        self.frames.append(image)
        return np.tile(state, (10, 1))


class AnyInstruction(dict):
    """Instruction embeddings for any text (zeros of MiniLM's width), for a policy that does not read them."""

    def __missing__(self, key):
        return np.zeros(768, np.float32)
