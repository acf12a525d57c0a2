"""Verification and identification error rates in the terms of ISO/IEC 19795-1 (numbers in, numbers out).

No I/O here: every function takes score arrays and counts and returns numbers, so an auditor can check
them by hand. The conventions, stated once:

* **Scores** are similarities: higher means more alike (a distance ``d`` enters as ``-d``, or as the
  calibrated false-match score ``s = -log10(FMR)``).
* **Decision rule**: a comparison *matches* when ``score >= threshold``. Ties at the threshold match. So
  ``FMR(t) = #{impostor >= t} / N_impostor`` and ``FNMR(t) = #{genuine < t} / N_genuine``. The candidate
  thresholds are the observed scores themselves plus ``+inf`` (nothing matches); between two observed
  scores the rates do not change.
* **Failure to acquire (FTA)**: a pair where either sample failed to yield a template is not dropped.
  Following ISO/IEC 19795-1 (its generalised false accept and false reject rates) and the
  FVC protocol (a failed enrolment or comparison scores as "no match"), such a pair is a comparison that
  *never matches*, at every threshold: a genuine FTA pair is a false non-match, an impostor FTA pair is a
  correct non-match (it stays in the FMR denominator, and can never be a false match). These are the
  *generalised* rates, ``GFMR = FMR_acq * (1 - fta_imp)``, ``GFNMR = fta_gen + FNMR_acq * (1 - fta_gen)``,
  the figures this module reports by default; the rates over acquired comparisons only are also given
  (``generalised=False``).
* **EER** follows the FVC2000 definition (Maio et al., IEEE PAMI 24(3), 2002): ``t1`` is the largest
  threshold with ``FNMR <= FMR``, ``t2`` the smallest with ``FNMR >= FMR``; ``[EER_low, EER_high]`` is
  taken at whichever of the two has the smaller ``FMR + FNMR``, and ``EER = (EER_low + EER_high) / 2``.
  No interpolation between thresholds beyond that.
* **FNMR at FMR p**: the smallest threshold ``t`` (hence the lowest FNMR) with ``FMR(t) <= p``; its FNMR
  and ``t`` are reported. ``FMR100``/``FMR1000`` are FNMR at FMR 1% / 0.1%; ``ZeroFMR`` is FNMR at FMR 0.
* **Confidence intervals** (Wilson score and Clopper-Pearson exact, two-sided) treat the comparisons as
  independent Bernoulli trials. They are not: every sample takes part in several comparisons and every
  subject in several samples, so the true uncertainty is wider than these intervals say.
* **Rule of three**: with ``n`` comparisons and zero errors, the 95% upper bound on the error rate is about
  ``3 / n``. A claim "FMR <= p" therefore needs at least ``3 / p`` impostor comparisons (``rule_of_three``);
  fewer, and the figure comes with a warning. The rule of 30 (Doddington: 30 errors for +-30% at 90%
  confidence) is noted where a rate rests on fewer than 30 errors.
* **Open-set identification (1:N)**, as in ISO/IEC 19795-1:2021 and NIST FRVT 1:N: a mated search is a
  hit at ``(T, R)`` when its mated subject is returned at rank ``<= R`` with score ``>= T``; ``FNIR`` is the
  fraction of mated searches that are not hits. A non-mated search is a false positive at ``T`` when its
  best candidate scores ``>= T``; ``FPIR`` is their fraction. A probe that failed to acquire returns no
  candidate: a miss when mated, a correct rejection when non-mated. CMC (closed-set) is the fraction of
  mated searches with the mated subject at rank ``<= k``, whatever its score.

The quantiles of the beta and normal distributions come from ``scipy.special``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import special

DEFAULT_FMR_TARGETS: tuple[float, ...] = (0.01, 0.001, 0.0001)
DEFAULT_FPIR_TARGETS: tuple[float, ...] = (0.01, 0.1)
DEFAULT_CMC_RANKS: tuple[int, ...] = (1, 5, 10)
RULE_OF_30 = 30

# A rate k/n is compared with a target p as k <= p * n * (1 + _REL_EPS): 0.001 * 3000 must allow 3 errors.
_REL_EPS = 1e-9


def rate_key(p: float) -> str:
    """The JSON key of a target rate: ``0.001 -> "0.001"``, ``0.0001 -> "0.0001"`` (never 1e-04)."""
    text = f"{p:.10f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _as_scores(values: Iterable[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if np.isnan(arr).any():
        raise ValueError(f"{name} scores contain NaN; a failed comparison is an FTA count, not a score")
    if np.isposinf(arr).any():
        raise ValueError(f"{name} scores contain +inf, which would match at every threshold")
    return arr


@dataclass(frozen=True)
class VerificationScores:
    """The outcome of a 1:1 evaluation: scores of acquired pairs, and the pairs that failed to acquire."""

    genuine: np.ndarray
    impostor: np.ndarray
    genuine_fta: int = 0
    impostor_fta: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "genuine", np.sort(_as_scores(self.genuine, "genuine")))
        object.__setattr__(self, "impostor", np.sort(_as_scores(self.impostor, "impostor")))
        if self.genuine_fta < 0 or self.impostor_fta < 0:
            raise ValueError("FTA counts cannot be negative")
        if self.n_genuine == 0 or self.n_impostor == 0:
            raise ValueError(
                f"need at least one genuine and one impostor pair (got {self.n_genuine} genuine, "
                f"{self.n_impostor} impostor)"
            )

    @property
    def n_genuine(self) -> int:
        """Genuine pairs attempted, FTA included."""
        return len(self.genuine) + self.genuine_fta

    @property
    def n_impostor(self) -> int:
        """Impostor pairs attempted, FTA included."""
        return len(self.impostor) + self.impostor_fta

    def thresholds(self) -> np.ndarray:
        """Every threshold at which a rate can change: the observed scores, ascending, then +inf."""
        return np.concatenate([np.unique(np.concatenate([self.genuine, self.impostor])), [np.inf]])

    def counts(self, thresholds: np.ndarray | float, generalised: bool = True) -> tuple[np.ndarray, ...]:
        """(false matches, impostor denominator, false non-matches, genuine denominator) at each threshold."""
        t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
        fm = len(self.impostor) - np.searchsorted(self.impostor, t, side="left")  # impostor >= t
        fnm = np.searchsorted(self.genuine, t, side="left")  # genuine < t
        if generalised:
            fnm = fnm + self.genuine_fta
            return fm, np.full_like(fm, self.n_impostor), fnm, np.full_like(fnm, self.n_genuine)
        return fm, np.full_like(fm, len(self.impostor)), fnm, np.full_like(fnm, len(self.genuine))

    def rates(
        self, thresholds: np.ndarray | float, generalised: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(FMR, FNMR) at each threshold (generalised by default: FTA pairs never match)."""
        fm, n_imp, fnm, n_gen = self.counts(thresholds, generalised)
        return _safe_div(fm, n_imp), _safe_div(fnm, n_gen)


def _safe_div(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    out = np.full(k.shape, np.nan)
    np.divide(k, n, out=out, where=n > 0)
    return out


@dataclass(frozen=True)
class DetCurve:
    """FMR and FNMR at every distinct threshold (ascending thresholds: FMR falls, FNMR rises)."""

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray


def det_curve(scores: VerificationScores, generalised: bool = True) -> DetCurve:
    """The DET (and ROC) data: one point per distinct threshold."""
    t = scores.thresholds()
    fmr, fnmr = scores.rates(t, generalised)
    return DetCurve(thresholds=t, fmr=fmr, fnmr=fnmr)


@dataclass(frozen=True)
class EqualErrorRate:
    """The FVC EER: the midpoint of [low, high], found at ``threshold``."""

    eer: float
    low: float
    high: float
    threshold: float


def equal_error_rate(scores: VerificationScores, generalised: bool = True) -> EqualErrorRate:
    """EER by the FVC2000 convention (see the module docstring)."""
    curve = det_curve(scores, generalised)
    return _fvc_eer(curve.thresholds, curve.fmr, curve.fnmr)


def _fvc_eer(t: np.ndarray, fmr: np.ndarray, fnmr: np.ndarray) -> EqualErrorRate:
    """The FVC EER of a DET curve given as rates at ascending thresholds ``t`` (plain or weighted counts)."""
    below = np.flatnonzero(fnmr <= fmr)
    above = np.flatnonzero(fnmr >= fmr)
    if not (below.size or above.size):  # a rate without trials (nan): e.g. no genuine pair acquired
        return EqualErrorRate(eer=math.nan, low=math.nan, high=math.nan, threshold=math.nan)
    # FNMR rises and FMR falls with t, so both sets are non-empty unless FTA alone puts FNMR above FMR
    # at the lowest threshold (then only t2 exists) -- fall back to the one that does.
    i1 = int(below[-1]) if below.size else int(above[0])
    i2 = int(above[0]) if above.size else int(below[-1])
    if fnmr[i1] + fmr[i1] <= fmr[i2] + fnmr[i2]:
        low, high, at = float(fnmr[i1]), float(fmr[i1]), float(t[i1])
    else:
        low, high, at = float(fmr[i2]), float(fnmr[i2]), float(t[i2])
    low, high = min(low, high), max(low, high)
    return EqualErrorRate(eer=(low + high) / 2.0, low=low, high=high, threshold=at)


@dataclass(frozen=True)
class OperatingPoint:
    """Error counts and rates at one threshold."""

    threshold: float
    false_matches: int
    n_impostor: int
    false_non_matches: int
    n_genuine: int

    @property
    def fmr(self) -> float:
        return self.false_matches / self.n_impostor if self.n_impostor else math.nan

    @property
    def fnmr(self) -> float:
        return self.false_non_matches / self.n_genuine if self.n_genuine else math.nan


def operating_point(scores: VerificationScores, threshold: float, generalised: bool = True) -> OperatingPoint:
    """Counts and rates at ``threshold`` (a comparison matches when score >= threshold)."""
    fm, n_imp, fnm, n_gen = scores.counts(threshold, generalised)
    return OperatingPoint(float(threshold), int(fm[0]), int(n_imp[0]), int(fnm[0]), int(n_gen[0]))


def threshold_at_fmr(scores: VerificationScores, target_fmr: float, generalised: bool = True) -> float:
    """The smallest threshold whose FMR is at most ``target_fmr`` (+inf if only "nothing matches" is)."""
    if not 0.0 <= target_fmr <= 1.0:
        raise ValueError(f"target FMR {target_fmr} is not a rate in [0, 1]")
    t = scores.thresholds()
    fm, n_imp, _, _ = scores.counts(t, generalised)
    return float(t[_first_at_most(fm, n_imp, target_fmr)])


def _first_at_most(fm: np.ndarray, n_imp: np.ndarray | float, target_fmr: float) -> int:
    """The index of the first (lowest) threshold whose false matches ``fm`` (non-increasing, ending with +inf's
    zero, which always qualifies) are at most ``target_fmr`` of ``n_imp``."""
    return int(np.argmax(fm <= target_fmr * n_imp * (1.0 + _REL_EPS)))


def fnmr_at_fmr(scores: VerificationScores, target_fmr: float, generalised: bool = True) -> OperatingPoint:
    """The operating point with the lowest FNMR among those with FMR <= ``target_fmr``."""
    return operating_point(scores, threshold_at_fmr(scores, target_fmr, generalised), generalised)


def zero_fmr(scores: VerificationScores, generalised: bool = True) -> OperatingPoint:
    """ZeroFMR: the lowest FNMR at which no impostor comparison matches."""
    return fnmr_at_fmr(scores, 0.0, generalised)


def zero_fnmr(scores: VerificationScores, generalised: bool = True) -> OperatingPoint:
    """ZeroFNMR: the lowest FMR at which no acquired genuine comparison fails (the lowest genuine score).

    With no acquired genuine comparison (every genuine pair failed to acquire) every threshold leaves none
    failing, and the lowest FMR is that of +inf: nothing matches, FMR 0 and (generalised) FNMR 1.0."""
    if not len(scores.genuine):
        return operating_point(scores, math.inf, generalised)
    return operating_point(scores, float(scores.genuine[0]), generalised)


# ---------------------------------------------------------------------------------------------------------
# Uncertainty


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (assumes independent trials)."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"{k} errors out of {n} trials")
    z = float(special.ndtri(0.5 + confidence / 2.0))
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson exact interval for k/n (assumes independent trials; conservative)."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"{k} errors out of {n} trials")
    alpha = 1.0 - confidence
    lower = 0.0 if k == 0 else float(special.betaincinv(k, n - k + 1, alpha / 2))
    upper = 1.0 if k == n else float(special.betaincinv(k + 1, n - k, 1 - alpha / 2))
    return (lower, upper)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for paired outcomes: ``b`` and ``c`` are the discordant counts.

    For two systems on the same genuine pairs, ``b`` pairs only the first matched and ``c`` only the
    second: under "equal FNMR" each discordant pair is a fair coin, so p = P(Binomial(b + c, 1/2) as
    extreme). Pairs still share images, so this too is optimistic.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts cannot be negative")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def rule_of_three(target_rate: float) -> int:
    """Comparisons needed to claim a rate <= ``target_rate`` at ~95% confidence with zero errors: 3/p."""
    if target_rate <= 0:
        raise ValueError("no finite number of comparisons supports a zero-error rate")
    return math.ceil(3.0 / target_rate - 1e-9)


# ---------------------------------------------------------------------------------------------------------
# Weighted rates, and the subsets bootstrap (resampling identities)

SUBSETS_SEED = 19795
SUBSETS_METHOD = (
    "subsets bootstrap (Bolle, Ratha & Pankanti): identities resampled with replacement, a genuine comparison "
    "weighted by its identity's multiplicity, an impostor comparison by the product of its two identities'; "
    "thresholds for FNMR at FMR chosen again in each replicate; percentile interval"
)


@dataclass(frozen=True)
class WeightedScores:
    """Genuine and impostor scores sorted once, to be counted under many weightings (a bootstrap replicate
    weighs each comparison by how often it was drawn; weight 0 leaves it out).

    The conventions of :class:`VerificationScores`: a comparison matches when score >= threshold; ``-inf`` or
    nan marks a comparison that failed to acquire, which never matches (generalised rates: a genuine one is a
    false non-match, an impostor one stays in the FMR denominator); the candidate thresholds are the acquired
    scores and +inf. With unit weights the counts are :meth:`VerificationScores.counts`' exactly. A score
    weighted 0 stays a candidate threshold, which changes no figure: the rates between two scores that are
    drawn are those at the higher one.
    """

    genuine: np.ndarray  # ascending
    impostor: np.ndarray  # ascending
    genuine_order: np.ndarray  # genuine = the caller's genuine[genuine_order]
    impostor_order: np.ndarray
    thresholds: np.ndarray
    genuine_below: np.ndarray  # per threshold, how many sorted genuine scores are below it
    impostor_below: np.ndarray

    @classmethod
    def of(cls, genuine: np.ndarray, impostor: np.ndarray) -> WeightedScores:
        """Sort ``genuine`` and ``impostor`` (per comparison, in the caller's order) once."""
        g = np.asarray(genuine, np.float64).ravel()
        i = np.asarray(impostor, np.float64).ravel()
        g, i = np.where(np.isnan(g), -np.inf, g), np.where(np.isnan(i), -np.inf, i)
        if np.isposinf(g).any() or np.isposinf(i).any():
            raise ValueError("scores contain +inf, which would match at every threshold")
        og, oi = np.argsort(g, kind="stable"), np.argsort(i, kind="stable")
        gs, is_ = g[og], i[oi]
        both = np.concatenate([gs, is_])
        t = np.concatenate([np.unique(both[np.isfinite(both)]), [np.inf]])
        return cls(gs, is_, og, oi, t, np.searchsorted(gs, t, side="left"), np.searchsorted(is_, t, side="left"))

    def counts(self, genuine_w: np.ndarray, impostor_w: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, float]:
        """(false matches, impostor weight, false non-matches, genuine weight) at each threshold, every
        comparison counted with its weight (``genuine_w`` and ``impostor_w`` in sorted order: a bootstrap sorts
        each comparison's identities once, ``identities[genuine_order]``, and weighs them in that order)."""
        cg = np.concatenate([[0.0], np.cumsum(genuine_w, dtype=np.float64)])
        ci = np.concatenate([[0.0], np.cumsum(impostor_w, dtype=np.float64)])
        return ci[-1] - ci[self.impostor_below], float(ci[-1]), cg[self.genuine_below], float(cg[-1])

    def figures(self, genuine_w: np.ndarray, impostor_w: np.ndarray, targets: Sequence[float],
                threshold: float | None = None) -> np.ndarray:
        """Weighted ``[EER, FNMR at each target FMR..., FMR and FNMR at threshold]`` (the last two only with
        ``threshold``), each as :mod:`benchmarks.metrics` defines it; nan where no genuine or no impostor
        comparison has weight. FNMR at FMR p is read at the lowest threshold whose weighted FMR is at most p.
        Weights in sorted order, as :meth:`counts`."""
        fm, n_imp, fnm, n_gen = self.counts(genuine_w, impostor_w)
        width = 1 + len(targets) + (2 if threshold is not None else 0)
        if n_imp <= 0 or n_gen <= 0:
            return np.full(width, np.nan)
        fmr, fnmr = fm / n_imp, fnm / n_gen
        out = [_fvc_eer(self.thresholds, fmr, fnmr).eer]
        out += [float(fnmr[_first_at_most(fm, n_imp, p)]) for p in targets]
        if threshold is not None:
            at = int(np.searchsorted(self.thresholds, threshold, side="left"))  # rates at t = at the next score
            out += [float(fmr[at]), float(fnmr[at])]
        return np.array(out)


def fnmr_at_fmr_weighted(genuine: np.ndarray, genuine_w: np.ndarray, impostor: np.ndarray, impostor_w: np.ndarray,
                         targets: Sequence[float]) -> list[float]:
    """FNMR at the lowest threshold whose weighted FMR is at most each target (``-inf``: failed to acquire);
    with unit weights, :func:`fnmr_at_fmr`'s figure. One-off: a bootstrap sorts once with :class:`WeightedScores`."""
    ws = WeightedScores.of(genuine, impostor)
    return list(ws.figures(np.asarray(genuine_w)[ws.genuine_order], np.asarray(impostor_w)[ws.impostor_order],
                           targets)[1:])


def identity_multiplicities(rng: np.random.Generator, n: int) -> np.ndarray:
    """How often each of ``n`` identities is drawn when ``n`` are drawn with replacement (float, sums to n)."""
    return np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)


def subsets_bootstrap(
    scores: Sequence[np.ndarray],
    genuine: np.ndarray,
    identity_a: np.ndarray,
    identity_b: np.ndarray,
    targets: Sequence[float] = DEFAULT_FMR_TARGETS,
    thresholds: Sequence[float | None] | None = None,
    replicates: int = 500,
    seed: int = SUBSETS_SEED,
    confidence: float = 0.95,
) -> list[dict]:
    """Subject-level 95% intervals of EER, FNMR at each target FMR and FMR / FNMR at a fixed threshold.

    ``scores``: one array per pipeline, a score per comparison (nan where it failed to acquire: never matches);
    ``genuine``: whether each comparison is of one person; ``identity_a`` / ``identity_b``: the identities of
    its two samples (any labels). All pipelines are weighed by the same draws (a paired bootstrap).

    The clustered data bootstrap of ISO/IEC 19795-1 and Bolle, Ratha & Pankanti's "subsets bootstrap": the
    unit drawn is the identity, not the comparison, because comparisons that share a person (and so images)
    err together. Each replicate draws as many identities as there are, with replacement; identity ``k`` drawn
    ``m_k`` times stands for ``m_k`` distinct people with its samples. So:

    * a **genuine** comparison is kept ``m_k`` times (each copy of the person brings its own comparisons; it
      is weighted by the identity of its first sample: the pairs file says the two are one person);
    * an **impostor** comparison of identities ``a`` and ``b`` is kept ``m_a * m_b`` times: every copy of ``a``
      meets every copy of ``b``, as each pair of distinct people in the replicate would be compared. It is
      kept only if both were drawn; weighting it by ``m_a`` or ``m_a + m_b`` instead would keep comparisons
      with a person the replicate does not hold. It is the rule of the fused benchmark's two-way bootstrap
      (:mod:`benchmarks.chimeric`), and with an all-against-all set it gives each replicate's population its
      own all-against-all comparisons.

    Each replicate recomputes every figure as the point figure does: FNMR at FMR p at the lowest threshold
    whose (weighted) FMR is at most p, chosen again in the replicate; the EER by the FVC rule; FMR and FNMR at
    the fixed ``thresholds[i]`` (the service's) of pipeline i. The interval is the replicates' percentile
    interval; replicates that drew no genuine or no impostor comparison have no figure, are counted in
    ``undefined_replicates`` and left out. Seeded: the same inputs and seed give the same intervals.

    What it cannot do: with few identities the interval is as coarse as they are (one identity holding every
    genuine comparison gives every replicate the same FNMR, a zero-width interval: between-person variation
    cannot be seen in one person); where no error is seen no replicate has one, and its [0, 0] bounds nothing
    (the rule of three and Clopper-Pearson's upper bound stand); a percentile interval of a small rate with
    few errors reaches too little high, as the plain bootstrap's does; and FNMR at an FMR the impostors cannot
    support (fewer than the rule of three's 3 / p: ZeroFMR in effect) is set by the one or few highest impostor
    scores, which a replicate keeps only where both their identities are drawn (about 40% of replicates with
    many identities), so its interval lies mostly under the point figure and is no measure of FNMR at that FMR.
    Read it beside Clopper-Pearson, which sees only the comparison count.
    """
    if replicates < 1:
        raise ValueError("the bootstrap needs at least one replicate")
    g = np.asarray(genuine, bool).ravel()
    pipelines = [np.asarray(s, np.float64).ravel() for s in scores]
    if any(len(s) != len(g) for s in pipelines) or len(identity_a) != len(g) or len(identity_b) != len(g):
        raise ValueError("scores, genuine and identities must describe the same comparisons")
    labels, codes = np.unique(np.concatenate([np.asarray(identity_a), np.asarray(identity_b)]), return_inverse=True)
    codes = codes.astype(np.int32)  # a smaller index: the weights are gathered by it in every replicate
    ida, idb = codes[: len(g)], codes[len(g):]
    thresholds = list(thresholds) if thresholds is not None else [None] * len(pipelines)
    prepared = []
    for s in pipelines:  # each pipeline's scores sorted once, with their identities in that order
        ws = WeightedScores.of(s[g], s[~g])
        prepared.append((ws, ida[g][ws.genuine_order], ida[~g][ws.impostor_order], idb[~g][ws.impostor_order]))
    rng = np.random.default_rng(seed)
    draws: list[list[np.ndarray]] = [[] for _ in pipelines]
    for _ in range(replicates):
        mult = identity_multiplicities(rng, len(labels))
        for rows, (ws, gen_id, imp_a, imp_b), t in zip(draws, prepared, thresholds, strict=True):
            rows.append(ws.figures(mult[gen_id], mult[imp_a] * mult[imp_b], targets, t))
    tail = 100.0 * (1.0 - confidence) / 2.0
    out = []
    for rows, t in zip(draws, thresholds, strict=True):
        arr = np.array(rows)
        defined = ~np.isnan(arr).all(axis=1)
        if defined.any():
            lo, hi = np.nanpercentile(arr[defined], [tail, 100.0 - tail], axis=0)
        else:
            lo = hi = np.full(arr.shape[1], np.nan)
        entry: dict = {
            "method": SUBSETS_METHOD,
            "replicates": replicates,
            "undefined_replicates": int((~defined).sum()),
            "seed": seed,
            "n_identities": len(labels),
            "confidence": confidence,
            "eer": [float(lo[0]), float(hi[0])],
            "fnmr_at_fmr": {rate_key(p): [float(lo[1 + k]), float(hi[1 + k])] for k, p in enumerate(targets)},
        }
        if t is not None:
            entry["at_operating_threshold"] = {"threshold": t, "fmr": [float(lo[-2]), float(hi[-2])],
                                               "fnmr": [float(lo[-1]), float(hi[-1])]}
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------------
# Summaries (JSON-ready)


def _rate_entry(k: int, n: int, confidence: float) -> dict:
    return {
        "errors": k,
        "n": n,
        "rate": k / n if n else None,
        "wilson": list(wilson_interval(k, n, confidence)),
        "clopper_pearson": list(clopper_pearson_interval(k, n, confidence)),
    }


def _point_entry(point: OperatingPoint, confidence: float) -> dict:
    return {
        "threshold": point.threshold if math.isfinite(point.threshold) else None,
        "fmr": _rate_entry(point.false_matches, point.n_impostor, confidence),
        "fnmr": _rate_entry(point.false_non_matches, point.n_genuine, confidence),
    }


def verification_warnings(
    scores: VerificationScores, targets: Sequence[float] = DEFAULT_FMR_TARGETS, generalised: bool = True
) -> list[str]:
    """Plain-language warnings where too few comparisons back a figure."""
    warnings = []
    for p in targets:
        need = rule_of_three(p)
        if scores.n_impostor < need:
            warnings.append(
                f"FNMR at FMR {rate_key(p)}: only {scores.n_impostor} impostor comparisons; a claim of "
                f"FMR <= {rate_key(p)} needs at least {need} (rule of three), so this operating point "
                f"is not supported by the data (the threshold found is the one with at most "
                f"{math.floor(p * scores.n_impostor * (1 + _REL_EPS))} false matches)."
            )
        point = fnmr_at_fmr(scores, p, generalised)
        if 0 < point.false_non_matches < RULE_OF_30:
            warnings.append(
                f"FNMR at FMR {rate_key(p)} rests on {point.false_non_matches} false non-matches "
                f"(fewer than {RULE_OF_30}, rule of 30): its relative uncertainty is large."
            )
    if scores.genuine_fta or scores.impostor_fta:
        warnings.append(
            f"{scores.genuine_fta} genuine and {scores.impostor_fta} impostor pairs failed to acquire; "
            "they count as non-matches at every threshold (generalised rates)."
        )
    warnings.append(
        "Confidence intervals assume independent comparisons; comparisons share samples and subjects, "
        "so the real uncertainty is larger."
    )
    return warnings


def summarise_verification(
    scores: VerificationScores,
    targets: Sequence[float] = DEFAULT_FMR_TARGETS,
    operating_threshold: float | None = None,
    confidence: float = 0.95,
) -> dict:
    """Every verification figure, JSON-ready: counts, EER, FNMR/threshold at each FMR, ZeroFMR, CIs."""
    gen = equal_error_rate(scores, generalised=True)
    acq = equal_error_rate(scores, generalised=False)
    out: dict = {
        "convention": "match when score >= threshold; FTA pairs never match (generalised FMR/FNMR)",
        "n_genuine": scores.n_genuine,
        "n_impostor": scores.n_impostor,
        "n_genuine_acquired": len(scores.genuine),
        "n_impostor_acquired": len(scores.impostor),
        "genuine_fta": scores.genuine_fta,
        "impostor_fta": scores.impostor_fta,
        "eer": gen.eer,
        "eer_interval": [gen.low, gen.high],
        "eer_threshold": gen.threshold,
        "eer_acquired_only": acq.eer,
        "fnmr_at_fmr": {},
        "threshold_at_fmr": {},
        "fnmr_at_fmr_acquired_only": {},
        "operating_points": {},
        "confidence": confidence,
    }
    for p in targets:
        point = fnmr_at_fmr(scores, p)
        key = rate_key(p)
        out["fnmr_at_fmr"][key] = point.fnmr
        out["threshold_at_fmr"][key] = point.threshold if math.isfinite(point.threshold) else None
        out["operating_points"][key] = _point_entry(point, confidence)
        out["fnmr_at_fmr_acquired_only"][key] = fnmr_at_fmr(scores, p, generalised=False).fnmr
    out["fmr100"] = fnmr_at_fmr(scores, 0.01).fnmr
    out["fmr1000"] = fnmr_at_fmr(scores, 0.001).fnmr
    zf = zero_fmr(scores)
    out["zero_fmr"] = {"fnmr": zf.fnmr, "threshold": zf.threshold if math.isfinite(zf.threshold) else None}
    zn = zero_fnmr(scores)
    out["zero_fnmr"] = {"fmr": zn.fmr, "threshold": zn.threshold if math.isfinite(zn.threshold) else None}
    if operating_threshold is not None:
        out["at_operating_threshold"] = _point_entry(operating_point(scores, operating_threshold), confidence)
    out["warnings"] = verification_warnings(scores, targets)
    return out


# ---------------------------------------------------------------------------------------------------------
# Open-set identification (1:N)


@dataclass(frozen=True)
class SearchOutcomes:
    """The outcome of a 1:N evaluation.

    ``mated_rank[i]`` is the 1-based rank of the mated subject in mated search i's candidate list (0 when
    it was not returned), ``mated_score[i]`` its score (-inf when not returned); ``nonmated_top_score[j]``
    is the best candidate score of non-mated search j (-inf when the list was empty). Searches whose
    probe failed to acquire are counted in ``mated_fta`` / ``nonmated_fta``.
    """

    mated_rank: np.ndarray
    mated_score: np.ndarray
    nonmated_top_score: np.ndarray
    mated_fta: int = 0
    nonmated_fta: int = 0
    _sorted_nonmated: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rank = np.asarray(self.mated_rank, dtype=np.int64).ravel()
        score = np.asarray(self.mated_score, dtype=np.float64).ravel()
        top = np.asarray(self.nonmated_top_score, dtype=np.float64).ravel()
        if rank.shape != score.shape:
            raise ValueError("mated_rank and mated_score differ in length")
        if (rank < 0).any():
            raise ValueError("ranks are 1-based; 0 means 'not returned'")
        if np.isnan(score).any() or np.isnan(top).any():
            raise ValueError("scores contain NaN; use -inf for 'no candidate'")
        score = np.where(rank == 0, -np.inf, score)
        object.__setattr__(self, "mated_rank", rank)
        object.__setattr__(self, "mated_score", score)
        object.__setattr__(self, "nonmated_top_score", top)
        object.__setattr__(self, "_sorted_nonmated", np.sort(top))
        if self.n_mated == 0 or self.n_nonmated == 0:
            raise ValueError(
                f"need mated and non-mated searches (got {self.n_mated} mated, {self.n_nonmated} non-mated)"
            )

    @property
    def n_mated(self) -> int:
        return len(self.mated_rank) + self.mated_fta

    @property
    def n_nonmated(self) -> int:
        return len(self.nonmated_top_score) + self.nonmated_fta

    def fpir(self, threshold: float) -> float:
        """Fraction of non-mated searches whose best candidate scores >= threshold."""
        top = self._sorted_nonmated
        return float(len(top) - np.searchsorted(top, threshold, side="left")) / self.n_nonmated

    def fnir(self, threshold: float, rank: int = 1) -> float:
        """Fraction of mated searches without their mate at rank <= ``rank`` with score >= threshold."""
        hits = (self.mated_rank >= 1) & (self.mated_rank <= rank) & (self.mated_score >= threshold)
        return float(self.n_mated - int(hits.sum())) / self.n_mated

    def threshold_at_fpir(self, target_fpir: float) -> float:
        """The smallest threshold with FPIR <= ``target_fpir``, among every score where a rate can change (the
        non-mated top scores and the mated scores, as 1:1's :meth:`ScoreSet.thresholds`): FPIR is the same for any
        threshold between two non-mated scores, and the lowest one there, a mated score, gives the lowest FNIR."""
        top = self._sorted_nonmated
        scores = np.concatenate([top, self.mated_score])
        candidates = np.concatenate([np.unique(scores[np.isfinite(scores)]), [np.inf]])
        fp = len(top) - np.searchsorted(top, candidates, side="left")
        ok = np.flatnonzero(fp <= target_fpir * self.n_nonmated * (1.0 + _REL_EPS))
        return float(candidates[ok[0]])


def fnir_at_fpir(outcomes: SearchOutcomes, target_fpir: float, rank: int = 1) -> dict:
    """FNIR at the smallest threshold whose FPIR is at most ``target_fpir``, with counts."""
    t = outcomes.threshold_at_fpir(target_fpir)
    fpir = outcomes.fpir(t)
    fnir = outcomes.fnir(t, rank)
    return {
        "threshold": t if math.isfinite(t) else None,
        "fpir": fpir,
        "fnir": fnir,
        "false_positives": round(fpir * outcomes.n_nonmated),
        "false_negatives": round(fnir * outcomes.n_mated),
        "rank": rank,
    }


def cmc(outcomes: SearchOutcomes, max_rank: int) -> np.ndarray:
    """Closed-set identification rate at ranks 1..max_rank (FTA probes count as misses)."""
    ranks = outcomes.mated_rank[outcomes.mated_rank >= 1]
    counts = np.bincount(np.minimum(ranks, max_rank + 1), minlength=max_rank + 2)[1 : max_rank + 1]
    return np.cumsum(counts) / outcomes.n_mated


def fpir_fnir_curve(outcomes: SearchOutcomes, rank: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FPIR, FNIR) at every distinct score, for a DET-style plot of open-set search."""
    scores = np.concatenate([outcomes.nonmated_top_score, outcomes.mated_score])
    t = np.concatenate([np.unique(scores[np.isfinite(scores)]), [np.inf]])
    return t, np.array([outcomes.fpir(x) for x in t]), np.array([outcomes.fnir(x, rank) for x in t])


def summarise_identification(
    outcomes: SearchOutcomes,
    fpir_targets: Sequence[float] = DEFAULT_FPIR_TARGETS,
    cmc_ranks: Sequence[int] = DEFAULT_CMC_RANKS,
    list_length: int | None = None,
    confidence: float = 0.95,
) -> dict:
    """Every open-set figure, JSON-ready: FNIR at each FPIR (rank 1 and rank ``list_length``), CMC."""
    max_rank = max(max(cmc_ranks), list_length or 1)
    curve = cmc(outcomes, max_rank)
    out: dict = {
        "convention": "hit when the mate is at rank <= R with score >= T; a non-mated search is a false "
        "positive when its best candidate scores >= T; FTA probes return no candidate",
        "n_mated": outcomes.n_mated,
        "n_nonmated": outcomes.n_nonmated,
        "mated_fta": outcomes.mated_fta,
        "nonmated_fta": outcomes.nonmated_fta,
        "fnir_at_fpir": {},
        "cmc": {str(r): float(curve[r - 1]) for r in cmc_ranks},
        "cmc_curve": [float(x) for x in curve],
        "confidence": confidence,
        "warnings": [],
    }
    for p in fpir_targets:
        entry = fnir_at_fpir(outcomes, p, rank=1)
        t = outcomes.threshold_at_fpir(p)
        fn = entry["false_negatives"]
        entry["fnir_ci_wilson"] = list(wilson_interval(fn, outcomes.n_mated, confidence))
        if list_length and list_length > 1:
            entry["fnir_at_rank_list_length"] = outcomes.fnir(t, list_length)
            entry["list_length"] = list_length
        out["fnir_at_fpir"][rate_key(p)] = entry
        need = rule_of_three(p)
        if outcomes.n_nonmated < need:
            out["warnings"].append(
                f"FNIR at FPIR {rate_key(p)}: only {outcomes.n_nonmated} non-mated searches; a claim of "
                f"FPIR <= {rate_key(p)} needs at least {need} (rule of three)."
            )
    out["warnings"].append(
        "Confidence intervals assume independent searches; searches share subjects, so the real "
        "uncertainty is larger."
    )
    return out
