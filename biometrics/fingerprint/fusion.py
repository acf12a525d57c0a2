"""Fusion of false-match scores of independent comparisons (face, each finger) into one.

Each input is ``s_i = -log10(FMR_i)``. For an impostor, each calibrated FMR_i is (close to) uniform on
(0, 1]; if the comparisons are independent, the sum ``S = sum(s_i)`` of k of them has the tail of
Fisher's combined statistic: ``P(sum >= S) = 10^-S * sum_{j<k} (S ln 10)^j / j!``. The fused score is
``-log10`` of that probability, so it is again a false-match score and the same operating threshold
``-log10(fmr)`` keeps its meaning. One input is returned unchanged; a weak modality lowers the fused
score a little (it cannot be ignored after the fact), a strong one raises it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def fuse_false_match_scores(scores: Sequence[float]) -> float:
    """The false-match score of the combined evidence of independent false-match scores."""
    values = [max(0.0, float(s)) for s in scores]
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    total = sum(values)
    x = total * math.log(10.0)
    series = sum(x**j / math.factorial(j) for j in range(len(values)))
    return max(0.0, total - math.log10(series))


def best_of_k(score: float, k: int) -> float:
    """False-match score of the best of ``k`` comparisons whose best alone scored ``score``.

    The FMR of "the best of k impostor comparisons" is at most k times the single-comparison FMR (union
    bound), so the score drops by ``log10(k)`` (never below 0).
    """
    return max(0.0, float(score) - math.log10(max(1, k)))
