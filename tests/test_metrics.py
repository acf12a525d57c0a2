"""benchmarks.metrics against cases computed by hand (and a brute-force check of the rates)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import metrics as m


def vs(genuine, impostor, gfta=0, ifta=0) -> m.VerificationScores:
    return m.VerificationScores(np.array(genuine), np.array(impostor), gfta, ifta)


# Case A: FMR and FNMR cross exactly at t = 0.7 (both 1/4).
A = dict(genuine=[0.9, 0.8, 0.7, 0.4], impostor=[0.1, 0.2, 0.3, 0.75])
# Case B: no crossing; t1 = 0.6 (FNMR 0, FMR 1/4), t2 = 0.7 (FMR 1/4, FNMR 1/3); FVC takes t1.
B = dict(genuine=[0.6, 0.8, 0.9], impostor=[0.1, 0.5, 0.7, 0.2])


def test_rates_at_each_threshold_case_a():
    s = vs(**A)
    fmr, fnmr = s.rates(np.array([0.1, 0.3, 0.4, 0.7, 0.75, 0.8, np.inf]))
    assert fmr.tolist() == [1.0, 0.5, 0.25, 0.25, 0.25, 0.0, 0.0]
    assert fnmr.tolist() == [0.0, 0.0, 0.0, 0.25, 0.5, 0.5, 1.0]


def test_eer_exact_crossing():
    e = m.equal_error_rate(vs(**A))
    assert (e.eer, e.low, e.high, e.threshold) == (0.25, 0.25, 0.25, 0.7)


def test_eer_fvc_interval_when_curves_do_not_cross():
    e = m.equal_error_rate(vs(**B))
    assert (e.low, e.high, e.eer, e.threshold) == (0.0, 0.25, 0.125, 0.6)


def test_fnmr_at_fmr_takes_the_smallest_threshold_meeting_the_target():
    s = vs(**B)
    p = m.fnmr_at_fmr(s, 0.25)
    assert (p.threshold, p.fmr, p.fnmr) == (0.6, 0.25, 0.0)
    p = m.fnmr_at_fmr(s, 0.2)  # 0.25 is over 0.2: the next threshold with FMR 0 is 0.8
    assert (p.threshold, p.fmr, p.fnmr, p.false_non_matches) == (0.8, 0.0, 1 / 3, 1)
    z = m.zero_fmr(s)
    assert (z.threshold, z.fnmr) == (0.8, 1 / 3)
    zn = m.zero_fnmr(s)
    assert (zn.threshold, zn.fmr) == (0.6, 0.25)


def test_ties_at_the_threshold_match():
    s = vs([0.5, 0.5, 0.9], [0.5, 0.1, 0.1, 0.1])
    p = m.operating_point(s, 0.5)
    assert (p.false_matches, p.false_non_matches) == (1, 0)
    # The impostor tied with two genuines: FMR 0 needs t above 0.5, losing both tied genuines.
    z = m.zero_fmr(s)
    assert (z.threshold, z.false_non_matches, z.fnmr) == (0.9, 2, 2 / 3)


def test_target_fmr_allows_exactly_p_times_n_false_matches():
    impostor = np.arange(3000) / 3000.0  # 3000 distinct impostor scores in [0, 1)
    s = vs([2.0], impostor)
    p = m.fnmr_at_fmr(s, 0.001)
    assert p.false_matches == 3 and p.threshold == impostor[-3]


def test_fta_pairs_never_match_generalised_rates():
    s = vs([0.9, 0.8], [0.1], gfta=2, ifta=1)
    assert (s.n_genuine, s.n_impostor) == (4, 2)
    fmr, fnmr = s.rates(np.array([0.1, np.inf]))
    assert fmr.tolist() == [0.5, 0.0]  # the impostor FTA pair is a correct non-match, in the denominator
    assert fnmr.tolist() == [0.5, 1.0]  # the genuine FTA pairs are false non-matches at every threshold
    fmr, fnmr = s.rates(np.array([0.1]), generalised=False)
    assert (fmr[0], fnmr[0]) == (1.0, 0.0)
    z = m.zero_fmr(s)
    assert (z.threshold, z.fnmr) == (0.8, 0.5)


def test_generalised_rates_follow_iso_19795_formulas():
    rng = np.random.default_rng(1)
    s = vs(rng.normal(2, 1, 200), rng.normal(0, 1, 300), gfta=20, ifta=30)
    t = s.thresholds()
    fmr_acq, fnmr_acq = s.rates(t, generalised=False)
    gfmr, gfnmr = s.rates(t)
    fta_g, fta_i = 20 / 220, 30 / 330
    np.testing.assert_allclose(gfmr, fmr_acq * (1 - fta_i))
    np.testing.assert_allclose(gfnmr, fta_g + fnmr_acq * (1 - fta_g))


def test_rejects_nan_and_empty_sets():
    with pytest.raises(ValueError, match="NaN"):
        vs([0.5, np.nan], [0.1])
    with pytest.raises(ValueError, match="genuine"):
        vs([], [0.1])
    with pytest.raises(ValueError, match="FTA"):
        vs([0.5], [0.1], gfta=-1)


def test_rule_of_three_and_warnings():
    assert m.rule_of_three(0.01) == 300
    assert m.rule_of_three(0.001) == 3000
    assert m.rule_of_three(0.0001) == 30000
    few = m.verification_warnings(vs([1.0], np.zeros(2999)), targets=(0.001,))
    assert any("rule of three" in w and "3000" in w for w in few)
    enough = m.verification_warnings(vs([1.0], np.zeros(3000)), targets=(0.001,))
    assert not any("rule of three" in w for w in enough)


def test_confidence_intervals_hand_values():
    lo, hi = m.wilson_interval(0, 10)
    z2 = 1.959963984540054**2
    assert lo == 0.0 and hi == pytest.approx(z2 / (10 + z2))
    lo, hi = m.clopper_pearson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = m.clopper_pearson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 10))
    lo, hi = m.clopper_pearson_interval(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(0.812914, abs=1e-6)
    lo, hi = m.wilson_interval(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-6) and hi == pytest.approx(0.763407, abs=1e-6)


def test_mcnemar_exact_hand_values():
    assert m.mcnemar_exact(0, 5) == pytest.approx(2 * 0.5**5)
    assert m.mcnemar_exact(9, 1) == pytest.approx(2 * (1 + 10) / 1024)  # C(10,0) + C(10,1)
    assert m.mcnemar_exact(3, 3) == 1.0 and m.mcnemar_exact(0, 0) == 1.0


def test_summary_keys_are_plain_decimal_strings():
    out = m.summarise_verification(vs(**A), operating_threshold=0.7)
    assert set(out["fnmr_at_fmr"]) == {"0.01", "0.001", "0.0001"}
    assert set(out["threshold_at_fmr"]) == {"0.01", "0.001", "0.0001"}
    assert out["eer"] == 0.25
    op = out["at_operating_threshold"]
    assert op["fmr"]["errors"] == 1 and op["fnmr"]["errors"] == 1
    assert any("rule of three" in w for w in out["warnings"])


def naive_rates(genuine, impostor, gfta, ifta, t):
    fm = sum(1 for x in impostor if x >= t)
    fnm = sum(1 for x in genuine if x < t) + gfta
    return fm / (len(impostor) + ifta), fnm / (len(genuine) + gfta)


def naive_fvc_eer(genuine, impostor, gfta, ifta) -> tuple[float, float, float]:
    """(EER, low, high) by the FVC2000 definition, from naive rates at every threshold where one can change."""
    points = [(t, *naive_rates(genuine, impostor, gfta, ifta, t))
              for t in [*sorted({*genuine, *impostor}), math.inf]]  # (t, FMR, FNMR), ascending t
    t1 = [p for p in points if p[2] <= p[1]]  # FNMR <= FMR: t1 is the largest such threshold
    t2 = [p for p in points if p[2] >= p[1]]  # FNMR >= FMR: t2 is the smallest
    p1 = t1[-1] if t1 else t2[0]
    p2 = t2[0] if t2 else t1[-1]
    _, fmr, fnmr = p1 if p1[1] + p1[2] <= p2[1] + p2[2] else p2
    low, high = sorted((fmr, fnmr))
    return (low + high) / 2, low, high


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=1, max_size=25),
    st.lists(st.integers(0, 20), min_size=1, max_size=25),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_rates_and_eer_against_brute_force(genuine, impostor, gfta, ifta):
    s = vs([g / 4 for g in genuine], [i / 4 for i in impostor], gfta, ifta)
    curve = m.det_curve(s)
    # one point at each distinct score, ascending, then +inf (nothing matches): every threshold where a rate moves
    assert curve.thresholds.tolist() == [*sorted({g / 4 for g in genuine} | {i / 4 for i in impostor}), math.inf]
    for t, fmr, fnmr in zip(curve.thresholds, curve.fmr, curve.fnmr, strict=True):
        assert (fmr, fnmr) == pytest.approx(naive_rates(s.genuine, s.impostor, gfta, ifta, t))
    e = m.equal_error_rate(s)
    assert (e.eer, e.low, e.high) == pytest.approx(naive_fvc_eer(s.genuine.tolist(), s.impostor.tolist(), gfta, ifta))
    # No threshold has both rates below the EER interval's low end.
    assert not np.any((curve.fmr < e.low) & (curve.fnmr < e.low))
    for p in (0.0, 0.1, 0.5):
        point = m.fnmr_at_fmr(s, p)
        assert point.fmr <= p + 1e-12
        better = (curve.fmr <= p + 1e-12) & (curve.fnmr < point.fnmr)
        assert not better.any()


# ---------------------------------------------------------------------------------------------------------
# Open-set identification

OUT = dict(
    mated_rank=[1, 2, 0, 1],
    mated_score=[5.0, 4.0, -math.inf, 2.0],
    nonmated_top_score=[3.0, 1.0, 0.5, -math.inf],
)


def test_fnir_at_fpir_hand_case():
    o = m.SearchOutcomes(**OUT)
    # FPIR 0.25 allows one of four non-mated searches (the 3.0) over the threshold: any threshold in (1, 3] does;
    # the smallest where a rate changes is the mated score 2.0, which keeps the rank-1 mate scoring 2.0.
    assert o.threshold_at_fpir(0.25) == 2.0
    r = m.fnir_at_fpir(o, 0.25, rank=1)
    assert (r["fpir"], r["fnir"], r["false_positives"], r["false_negatives"]) == (0.25, 0.5, 1, 2)
    # At rank 10 the rank-2 mate (score 4 >= 2) is a hit too.
    assert o.fnir(2.0, rank=10) == 0.25
    # FPIR 0 needs T above every non-mated score (3.0): the smallest such score observed is the mate's 4.0.
    r = m.fnir_at_fpir(o, 0.0)
    assert r["threshold"] == 4.0 and r["fnir"] == 0.75 and r["fpir"] == 0.0
    # Above every score: T = +inf, nothing is returned, FNIR 1.
    top = m.SearchOutcomes(mated_rank=[1], mated_score=[1.0], nonmated_top_score=[3.0])
    r = m.fnir_at_fpir(top, 0.0)
    assert r["threshold"] is None and r["fnir"] == 1.0 and r["fpir"] == 0.0


def test_threshold_at_fpir_is_the_smallest_that_holds_the_fpir_not_a_non_mated_score():
    """100 non-mated top scores over 0..0.99 and 50 mates at 0.985: FPIR 1% allows the 0.99 over the threshold,
    so 0.985 holds it and every mate is found (taking the 0.99 itself as the threshold gave FNIR 1)."""
    o = m.SearchOutcomes(mated_rank=[1] * 50, mated_score=[0.985] * 50,
                         nonmated_top_score=np.arange(100) / 100.0)
    r = m.fnir_at_fpir(o, 0.01)
    assert r["threshold"] == 0.985 and r["fpir"] == 0.01 and r["fnir"] == 0.0


def test_cmc_counts_fta_as_misses():
    o = m.SearchOutcomes(**OUT)
    assert m.cmc(o, 5).tolist() == [0.5, 0.75, 0.75, 0.75, 0.75]
    o = m.SearchOutcomes(**OUT, mated_fta=1, nonmated_fta=2)
    assert m.cmc(o, 2).tolist() == [0.4, 0.6]
    assert o.fpir(3.0) == 1 / 6  # FTA non-mated searches return nothing: correct rejections
    assert o.fnir(-math.inf, rank=10) == 2 / 5


def test_identification_summary_and_warnings():
    o = m.SearchOutcomes(**OUT)
    out = m.summarise_identification(o, list_length=10)
    assert out["cmc"] == {"1": 0.5, "5": 0.75, "10": 0.75}
    assert out["fnir_at_fpir"]["0.1"]["fnir_at_rank_list_length"] == 0.5  # threshold 4.0: mates 5.0, 4.0
    assert any("at least 300 (rule of three)" in w for w in out["warnings"])
    with pytest.raises(ValueError, match="1-based"):
        m.SearchOutcomes([-1], [1.0], [0.0])


def test_zero_fnmr_when_every_genuine_pair_failed_to_acquire():
    """No acquired genuine comparison: ZeroFNMR is the point where nothing matches (FMR 0, FNMR 1.0), not an
    IndexError; the summary carries it too."""
    s = vs([], [0.1, 0.5], gfta=3)
    zn = m.zero_fnmr(s)
    assert (zn.threshold, zn.fmr, zn.fnmr, zn.false_non_matches) == (math.inf, 0.0, 1.0, 3)
    assert m.summarise_verification(s, [0.01])["zero_fnmr"]["fmr"] == 0.0
