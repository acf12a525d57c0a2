"""The subsets bootstrap (``benchmarks.metrics.subsets_bootstrap``): intervals that resample identities, not
comparisons, on hand-made scores whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import metrics as m

THRESHOLD = 3.0


def _set(failing: dict[int, int], n_ids: int = 50, per_id: int = 10, seed: int = 0):
    """``n_ids`` identities with ``per_id`` genuine comparisons each (identity k's first ``failing[k]`` score 1.0,
    under the threshold; the others 5 +- 0.5) and one impostor comparison per pair of identities (0 +- 1)."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_ids), per_id)
    gen = rng.normal(5.0, 0.5, len(ids))
    for k, n in failing.items():
        gen[np.flatnonzero(ids == k)[:n]] = 1.0
    a, b = np.triu_indices(n_ids, k=1)
    imp = rng.normal(0.0, 1.0, len(a))
    scores = np.concatenate([gen, imp])
    genuine = np.concatenate([np.ones(len(gen), bool), np.zeros(len(imp), bool)])
    return scores, genuine, np.concatenate([ids, a]), np.concatenate([ids, b])


def _width(interval) -> float:
    return interval[1] - interval[0]


def test_one_identity_holding_every_genuine_failure_widens_the_interval_far_beyond_clopper_pearson():
    """10 of 500 genuine comparisons fail (2%), all of one identity: Clopper-Pearson sees 500 independent trials;
    the people are 50, and whether that one person is in the sample decides the rate (drawn 0 times in about a
    third of the replicates, 3 or more times in about 8%)."""
    scores, genuine, ia, ib = _set({0: 10})
    out = m.subsets_bootstrap([scores], genuine, ia, ib, thresholds=[THRESHOLD], replicates=1000)[0]
    cp = m.clopper_pearson_interval(10, 500)
    fnmr = out["at_operating_threshold"]["fnmr"]
    assert fnmr[0] == 0.0  # replicates without the failing person see no failure at all
    assert fnmr[1] > 1.5 * cp[1]
    assert _width(fnmr) > 2 * _width(cp)
    for key in ("0.01", "0.001"):  # the threshold re-chosen per replicate still sits between the two populations
        assert out["fnmr_at_fmr"][key][0] == 0.0 and out["fnmr_at_fmr"][key][1] > 1.5 * cp[1]
    # The same 10 failures spread over 10 people, one each: the subjects interval is then about Clopper-Pearson's.
    s2, g2, ia2, ib2 = _set({k: 1 for k in range(10)})
    spread = m.subsets_bootstrap([s2], g2, ia2, ib2, thresholds=[THRESHOLD], replicates=1000)[0]
    assert _width(spread["at_operating_threshold"]["fnmr"]) < 0.6 * _width(fnmr)
    assert 0.7 * _width(cp) < _width(spread["at_operating_threshold"]["fnmr"]) < 1.3 * _width(cp)


def test_one_genuine_identity_gives_its_own_rate_in_every_replicate_that_draws_it():
    """Identity 0 holds every genuine comparison, 3 of 10 failing: a replicate that draws it (any number of times)
    has FNMR exactly 0.3; one that does not has no genuine comparison, no figure, and is counted as undefined.
    Between-person variation cannot be seen in one person: the interval is [0.3, 0.3]."""
    scores, genuine, ia, ib = _set({0: 3}, n_ids=8)
    keep = ~genuine | (ia == 0)
    scores, genuine, ia, ib = scores[keep], genuine[keep], ia[keep], ib[keep]
    out = m.subsets_bootstrap([scores], genuine, ia, ib, thresholds=[THRESHOLD], replicates=400, seed=5)[0]
    assert out["at_operating_threshold"]["fnmr"] == [0.3, 0.3]
    assert out["n_identities"] == 8
    rng = np.random.default_rng(5)  # the same draws, replayed: undefined exactly where identity 0 was not drawn
    missed = sum(m.identity_multiplicities(rng, 8)[0] == 0 for _ in range(400))
    assert 0 < out["undefined_replicates"] == missed


def test_the_same_seed_gives_the_same_intervals_and_another_seed_others():
    scores, genuine, ia, ib = _set({0: 4, 3: 2, 7: 1})
    other = scores + np.where(genuine, 0.0, 0.2)
    first = m.subsets_bootstrap([scores, other], genuine, ia, ib, thresholds=[THRESHOLD, THRESHOLD],
                                replicates=200, seed=11)
    again = m.subsets_bootstrap([scores, other], genuine, ia, ib, thresholds=[THRESHOLD, THRESHOLD],
                                replicates=200, seed=11)
    assert first == again
    assert first[0]["seed"] == 11 and first[0]["replicates"] == 200
    elsewhere = m.subsets_bootstrap([scores, other], genuine, ia, ib, thresholds=[THRESHOLD, THRESHOLD],
                                    replicates=200, seed=12)
    assert elsewhere != first


def _expanded_figures(scores, genuine, ia, ib, mult, targets, threshold) -> list[float]:
    """One replicate's figures on the comparisons written out again and again: a genuine one m(a) times, an
    impostor one m(a) * m(b) times (nan: failed to acquire), by the unweighted functions."""
    times = np.where(genuine, mult[ia], mult[ia] * mult[ib]).astype(int)
    s, g = np.repeat(scores, times), np.repeat(genuine, times)
    fta = np.isnan(s)
    sc = m.VerificationScores(s[g & ~fta], s[~g & ~fta], int((g & fta).sum()), int((~g & fta).sum()))
    op = m.operating_point(sc, threshold)
    return [m.equal_error_rate(sc).eer, *[m.fnmr_at_fmr(sc, p).fnmr for p in targets], op.fmr, op.fnmr]


def test_an_impostor_comparison_counts_once_per_pair_of_drawn_copies_and_a_genuine_once_per_copy():
    """Each replicate's figures are those of the data written out with a genuine comparison repeated m(identity)
    times and an impostor one m(a) * m(b) times (ties, failures to acquire and an identity met only as an impostor
    included); the interval is their percentiles."""
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(12), 4)
    gen = np.round(rng.normal(3.0, 1.5, len(ids)), 1)
    a, b = np.triu_indices(15, k=1)  # identities 12..14 have no genuine comparison
    imp = np.round(rng.normal(0.0, 1.0, len(a)), 1)
    scores = np.concatenate([gen, imp])
    scores[[2, 9, 60, 70]] = np.nan  # two genuine, two impostor comparisons failed to acquire
    genuine = np.concatenate([np.ones(len(gen), bool), np.zeros(len(imp), bool)])
    ia, ib = np.concatenate([ids, a]), np.concatenate([ids, b])
    targets = (0.1, 0.01)
    out = m.subsets_bootstrap([scores], genuine, ia, ib, targets, [1.0], replicates=60, seed=4)[0]
    replay = np.random.default_rng(4)
    rows = [_expanded_figures(scores, genuine, ia, ib, m.identity_multiplicities(replay, 15), targets, 1.0)
            for _ in range(60)]
    lo, hi = np.percentile(np.array(rows), [2.5, 97.5], axis=0)
    assert out["undefined_replicates"] == 0
    at = out["at_operating_threshold"]
    got = [out["eer"], out["fnmr_at_fmr"]["0.1"], out["fnmr_at_fmr"]["0.01"], at["fmr"], at["fnmr"]]
    assert np.array(got) == pytest.approx(np.stack([lo, hi], axis=1))
    assert len({tuple(r) for r in rows}) > 10  # the replicates do differ


def test_weighted_figures_with_unit_weights_are_the_point_figures():
    """EER, FNMR at FMR and the rates at a threshold, weighted 1 each, are benchmarks.metrics' own."""
    rng = np.random.default_rng(8)
    gen, imp = np.round(rng.normal(2.0, 1.0, 300), 1), np.round(rng.normal(0.0, 1.0, 3000), 1)
    gen[:4] = np.nan
    ws = m.WeightedScores.of(gen, imp)
    got = ws.figures(np.ones(len(gen)), np.ones(len(imp)), (0.01, 0.001, 0.0), 1.5)
    sc = m.VerificationScores(gen[4:], imp, genuine_fta=4)
    op = m.operating_point(sc, 1.5)
    want = [m.equal_error_rate(sc).eer, *[m.fnmr_at_fmr(sc, p).fnmr for p in (0.01, 0.001, 0.0)], op.fmr, op.fnmr]
    assert list(got) == pytest.approx(want)


def test_refuses_mismatched_inputs_and_no_replicates():
    scores, genuine, ia, ib = _set({0: 1}, n_ids=5)
    with pytest.raises(ValueError, match="same comparisons"):
        m.subsets_bootstrap([scores[:-1]], genuine, ia, ib)
    with pytest.raises(ValueError, match="at least one replicate"):
        m.subsets_bootstrap([scores], genuine, ia, ib, replicates=0)
