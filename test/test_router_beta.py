"""Beta-Binomial win probabilities: the closed form against Monte Carlo and numerical integration."""
import numpy as np
import pytest

from nanovla_ros.routing.beta import (
    clipped_target,
    posterior,
    win_probability,
    win_probability_closed_form,
    win_probability_monte_carlo,
    win_probability_numerical,
)

CASES = [(1, 1, 1, 1), (3, 2, 2, 3), (8, 3, 5, 6), (41, 11, 30, 22), (2, 9, 9, 2), (5, 1.5, 4.5, 2)]


@pytest.mark.parametrize("a_i,b_i,a_j,b_j", CASES)
def test_closed_form_matches_monte_carlo_and_integration(a_i, b_i, a_j, b_j):
    exact = win_probability_closed_form(a_i, b_i, a_j, b_j)
    assert exact == pytest.approx(win_probability_numerical(a_i, b_i, a_j, b_j), abs=2e-4)
    assert exact == pytest.approx(win_probability_monte_carlo(a_i, b_i, a_j, b_j, 400_000), abs=4e-3)


def test_symmetry_ties_and_extremes():
    assert win_probability_closed_form(1, 1, 1, 1) == pytest.approx(0.5)
    p = win_probability_closed_form(7, 4, 3, 9)
    assert p + win_probability_closed_form(3, 9, 7, 4) == pytest.approx(1.0)
    assert win_probability_closed_form(51, 1, 1, 51) > 0.999999
    assert clipped_target(1.0) == 1 - 1e-4 and clipped_target(0.0) == 1e-4


def test_non_integer_alphas_fall_back_to_the_other_side_or_monte_carlo():
    assert win_probability(2.5, 3, 4, 2) == pytest.approx(1 - win_probability_closed_form(4, 2, 2.5, 3))
    mc = win_probability(2.5, 3, 4.5, 2, draws=400_000, rng=np.random.default_rng(1))
    assert mc == pytest.approx(win_probability_numerical(2.5, 3, 4.5, 2), abs=4e-3)


def test_posterior():
    assert posterior(3, 10) == (4, 8)
    assert posterior(0, 0, 0.5, 0.5) == (0.5, 0.5)
    with pytest.raises(ValueError, match="successes=11"):
        posterior(11, 10)


def _families(rng, n=6, dim=32):
    """Two instruction families: small wins on 'touch', large on 'stack'; embeddings near a family direction."""
    base = {"touch": rng.normal(size=dim), "stack": rng.normal(size=dim)}
    embeddings, counts = {}, {}
    for family, (s_small, s_large) in (("touch", (9, 5)), ("stack", (2, 9))):
        for k in range(n):
            text = f"{family} variant {k}"
            embeddings[text] = base[family] + 0.3 * rng.normal(size=dim)
            counts[text] = {"small": (s_small, 10), "large": (s_large, 10)}
    return base, embeddings, counts


def test_router_classifier_learns_soft_targets_and_generalises(tmp_path):
    from nanovla_ros.routing.classifier import NaiveRouter, RouterModel, soft_targets, train_router

    rng = np.random.default_rng(0)
    base, embeddings, counts = _families(rng)
    rows = soft_targets(counts)
    assert len(rows) == 2 * len(counts)  # both ordered pairs
    touch_large = next(t for text, i, j, t in rows if text.startswith("touch") and i == 1)
    assert touch_large == pytest.approx(win_probability_closed_form(6, 6, 10, 2), abs=1e-9)
    router = train_router(embeddings, counts, "test-encoder")
    unseen_stack = base["stack"] + 0.3 * rng.normal(size=32)  # an instruction never trained on
    unseen_touch = base["touch"] + 0.3 * rng.normal(size=32)
    assert router.win_probabilities(unseen_stack)[1] > 0.9
    assert router.win_probabilities(unseen_touch)[1] < 0.2
    p_small, p_large = router.win_probabilities(unseen_touch)
    assert p_small + p_large == pytest.approx(1.0, abs=0.1)  # the pair's two orders roughly agree
    loaded = RouterModel.load(router.save(tmp_path / "router.safetensors"))
    assert loaded.win_probabilities(unseen_stack) == pytest.approx(router.win_probabilities(unseen_stack))
    assert loaded.counts == router.counts and loaded.encoder_id == "test-encoder"
    naive = NaiveRouter(embeddings, counts)
    assert naive.success_rates(unseen_stack) == (0.2, 0.9)
