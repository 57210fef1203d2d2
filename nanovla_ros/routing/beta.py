"""Beta-Binomial success model and pairwise win probabilities (NanoVLA paper, section 3.3; no ROS).

A model m's success rate on task l after s successes in n trials: p ~ Beta(s + a0, n - s + b0).
The win probability pi_{i>j}(l) = Pr(p_i > p_j) has a finite-sum closed form when alpha_i is an integer:

    Pr(p_i > p_j) = sum_{k=0}^{alpha_i - 1} C(beta_i + k - 1, k) B(alpha_j + k, beta_i + beta_j) / B(alpha_j, beta_j)

(from 1 - I_x(alpha, beta) = sum_{k<alpha} C(beta + k - 1, k) x^k (1 - x)^beta for integer alpha, averaged
over p_j), and a Monte Carlo estimate otherwise. Targets for the router's classifier are clipped to
[1e-4, 1 - 1e-4].
"""
from __future__ import annotations

import math

import numpy as np

TARGET_CLIP = 1e-4


def posterior(successes: int, trials: int, a0: float = 1.0, b0: float = 1.0) -> tuple[float, float]:
    """(alpha, beta) of the Beta posterior after ``successes`` of ``trials``."""
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} must be within [0, trials={trials}]")
    if a0 <= 0 or b0 <= 0:
        raise ValueError(f"prior a0={a0}, b0={b0} must be positive")
    return successes + a0, trials - successes + b0


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def win_probability_closed_form(alpha_i: float, beta_i: float, alpha_j: float, beta_j: float) -> float:
    """Pr(p_i > p_j) exactly; alpha_i must be an integer (the sum has alpha_i terms, in log space)."""
    if alpha_i != int(alpha_i) or alpha_i < 1:
        raise ValueError(f"alpha_i={alpha_i} must be a positive integer for the closed form")
    log_norm = _log_beta(alpha_j, beta_j)
    total = 0.0
    for k in range(int(alpha_i)):
        log_binom = math.lgamma(beta_i + k) - math.lgamma(k + 1) - math.lgamma(beta_i)
        total += math.exp(log_binom + _log_beta(alpha_j + k, beta_i + beta_j) - log_norm)
    return min(1.0, max(0.0, total))


def win_probability_monte_carlo(alpha_i: float, beta_i: float, alpha_j: float, beta_j: float,
                                draws: int = 200_000, rng: np.random.Generator | None = None) -> float:
    """Pr(p_i > p_j) from ``draws`` samples of each posterior."""
    rng = rng or np.random.default_rng(0)
    return float(np.mean(rng.beta(alpha_i, beta_i, draws) > rng.beta(alpha_j, beta_j, draws)))


def win_probability(alpha_i: float, beta_i: float, alpha_j: float, beta_j: float, draws: int = 200_000,
                    rng: np.random.Generator | None = None) -> float:
    """Closed form when alpha_i is an integer (or alpha_j is: Pr(i > j) = 1 - Pr(j > i)), else Monte Carlo."""
    if alpha_i == int(alpha_i) and alpha_i >= 1:
        return win_probability_closed_form(alpha_i, beta_i, alpha_j, beta_j)
    if alpha_j == int(alpha_j) and alpha_j >= 1:
        return 1.0 - win_probability_closed_form(alpha_j, beta_j, alpha_i, beta_i)
    return win_probability_monte_carlo(alpha_i, beta_i, alpha_j, beta_j, draws, rng)


def win_probability_numerical(alpha_i: float, beta_i: float, alpha_j: float, beta_j: float,
                              points: int = 200_001) -> float:
    """Pr(p_i > p_j) = integral of f_j(y) (1 - F_i(y)) dy by quadrature (a check on the other two)."""
    x = np.linspace(0.0, 1.0, points)[1:-1]

    def pdf(a: float, b: float) -> np.ndarray:
        return np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - _log_beta(a, b))

    dx = 1.0 / (points - 1)
    cdf_i = np.cumsum(pdf(alpha_i, beta_i)) * dx  # F_i(y)
    return float(np.sum(pdf(alpha_j, beta_j) * (1.0 - cdf_i)) * dx)


def clipped_target(probability: float) -> float:
    return min(1.0 - TARGET_CLIP, max(TARGET_CLIP, probability))
