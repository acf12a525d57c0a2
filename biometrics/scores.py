"""False-match scores: every comparison stated as s = -log10(FMR).

A raw comparison value (a face embedding distance, a fingerprint similarity) means nothing to an
officer or an auditor. Its false-match rate does: the fraction of impostor comparisons (two different
people) that come out at least this alike, measured on a calibration set. The service states every score
as ``s = -log10(FMR)``, so s = 3 is one impostor in 1,000, one scale for every modality and call, and an
operating threshold at FMR f is simply ``s = -log10(f)`` (after SourceAFIS, whose scores are stated in
false-match terms).

Beyond the rarest impostor the calibration set holds (FMR < 1/n), the score is extrapolated linearly in
the raw value from the tail of the measured distribution, which for a tail that falls faster than
exponentially (as a Gaussian's does) understates the score: the conservative side. It is capped at
``MAX_SCORE``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_SCORE = 12.0
CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
_TAIL_FMR = 1e-2  # the tail fit uses the impostors rarer than this
# what measures a rarer FMR, by modality (check_measures' advice)
_MORE_PAIRS = {
    "fingerprint": "capture more fingers (a station's 100 fingers, four placements each, give 79,200)",
    "face": "calibrate on more faces (checkpoint-bench calibrate; docs/scale.md)",
}


def threshold_for_fmr(fmr: float) -> float:
    """The false-match score that an operating point at false-match rate ``fmr`` corresponds to."""
    if not 0.0 < fmr <= 1.0:
        raise ValueError(f"a false-match rate is in (0, 1], not {fmr}")
    return float(-np.log10(fmr)) + 0.0  # FMR 1: 0.0, not -0.0


def threshold_for_fpir(fpir: float, gallery_size: int, floor: float = 0.0) -> float:
    """The score a 1:N search must reach so that at most ``fpir`` of non-mated searches return a candidate.

    A search of a gallery of ``gallery_size`` subjects makes that many impostor comparisons; the chance
    that one of them scores ``s = -log10(FMR)`` or more is at most ``gallery_size * 10**-s`` (union bound),
    so ``s >= -log10(fpir) + log10(gallery_size)`` keeps the false-positive identification rate at most
    ``fpir``. Never below ``floor`` (the 1:1 threshold), so a small gallery keeps the verification threshold.
    """
    if not 0.0 < fpir <= 1.0:
        raise ValueError(f"a false-positive identification rate is in (0, 1], not {fpir}")
    return float(max(floor, -np.log10(fpir) + np.log10(max(gallery_size, 1))))


@dataclass
class ScoreCalibration:
    """A measured map from raw comparison values to false-match scores.

    ``values`` are increasing similarities (raw values negated when lower means more alike) and
    ``scores`` the measured ``-log10(FMR)`` at each, non-decreasing.
    """

    modality: str
    higher_is_better: bool
    values: list[float]
    scores: list[float]
    tail_slope: float
    n_impostor: int
    source: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    #: Distinct pairs of captures among the impostor comparisons, when fewer than ``n_impostor`` (the same pair
    #: compared again under other placements or windows is not another measurement of the tail); None: each
    #: comparison is a pair of its own.
    n_distinct_pairs: int | None = None

    @classmethod
    def fit(
        cls,
        impostor_raw: np.ndarray,
        *,
        higher_is_better: bool,
        modality: str,
        source: str = "",
        points: int = 400,
    ) -> ScoreCalibration:
        """Measure the calibration from impostor comparison values (raw, as the comparator gives them)."""
        raw = np.asarray(impostor_raw, dtype=np.float64).ravel()
        raw = raw[np.isfinite(raw)]
        n = raw.size
        if n < 100:
            raise ValueError(f"{n} impostor comparisons cannot calibrate false-match scores (need >= 100)")
        sim = np.sort(raw if higher_is_better else -raw)
        # FMR(v) = P(impostor >= v). At the k-th largest impostor value, FMR = k / n.
        ranks = np.unique(np.round(np.geomspace(1, n, points)).astype(np.int64))  # k = 1 .. n
        values = sim[n - ranks]
        scores = 0.0 - np.log10(ranks / n)  # 0.0, not -0.0, where every impostor is at or over the value
        # Increasing values with non-decreasing scores; where values tie keep the largest FMR (lowest score).
        order = np.argsort(values, kind="stable")
        values, scores = values[order], scores[order]
        uniq_values, first = np.unique(values, return_index=True)
        uniq_scores = np.minimum.reduceat(scores, first)
        uniq_scores = np.maximum.accumulate(uniq_scores)
        tail = uniq_scores >= -np.log10(_TAIL_FMR)
        if tail.sum() >= 2 and np.ptp(uniq_values[tail]) > 0:
            slope = float(np.polyfit(uniq_values[tail], uniq_scores[tail], 1)[0])
        else:
            slope = float((uniq_scores[-1] - uniq_scores[0]) / max(np.ptp(uniq_values), 1e-12))
        return cls(
            modality=modality,
            higher_is_better=higher_is_better,
            values=uniq_values.tolist(),
            scores=uniq_scores.tolist(),
            tail_slope=max(slope, 0.0),
            n_impostor=int(n),
            source=source,
        )

    def _similarity(self, raw: np.ndarray) -> np.ndarray:
        return raw if self.higher_is_better else -raw

    def score(self, raw: float | np.ndarray) -> float | np.ndarray:
        """False-match score(s) ``-log10(FMR)`` of raw comparison value(s)."""
        arr = np.asarray(raw, dtype=np.float64)
        v = self._similarity(arr)
        values = np.asarray(self.values)
        scores = np.asarray(self.scores)
        s = np.interp(v, values, scores, left=0.0, right=scores[-1])
        beyond = v > values[-1]
        s = np.where(beyond, scores[-1] + self.tail_slope * (v - values[-1]), s)
        s = np.clip(s, 0.0, MAX_SCORE) + 0.0  # -0.0 (a calibration's first score, -log10(1)) becomes 0.0
        return float(s) if np.ndim(s) == 0 else s

    def raw_threshold(self, fmr: float) -> float:
        """The raw comparison value whose false-match score is ``-log10(fmr)``."""
        target = threshold_for_fmr(fmr)
        values = np.asarray(self.values)
        scores = np.asarray(self.scores)
        if target <= scores[-1]:
            idx = int(np.searchsorted(scores, target, side="left"))
            v = float(values[min(idx, len(values) - 1)])
        elif self.tail_slope > 0:
            v = float(values[-1] + (target - scores[-1]) / self.tail_slope)
        else:
            v = float("inf")
        return v if self.higher_is_better else -v

    @property
    def measured_fmr_floor(self) -> float:
        """The smallest FMR the calibration set measured (1 / impostor comparisons)."""
        return 1.0 / self.n_impostor

    @property
    def n_pairs(self) -> int:
        """The impostor comparisons that count as measurements of the tail: distinct pairs of captures."""
        return self.n_impostor if self.n_distinct_pairs is None else min(self.n_distinct_pairs, self.n_impostor)

    def check_measures(self, fmr: float) -> None:
        """Refuse (ValueError) an operating FMR the calibration's impostor comparisons cannot measure.

        With n impostor comparisons and none at or over a threshold, all one may say is FMR < 3/n (95%
        confidence, the rule of three), so a threshold stated at ``fmr`` needs n >= 3 / fmr; below that it
        would rest on the extrapolated tail alone. n counts distinct pairs of captures (:attr:`n_pairs`): one
        pair compared again under shifted windows is not another measurement."""
        needed = self._pairs_needed(fmr)
        n = self.n_pairs
        if n < needed:
            counted = (f"{n} distinct pairs of captures ({self.n_impostor} impostor comparisons)"
                       if n < self.n_impostor else f"{n} impostor comparisons")
            raise ValueError(
                f"{counted} measure an FMR down to {self.measurable_fmr:.2g} at best (3/n); FMR {fmr:g} needs at "
                f"least {needed}: {_MORE_PAIRS.get(self.modality, 'calibrate on more impostor pairs')}")

    def measures(self, fmr: float) -> bool:
        """Whether :meth:`check_measures` holds at ``fmr`` (asked at every decision on fingerprints alone, and at
        every change of the 1:N threshold for the face)."""
        return self.n_pairs >= self._pairs_needed(fmr)

    @property
    def measurable_fmr(self) -> float:
        """The smallest FMR the calibration's distinct impostor pairs measure: 3 / :attr:`n_pairs` (the rule of
        three); a rarer FMR is read on the extrapolated tail."""
        return 3.0 / self.n_pairs

    @property
    def ceiling(self) -> float:
        """The highest false-match score any comparison can get: the score of a distance of 0 (the tail extrapolated
        to it), or :data:`MAX_SCORE` for a similarity when the tail rises (no similarity is the most alike)."""
        if not self.higher_is_better:
            return float(self.score(0.0))
        return MAX_SCORE if self.tail_slope > 0 else float(min(self.scores[-1], MAX_SCORE))

    def reaches(self, fmr: float) -> bool:
        """Whether any comparison can score the threshold of FMR ``fmr`` (``-log10(fmr)`` at most :attr:`ceiling`)."""
        return threshold_for_fmr(fmr) <= self.ceiling + 1e-9

    def check_reaches(self, fmr: float) -> None:
        """Refuse (ValueError) an operating FMR whose threshold no comparison can score: a decision at it on this
        modality alone could never match, whatever the samples."""
        if not self.reaches(fmr):
            raise ValueError(
                f"FMR {fmr:g} is a threshold of s = {threshold_for_fmr(fmr):.2f}, and the {self.modality} calibration "
                f"scores no comparison above {self.ceiling:.2f} (measured to {self.scores[-1]:.2f} on "
                f"{self.n_impostor} impostor comparisons, extrapolated beyond): no {self.modality} comparison could "
                f"ever match; it measures an FMR down to {self.measurable_fmr:.2g}")

    @staticmethod
    def _pairs_needed(fmr: float) -> int:
        """The distinct impostor pairs that measure FMR ``fmr``: 3 / fmr (the rule of three); ValueError when
        ``fmr`` is no false-match rate."""
        threshold_for_fmr(fmr)  # a false-match rate at all
        return int(np.ceil(3.0 / fmr - 1e-9))

    def save(self, path: str | Path) -> None:
        """Write the calibration as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ScoreCalibration:
        """Read a calibration written by :meth:`save`."""
        return cls(**json.loads(Path(path).read_text()))

    @classmethod
    def load_checked(cls, path: str | Path, modality: str) -> ScoreCalibration:
        """:meth:`load`, refusing (ValueError) a file that is not a usable calibration of ``modality``."""
        try:
            calibration = cls.load(path)
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a score calibration ({exc})") from None
        if calibration.modality != modality:
            raise ValueError(f"{path} calibrates {calibration.modality!r} scores, not {modality!r}")
        if calibration.higher_is_better is not (modality == "fingerprint"):  # similarity / distance
            raise ValueError(f"{path}: a {modality} comparison is a "
                             f"{'similarity' if modality == 'fingerprint' else 'distance'}; the file says otherwise")
        values, scores = np.asarray(calibration.values, float), np.asarray(calibration.scores, float)
        n = calibration.n_impostor
        if (values.ndim != 1 or values.size < 2 or values.shape != scores.shape or np.any(np.diff(values) <= 0)
                or np.any(np.diff(scores) < 0) or not np.all(np.isfinite(values)) or not np.all(np.isfinite(scores))
                or n < 100):
            raise ValueError(f"{path} is not a usable calibration: increasing values and non-decreasing scores "
                             "measured on at least 100 impostor comparisons are required")
        # Measured scores run from 0 (every impostor) to log10(n) (the highest one); beyond is the tail's slope.
        if scores[0] < 0 or scores[0] > 0.5 or scores[-1] > np.log10(n) + 1e-6:
            raise ValueError(f"{path} states scores {scores[0]:.2f} to {scores[-1]:.2f}, which {n} impostor "
                             f"comparisons cannot measure (0 to {np.log10(n):.2f})")
        distinct = calibration.n_distinct_pairs
        if distinct is not None and not (isinstance(distinct, int) and 1 <= distinct <= n):
            raise ValueError(f"{path}: n_distinct_pairs must be a whole number from 1 to n_impostor ({n}), not "
                             f"{distinct!r}")
        if not (np.isfinite(calibration.tail_slope) and 0 <= calibration.tail_slope < 1e6):
            raise ValueError(f"{path} has an unusable tail slope {calibration.tail_slope!r}")
        return calibration

    @classmethod
    def for_modality(cls, modality: str) -> ScoreCalibration:
        """The calibration shipped with the package for ``modality`` ("face" or "fingerprint")."""
        path = CALIBRATION_DIR / f"{modality}.json"
        if not path.exists():
            raise FileNotFoundError(f"no calibration for {modality}: {path} is missing")
        return cls.load(path)
