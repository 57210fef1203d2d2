"""The instruction path under concurrent callers: the launched router and encoder processes, real DDS.

With blocking service callbacks, three simultaneous set_instruction calls took every executor thread of the
router while the encoder's replies needed one: all three failed after encode_timeout_s (30 s) and the router
then ignored SIGINT. Here bursts of 3, 10 and 100 calls must all be answered (accepted, or "busy" beyond
max_pending_instructions) within a bound, and the router must stop within 2 s of SIGINT afterwards.
"""
import importlib.util
from pathlib import Path

import pytest

from nanovla_ros.language.encoders import default_cache_dir

pytestmark = pytest.mark.e2e

_spec = importlib.util.spec_from_file_location("stress_router", Path(__file__).parents[1] / "scripts" / "bench" / "stress_router.py")
stress = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stress)


def test_concurrent_instructions_are_all_answered_and_the_router_still_stops_at_once(tmp_path, monkeypatch):
    models = default_cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    (tmp_path / "models").symlink_to(models)  # converted models reused; the embedding cache starts empty
    monkeypatch.setenv("NANOVLA_CACHE_DIR", str(tmp_path))
    launcher = stress._start_graph()
    try:
        first = stress.run_calls(1, 1.0, 1, timeout_s=120.0)  # waits out MiniLM's loading
        assert first["accepted"] == 1, first
        for n, bound_s in ((3, 5.0), (10, 5.0), (100, 10.0)):
            result = stress.run_calls(n, 0.0, min(n, 10), timeout_s=bound_s, burst=True)
            assert result["answered"] == n, result  # nobody left waiting
            assert result["other_rejections"] == 0, result
            assert result["accepted"] >= min(n, 32) * 0.9, result  # up to max_pending_instructions go through
        assert stress.stop_router(launcher) < 2.0
    finally:
        launcher.stop()
