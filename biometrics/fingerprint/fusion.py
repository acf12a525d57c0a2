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
from dataclasses import dataclass

import numpy as np

# A modality whose own false-match score is under its floor contradicts the claim and caps the fused score
# (cap_contradictions). Chosen on dev data: docs/benchmarks.md, "Fused verification". None: no cap.
CONTRADICTION_FLOORS: dict[str, float | None] = {"face": None, "fingerprint": None}


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


def fisher_fused_scores(scores: np.ndarray) -> np.ndarray:
    """:func:`fuse_false_match_scores` of each row of an (n, k) array of false-match scores (vectorised)."""
    s = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError("scores must be an (n, k) array with k >= 1")
    total = s.sum(axis=1)
    if s.shape[1] == 1:
        return total
    x = total * math.log(10.0)
    series = sum(x**j / math.factorial(j) for j in range(s.shape[1]))
    return np.maximum(0.0, total - np.log10(series))


def max_rule_scores(scores: np.ndarray) -> np.ndarray:
    """The max rule with its false-match score: the best of k independent scores (Sidak's correction).

    ``P(max_i s_i >= S) = 1 - (1 - 10^-S)^k`` for k independent calibrated scores, so the fused score is
    ``-log10`` of that: the best modality alone, less about ``log10(k)``.
    """
    s = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError("scores must be an (n, k) array with k >= 1")
    best = s.max(axis=1)
    p = -np.expm1(s.shape[1] * np.log1p(-np.minimum(10.0 ** -best, 1.0 - 1e-16)))
    return np.maximum(0.0, -np.log10(np.maximum(p, 1e-300)))


@dataclass(frozen=True)
class LikelihoodRatioFusion:
    """Fusion by the sum of per-modality log likelihood ratios, measured from genuine score densities.

    For independent modalities the Neyman-Pearson test of "same person" against "different people" thresholds
    the product of the modalities' likelihood ratios ``g_i(s_i) / f_i(s_i)``. On calibrated false-match
    scores the impostor density is known by construction (FMR uniform: ``f(s) = ln10 10^-s``); the genuine
    density ``g_i`` is estimated from measured genuine scores (a Gaussian kernel density on ``grid``). Each
    modality's log ratio is made non-decreasing in s (a higher false-match score is never weaker evidence).
    The product rule (:func:`fuse_false_match_scores`) is the special case ``g_i(s) = c_i``: flat genuine
    densities; it is close to this rule when the genuine scores spread evenly over the scale.
    """

    grid: tuple[float, ...]
    log_lr: tuple[tuple[float, ...], ...]  # one row per modality, on ``grid``

    @classmethod
    def fit(cls, genuine: Sequence[np.ndarray], *, top: float = 12.0, step: float = 0.05,
            bandwidth: float = 0.3) -> LikelihoodRatioFusion:
        """Estimate from each modality's genuine false-match scores (one array per modality, in order)."""
        grid = np.arange(0.0, top + step / 2, step)
        rows = []
        for g in genuine:
            g = np.clip(np.asarray(g, dtype=np.float64), 0.0, top)
            g = g[np.isfinite(g)]
            if g.size < 10:
                raise ValueError("a likelihood ratio needs at least 10 genuine scores per modality")
            z = (grid[:, None] - g[None, :]) / bandwidth
            density = np.exp(-0.5 * z * z).sum(axis=1) / (g.size * bandwidth * math.sqrt(2 * math.pi))
            density = np.maximum(density, 1e-12)
            llr = np.log(density) - math.log(math.log(10.0)) + grid * math.log(10.0)
            rows.append(tuple(np.maximum.accumulate(llr).tolist()))
        return cls(tuple(grid.tolist()), tuple(rows))

    def statistic(self, scores: np.ndarray) -> np.ndarray:
        """The summed log likelihood ratio of each row of an (n, k) array of false-match scores."""
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != len(self.log_lr):
            raise ValueError(f"scores must be an (n, {len(self.log_lr)}) array")
        grid = np.asarray(self.grid)
        return sum(np.interp(s[:, i], grid, np.asarray(row)) for i, row in enumerate(self.log_lr))


def cap_contradictions(fused: np.ndarray, scores: np.ndarray, floors: Sequence[float | None]) -> np.ndarray:
    """Fused scores capped, row by row, at the score of any modality below its floor (vectorised).

    A modality scoring under its floor says "less alike than most impostors" (``s < floor`` means more than
    ``10^-floor`` of impostors look more alike): it contradicts the claim, and a strong other modality must
    not outvote it (a matching finger presented with another person's face). The cap only lowers a score,
    so the threshold's false-match bound under independence still holds. ``None``: that modality never vetoes.
    """
    out = np.asarray(fused, dtype=np.float64).copy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(floors) or s.shape[0] != out.shape[0]:
        raise ValueError("scores must be (n, k) with one floor per column and one fused score per row")
    for j, floor in enumerate(floors):
        if floor is not None:
            below = s[:, j] < floor
            out[below] = np.minimum(out[below], s[below, j])
    return out


def fuse_with_contradictions(scores: Sequence[float], floors: Sequence[float | None]) -> float:
    """:func:`fuse_false_match_scores`, capped by any modality below its floor (:func:`cap_contradictions`)."""
    if len(scores) != len(floors):
        raise ValueError("one floor (or None) per score")
    fused = fuse_false_match_scores(scores)
    return float(cap_contradictions(np.array([fused]), np.array([scores], dtype=np.float64).reshape(1, -1),
                                    floors)[0]) if scores else fused
