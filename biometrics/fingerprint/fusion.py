"""Fusion of false-match scores of independent comparisons (face, each finger) into one.

Each input is ``s_i = -log10(FMR_i)``. For an impostor, each calibrated FMR_i is (close to) uniform on
(0, 1], and a fused score is again stated as ``-log10`` of the impostors' chance of scoring at least as much,
so the same operating threshold ``-log10(fmr)`` keeps its meaning. Three rules:

- the product rule (:func:`fuse_false_match_scores`): the sum ``S = sum(s_i)``, whose tail for k independent
  inputs is Fisher's, ``P(sum >= S) = 10^-S * sum_{j<k} (S ln 10)^j / j!``; valid under independence, but it
  ignores how genuine comparisons score, so a strong modality outvotes one that says "not this person";
- the max rule (:func:`max_rule_scores`), with Sidak's correction;
- the likelihood ratio (:class:`LikelihoodRatioFusion`), the Neyman-Pearson rule for independent modalities:
  the sum of the modalities' log likelihood ratios, measured from genuine score densities, its impostor tail
  computed by convolution.

The service (:func:`fuse_modalities`) uses the likelihood ratio shipped in ``biometrics/calibration/
fusion.json`` and caps the result at the score of a face under :data:`CONTRADICTION_FLOORS`; the choice,
made on a development split of chimeric LFW x FVC2002 subjects, is in docs/benchmarks.md ("Fused
verification"). One input is returned unchanged.

The cap is a 1:1 rule (Verify: a stolen finger presented with another face must not pass). A 1:N search
(Identify, its watchlist alerts, the duplicate search at enrolment) asks another question: could this be that
person? There a matching finger with a face that does not match is a lead for an officer, never nothing, so the
search scores a subject with :func:`search_scores`: the better of the fusion without the cap and the best single
modality less ``log10(m)`` for the m modalities compared, less ``log10(2)`` for taking the better of those two
tests (union bound), so that the stated false-match rate still holds; :func:`contradicted` tells the caller that
a modality under its floor stood against the candidate.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# A modality whose own false-match score is under its floor contradicts the claim and caps the fused score
# (cap_contradictions). Chosen on dev data: docs/benchmarks.md, "Fused verification". None: no cap.
CONTRADICTION_FLOORS: dict[str, float | None] = {"face": 1.0, "fingerprint": None}


def fuse_false_match_scores(scores: Sequence[float]) -> float:
    """The false-match score of the combined evidence of independent false-match scores."""
    values = [max(0.0, float(s)) for s in scores]
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return float(fisher_fused_scores(np.array([values]))[0])


def best_of_k(score: float | np.ndarray, k: int) -> float | np.ndarray:
    """False-match score of the best of ``k`` comparisons whose best alone scored ``score``.

    The FMR of "the best of k impostor comparisons" is at most k times the single-comparison FMR (union
    bound), so the score drops by ``log10(k)`` (never below 0). An array of scores gives an array (nan stays
    nan); a single score a float.
    """
    if np.ndim(score) == 0:
        return max(0.0, float(score) - math.log10(max(1, k)))
    return np.maximum(0.0, np.asarray(score, dtype=np.float64) - math.log10(max(1, k)))


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
    return _no_negative_zero(np.maximum(0.0, -np.log10(np.maximum(p, 1e-300))))


def _no_negative_zero(scores: np.ndarray) -> np.ndarray:
    """``scores`` with -0.0 as 0.0 (``-log10(1)`` is -0.0, which an officer or the audit log would read as
    "-0.00"); every other value unchanged."""
    return np.asarray(scores, dtype=np.float64) + 0.0


@dataclass(frozen=True)
class LikelihoodRatioFusion:
    """Fusion by the sum of per-modality log likelihood ratios, measured from genuine score densities.

    For independent modalities the Neyman-Pearson test of "same person" against "different people" thresholds
    the product of the modalities' likelihood ratios ``g_i(s_i) / f_i(s_i)``. On calibrated false-match
    scores the impostor density is known by construction (FMR uniform: ``f(s) = ln10 10^-s``); the genuine
    density ``g_i`` is estimated from measured genuine scores (a Gaussian kernel density on ``grid``). Each
    modality's log ratio is made non-decreasing in s (a higher false-match score is never weaker evidence).
    The product rule (:func:`fuse_false_match_scores`) is the special case ``g_i(s) = c_i``: flat genuine
    densities. Unlike it, a modality whose score is lower than genuine comparisons ever give weighs against
    the claim. :meth:`fuse` states the summed log ratio as a false-match score again (its impostor tail under
    independence, by numerical convolution), so the service threshold keeps its meaning.
    """

    grid: tuple[float, ...]
    log_lr: tuple[tuple[float, ...], ...]  # one row per modality, on ``grid``
    modalities: tuple[str, ...] = ("face", "fingerprint")
    source: str = ""

    @classmethod
    def fit(cls, genuine: Sequence[np.ndarray], *, modalities: Sequence[str] = ("face", "fingerprint"),
            top: float = 12.0, step: float = 0.05, bandwidth: float = 0.3, source: str = ""
            ) -> LikelihoodRatioFusion:
        """Estimate from each modality's genuine false-match scores (one array per modality, in order)."""
        if len(genuine) != len(modalities):
            raise ValueError("one array of genuine scores per modality")
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
            rows.append(tuple(np.round(np.maximum.accumulate(llr), 6).tolist()))
        return cls(tuple(np.round(grid, 6).tolist()), tuple(rows), tuple(modalities), source)

    def _row(self, modality: str) -> np.ndarray:
        try:
            return np.asarray(self.log_lr[self.modalities.index(modality)])
        except ValueError:
            raise ValueError(f"no likelihood ratio for modality {modality!r}") from None

    def statistic(self, scores: np.ndarray, modalities: Sequence[str] | None = None) -> np.ndarray:
        """The summed log likelihood ratio of each row of an (n, k) array of false-match scores (columns in
        the order of ``modalities``, default this fusion's own)."""
        names = tuple(modalities or self.modalities)
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != len(names):
            raise ValueError(f"scores must be an (n, {len(names)}) array")
        grid = np.asarray(self.grid)
        return sum(np.interp(s[:, i], grid, self._row(name)) for i, name in enumerate(names))

    def false_match_score(self, statistic: np.ndarray, modalities: Sequence[str] | None = None) -> np.ndarray:
        """``-log10 P(sum of log ratios >= statistic)`` for impostors of independent calibrated modalities."""
        values, tail = _null_tail(self, tuple(sorted(modalities or self.modalities)))
        p = np.interp(np.asarray(statistic, dtype=np.float64), values, tail, left=1.0, right=tail[-1])
        return _no_negative_zero(-np.log10(np.maximum(p, 1e-300)))  # a tail of 1 would give -0.0

    def fused_scores(self, scores: np.ndarray, modalities: Sequence[str] | None = None) -> np.ndarray:
        """False-match scores of each row's likelihood-ratio fusion (one column: the score unchanged)."""
        s = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
        names = tuple(modalities or self.modalities)
        if s.ndim == 2 and s.shape[1] == 1:
            return s[:, 0]
        return self.false_match_score(self.statistic(s, names), names)

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> LikelihoodRatioFusion:
        """Read what :meth:`save` wrote."""
        d = json.loads(Path(path).read_text())
        return cls(tuple(d["grid"]), tuple(tuple(r) for r in d["log_lr"]), tuple(d["modalities"]), d.get("source", ""))


_STEP_S = 0.01  # discretisation of the false-match scale for the impostor tail
_STEP_LLR = 0.01  # and of the log likelihood ratio


@functools.lru_cache(maxsize=64)
def _null_tail(fusion: LikelihoodRatioFusion, modalities: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(statistic values ascending, P(sum >= value)) for impostors: each modality's score ``S`` has
    ``P(S >= s) = 10^-s`` (up to the grid's top, where the rest of the mass sits), independent."""
    top = fusion.grid[-1]
    edges = np.arange(0.0, top + _STEP_S / 2, _STEP_S)
    mass = np.append(-np.diff(10.0 ** -edges), 10.0 ** -edges[-1])
    at = np.append((edges[:-1] + edges[1:]) / 2, top)
    lows, pmfs = [], []
    for name in modalities:
        llr = np.interp(at, np.asarray(fusion.grid), fusion._row(name))
        lo = math.floor(llr.min() / _STEP_LLR)
        bins = np.floor(llr / _STEP_LLR).astype(np.int64) - lo
        lows.append(lo)
        pmfs.append(np.bincount(bins, weights=mass))
    pmf = pmfs[0]
    for other in pmfs[1:]:
        pmf = np.convolve(pmf, other)
    values = (sum(lows) + np.arange(len(pmf))) * _STEP_LLR
    tail = np.cumsum(pmf[::-1])[::-1]
    return values, np.minimum(tail / tail[0], 1.0)


_SHIPPED: dict[str, LikelihoodRatioFusion | None] = {}
SHIPPED_FUSION = Path(__file__).resolve().parents[1] / "calibration" / "fusion.json"


def shipped_fusion() -> LikelihoodRatioFusion | None:
    """The likelihood-ratio fusion shipped with the package (:data:`SHIPPED_FUSION`), or None; read once."""
    if "fusion" not in _SHIPPED:
        _SHIPPED["fusion"] = LikelihoodRatioFusion.load(SHIPPED_FUSION) if SHIPPED_FUSION.exists() else None
    return _SHIPPED["fusion"]


def fuse_modalities(scores: Sequence[tuple[str, float]]) -> float:
    """The service's fusion of one subject's (modality, false-match score) pairs: the shipped likelihood-ratio
    fusion (the product rule where none is shipped), capped by a modality under its floor
    (:data:`CONTRADICTION_FLOORS`). One score is returned unchanged."""
    if not scores:
        return 0.0
    names = [m for m, _ in scores]
    values = [max(0.0, float(s)) for _, s in scores]
    fusion = shipped_fusion()
    if len(values) == 1:
        fused = values[0]
    elif fusion is not None:
        fused = float(fusion.fused_scores(np.array([values]), names)[0])
    else:
        fused = fuse_false_match_scores(values)
    floors = [CONTRADICTION_FLOORS.get(m) for m in names]
    return float(cap_contradictions(np.array([fused]), np.array([values]), floors)[0])


def search_scores(scores: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
    """The 1:N false-match scores of each row of an (n, m) array of one subject's per-modality scores (columns in
    the order of ``modalities``), with no contradiction floor.

    One column: the score unchanged. Several: ``max(F, max_i s_i - log10 m) - log10 2``, F the service's fusion
    without the cap (the shipped likelihood ratio, the product rule where none is shipped). For an impostor,
    ``P(F >= t) <= 10^-t`` (F is calibrated) and ``P(max_i s_i >= t + log10 m) <= m 10^-(t + log10 m) = 10^-t``
    (union bound over the m modalities), so the better of the two reaches t with a chance of at most ``2 10^-t``:
    the last ``log10 2`` brings it back to the ``10^-t`` the 1:N threshold assumes of each comparison (computed on the
    shipped fusion for face and one finger: without it 1.36 to 1.79 times the stated rate at t = 2..6, with it
    0.71 to 0.96 times; tests/test_fusion.py). A finger that matches while the face does not is thus found
    when the finger alone, less ``log10(2 m)``, reaches the threshold.
    """
    s = np.maximum(np.asarray(scores, dtype=np.float64), 0.0)
    names = tuple(modalities)
    if s.ndim != 2 or s.shape[1] != len(names) or not names:
        raise ValueError(f"scores must be an (n, {len(names)}) array with at least one column")
    m = s.shape[1]
    if m == 1:
        return s[:, 0].copy()
    fusion = shipped_fusion()
    fused = fusion.fused_scores(s, names) if fusion is not None else fisher_fused_scores(s)
    single = np.asarray(best_of_k(s.max(axis=1), m))
    return np.asarray(best_of_k(np.maximum(fused, single), 2))


def search_score(scores: Sequence[tuple[str, float]]) -> float:
    """:func:`search_scores` of one subject's (modality, false-match score) pairs (0 for none)."""
    if not scores:
        return 0.0
    return float(search_scores(np.array([[s for _, s in scores]]), [m for m, _ in scores])[0])


def contradicted(scores: Sequence[tuple[str, float]]) -> bool:
    """Whether one of a subject's (modality, false-match score) pairs is under its contradiction floor
    (:data:`CONTRADICTION_FLOORS`) while another modality was compared too: the evidence disagrees (a 1:N
    candidate found through a finger whose face does not match), which an officer must see."""
    if len(scores) < 2:
        return False
    return any(floor is not None and s < floor for floor, s in ((CONTRADICTION_FLOORS.get(m), s) for m, s in scores))


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
