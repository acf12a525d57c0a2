"""The impression-agreement benchmark's figures, on hand-made pair scores: each rule counted as the module says."""

from __future__ import annotations

import itertools

import pytest

from benchmarks.impression_agreement import rule_rates


def test_the_rules_are_counted_on_every_three_and_every_two_plus_one_other() -> None:
    names = [f"{finger}_{i}" for finger in (101, 102) for i in (1, 2, 3)]
    scores = {(a, b): (12.0 if a[:3] == b[:3] else 0.1) for a, b in itertools.combinations(names, 2)}
    scores[("101_1", "101_3")] = 0.5  # 101_1 and 101_3 meet through 101_2 only
    scores[("101_2", "102_1")] = 2.5  # one different-finger pair over the agreement score
    f = rule_rates(scores, 2.0)
    assert (f["genuine_pairs"], f["impostor_pairs"], f["three"]) == (6, 9, 2)
    assert f["fnmr_pair"] == pytest.approx(1 / 6) and f["fmr_pair"] == pytest.approx(1 / 9)
    assert f["three_refused"] == 0.0  # 101's three are joined through 101_2
    assert f["three_refused_every_pair"] == pytest.approx(1 / 2)  # but not every pair of them matches
    # 2 of a finger + 1 of the other: 3 pairs x 3 others, both ways = 18; joined when 101_2 and 102_1 both in it
    # and the two of one finger match each other (not 101_1 with 101_3): 101_2 + (101_1 or 101_3) + 102_1 and
    # 102_1 + (102_2 or 102_3) + 101_2
    assert f["mixed"] == 18 and f["mixed_passed"] == pytest.approx(4 / 18)
    assert f["mixed_passed_every_pair"] == 0.0
