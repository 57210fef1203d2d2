"""Paired comparison of two models' evaluation results (nanovla_ros/evaluation/compare.py, scripts/eval/compare_eval.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanovla_ros.evaluation.compare import compare, episode_outcomes, sign_test_p


def _report(successes: dict) -> dict:
    return {"episodes": [{"kind": k, "split": s, "seed": seed, "success": ok}
                         for (k, s, seed), ok in successes.items()]}


def test_sign_test_p_values():
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(3, 3) == 1.0
    assert sign_test_p(5, 0) == pytest.approx(2 / 32) and sign_test_p(0, 5) == pytest.approx(2 / 32)
    assert sign_test_p(86, 57) == pytest.approx(0.019, abs=0.001)  # against a hand computation of the binomial tail


def test_files_pair_by_position_then_kind_split_and_seed():
    """The same seed in two seed sets is two episodes; a seed only one side has is left out and counted."""
    a = episode_outcomes([_report({("stack", "train", 1000): True, ("stack", "train", 1001): False}),
                          _report({("stack", "train", 1000): True, ("push", "heldout", 7): True})])
    b = episode_outcomes([_report({("stack", "train", 1000): False, ("stack", "train", 1001): False}),
                          _report({("stack", "train", 1000): True, ("touch", "train", 3): True})])
    r = compare(a, b)
    assert (r.episodes, r.successes_a, r.successes_b, r.only_a, r.only_b) == (3, 2, 1, 1, 0)
    assert r.per_cell == {("stack", "train"): (2, 1, 3)} and r.unpaired == 2
    assert r.p_value == 1.0


def test_the_script_prints_the_table_and_refuses_unmatched_file_lists(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "eval" / "compare_eval.py"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_report({("touch", "train", s): True for s in range(6)})))
    b.write_text(json.dumps(_report({("touch", "train", s): s == 0 for s in range(6)})))
    out = subprocess.run([sys.executable, str(script), "--a", str(a), "--b", str(b)], capture_output=True,
                         text=True, check=True).stdout
    assert "| touch | train | 6 | 1 | 6 |" in out and "only A 5, only B 0" in out and "p = 0.062" in out
    bad = subprocess.run([sys.executable, str(script), "--a", str(a), str(a), "--b", str(b)], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "one of each per seed set" in bad.stderr
