"""False-match score calibration: measured FMRs, monotonicity, thresholds, the shipped face calibration."""

from __future__ import annotations

import numpy as np
import pytest

from biometrics.scores import MAX_SCORE, ScoreCalibration, threshold_for_fmr, threshold_for_fpir


def test_scores_state_the_measured_false_match_rate() -> None:
    rng = np.random.default_rng(7)
    impostor = rng.normal(0.0, 1.0, 100_000)
    cal = ScoreCalibration.fit(impostor, higher_is_better=True, modality="test")
    for value in (1.0, 2.0, 3.0):
        measured_fmr = np.mean(impostor >= value)
        assert cal.score(value) == pytest.approx(-np.log10(measured_fmr), abs=0.05)
    # at the raw threshold for FMR 1e-3, about 1e-3 of the impostors score at or over it
    t = cal.raw_threshold(1e-3)
    assert np.mean(impostor >= t) == pytest.approx(1e-3, rel=0.15)


def test_distances_lower_is_better_and_scores_are_monotone() -> None:
    rng = np.random.default_rng(3)
    distances = rng.uniform(0.5, 1.2, 20_000)
    cal = ScoreCalibration.fit(distances, higher_is_better=False, modality="face")
    grid = np.linspace(0.0, 1.5, 301)
    scores = cal.score(grid)
    assert np.all(np.diff(scores) <= 1e-12), "a smaller distance never scores lower"
    assert scores[0] == MAX_SCORE or scores[0] > cal.scores[-1]
    assert cal.score(1.5) == 0.0
    assert cal.raw_threshold(0.01) == pytest.approx(np.quantile(distances, 0.01), abs=0.005)


def test_extrapolation_beyond_the_set_is_capped_and_roundtrips(tmp_path) -> None:
    cal = ScoreCalibration.fit(np.arange(1000.0), higher_is_better=True, modality="x", source="unit")
    assert cal.score(1e9) == MAX_SCORE
    cal.save(tmp_path / "c.json")
    again = ScoreCalibration.load(tmp_path / "c.json")
    assert again.score(998.5) == cal.score(998.5)
    with pytest.raises(ValueError):
        ScoreCalibration.fit(np.arange(10.0), higher_is_better=True, modality="x")


def test_threshold_for_fmr() -> None:
    assert threshold_for_fmr(0.001) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        threshold_for_fmr(0.0)


def test_shipped_face_calibration_is_measured_on_enough_impostors() -> None:
    cal = ScoreCalibration.for_modality("face")
    assert cal.n_impostor >= 3 / 1e-3  # rule of three at the default operating point
    assert 0.45 < cal.raw_threshold(1e-3) < 0.65  # dlib distances: 0.6 is face_recognition's tolerance
    assert cal.notes["operating_points"]["0.001"]["measured"]


def test_threshold_for_fpir_grows_with_the_gallery_from_the_1to1_floor() -> None:
    assert threshold_for_fpir(0.01, 0, floor=3.0) == 3.0  # an empty or small gallery keeps the 1:1 threshold
    assert threshold_for_fpir(0.01, 10, floor=3.0) == 3.0
    assert threshold_for_fpir(0.01, 1000, floor=3.0) == pytest.approx(5.0)
    assert threshold_for_fpir(0.001, 1_000_000, floor=3.0) == pytest.approx(9.0)
    with pytest.raises(ValueError):
        threshold_for_fpir(0.0, 10)


def test_threshold_for_fpir_holds_the_rate_on_simulated_impostor_searches() -> None:
    # Impostor scores whose FMR is exactly 10**-s: s = -log10(U), U uniform. A gallery of 500, 4,000 searches.
    rng = np.random.default_rng(7)
    n, searches, fpir = 500, 4000, 0.05
    best = (-np.log10(rng.random((searches, n)))).max(axis=1)
    t = threshold_for_fpir(fpir, n)
    observed = float(np.mean(best >= t))
    assert observed <= fpir * 1.15  # the union bound is slightly conservative: about 4.9% here
    assert float(np.mean(best >= threshold_for_fmr(fpir))) > 0.99  # the 1:1 threshold would alarm on nearly all


def _positive_zero(value: float) -> bool:
    return value == 0.0 and np.copysign(1.0, value) > 0


def test_no_score_is_negative_zero() -> None:
    """Review: -log10(1) is -0.0, shown as "-0.00" (a fingerprint of no similarity at all scored so)."""
    assert _positive_zero(ScoreCalibration.for_modality("fingerprint").score(0.0))
    face = ScoreCalibration.for_modality("face")
    assert _positive_zero(face.score(-face.values[0]))  # the largest impostor distance the set measured
    fitted = ScoreCalibration.fit(np.arange(1000.0), higher_is_better=True, modality="x")
    assert all(_positive_zero(s) for s in fitted.scores if s == 0.0)
    assert all(_positive_zero(s) for s in fitted.score(np.array([-5.0, 0.0])).tolist())
    assert _positive_zero(threshold_for_fmr(1.0))
