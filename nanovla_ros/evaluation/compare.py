"""Two policies' `nanovla evaluate` results, paired episode by episode.

The in-process evaluation is deterministic given the seed (the same checkpoint gives the same result, episode by
episode, on different GPUs), so two models evaluated on the same seeds face the same
scenes and instructions, and the episodes only one of them succeeds in say more than the two totals: a two-sided
sign test over those discordant pairs (McNemar's exact test)."""
from __future__ import annotations

from dataclasses import dataclass
from math import comb

Key = tuple  # (results-file position, task kind, split, seed)


def episode_outcomes(reports: list[dict]) -> dict[Key, bool]:
    """Several results files of one model (e.g. seeds 1000+, 6000+, 11000+) as {key: success}; a file's position
    is part of the key, so that the files of the two models pair up in the order they are given."""
    outcomes = {}
    for position, report in enumerate(reports):
        for e in report["episodes"]:
            outcomes[(position, e["kind"], e["split"], e["seed"])] = bool(e["success"])
    return outcomes


def sign_test_p(only_a: int, only_b: int) -> float:
    """Two-sided exact sign test: the chance of a split at least this uneven if either model were as likely as the
    other to be the one that succeeds."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    episodes: int  # paired episodes (keys both have)
    successes_a: int
    successes_b: int
    only_a: int  # episodes only A succeeds in
    only_b: int
    p_value: float
    per_cell: dict  # {(kind, split): (successes A, successes B, episodes)}
    unpaired: int  # episodes only one side has (different seeds or tasks): left out


def compare(a: dict[Key, bool], b: dict[Key, bool]) -> PairedComparison:
    keys = set(a) & set(b)
    only_a = sum(a[k] and not b[k] for k in keys)
    only_b = sum(b[k] and not a[k] for k in keys)
    cells: dict = {}
    for k in keys:
        sa, sb, n = cells.get(k[1:3], (0, 0, 0))
        cells[k[1:3]] = (sa + a[k], sb + b[k], n + 1)
    return PairedComparison(len(keys), sum(a[k] for k in keys), sum(b[k] for k in keys), only_a, only_b,
                            sign_test_p(only_a, only_b), dict(sorted(cells.items())),
                            len(set(a) ^ set(b)))
