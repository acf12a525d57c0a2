"""The traveller-facing decision of a kiosk (biometrics.decisions): a watchlist hit looks like a no-match."""

from __future__ import annotations

import pytest

from biometrics.decisions import (
    PROCEED,
    PROCEED_MESSAGE,
    SEE_OFFICER,
    SEE_OFFICER_MESSAGE,
    identification_outcome,
    verification_outcome,
)
from biometrics.types import Candidate, IdentificationResult, VerificationResult


def _verified(match: bool, watchlist: bool) -> VerificationResult:
    return VerificationResult(match=match, score=7.0 if match else 1.0, threshold=3.0, decision_id="d",
                              watchlist=watchlist)


def _identified(*watchlist: bool) -> IdentificationResult:
    candidates = tuple(Candidate(f"P{i}", 9.0 - i, (), w) for i, w in enumerate(watchlist))
    return IdentificationResult(candidates, 3.0, "d")


def test_verify_proceeds_only_for_a_match_on_no_watchlist() -> None:
    assert verification_outcome(_verified(True, False)).decision is PROCEED
    assert verification_outcome(_verified(True, False)).message == PROCEED_MESSAGE
    for match, watchlist in ((False, False), (True, True), (False, True)):
        outcome = verification_outcome(_verified(match, watchlist))
        assert (outcome.decision, outcome.message) == (SEE_OFFICER, SEE_OFFICER_MESSAGE), (match, watchlist)


def test_a_watchlist_match_is_indistinguishable_from_a_no_match() -> None:
    assert verification_outcome(_verified(True, True)) == verification_outcome(_verified(False, False))
    assert identification_outcome(_identified(True)) == identification_outcome(_identified())


@pytest.mark.parametrize(("watchlist", "decision"), [
    ((), SEE_OFFICER),  # nobody found
    ((False,), PROCEED),
    ((False, False), SEE_OFFICER),  # two different subjects: an ambiguous identity, not the best one
    ((True,), SEE_OFFICER),
    ((False, True), SEE_OFFICER),  # a watchlisted candidate over the threshold, even second
])
def test_identify_proceeds_only_when_no_candidate_is_on_a_watchlist(watchlist: tuple[bool, ...],
                                                                     decision: int) -> None:
    assert identification_outcome(_identified(*watchlist)).decision is decision


def test_a_candidate_whose_modalities_contradict_each_other_goes_to_an_officer() -> None:
    """Found through a finger whose face does not match (a stolen finger, or one person under another face):
    never a silent PROCEED, and no different on the kiosk's screen from any other SEE_OFFICER."""
    finger_hit = Candidate("P1", 11.1, (), False, contradicted=True)
    for candidates in ((finger_hit,), (Candidate("P0", 12.0), finger_hit)):
        outcome = identification_outcome(IdentificationResult(candidates, 3.0, "d"))
        assert (outcome.decision, outcome.message) == (SEE_OFFICER, SEE_OFFICER_MESSAGE)
    assert identification_outcome(IdentificationResult((Candidate("P0", 12.0),), 3.0, "d")).decision is PROCEED


def test_two_different_subjects_over_the_threshold_are_an_ambiguous_identity_for_an_officer() -> None:
    """One person enrolled twice (or a false match): the search cannot say who the traveller is, so the traveller
    sees an officer (the usual message) and the officer's answer says why, even when ``max_candidates`` cut the
    second subject from the list."""
    from biometrics.decisions import identification_referral

    two = IdentificationResult((Candidate("P0", 12.0), Candidate("P1", 11.0)), 3.0, "d")
    cut = IdentificationResult((Candidate("P0", 12.0),), 3.0, "d", ambiguous=True)
    for result in (two, cut):
        outcome = identification_outcome(result)
        assert (outcome.decision, outcome.message) == (SEE_OFFICER, SEE_OFFICER_MESSAGE)
        assert identification_referral(result) == "ambiguous_identity"
    one = IdentificationResult((Candidate("P0", 12.0),), 3.0, "d")
    assert identification_outcome(one).decision is PROCEED and identification_referral(one) == ""
    # a watchlisted or contradicted candidate is named first
    assert identification_referral(_identified(False, True)) == "watchlist"
    contradicted = IdentificationResult((Candidate("P0", 12.0), Candidate("P1", 11.1, (), False, contradicted=True)),
                                        3.0, "d")
    assert identification_referral(contradicted) == "contradicted"


def test_decisions_are_numbered_as_in_the_contract() -> None:
    from checkpoint.v1 import checkpoint_pb2 as pb

    assert (int(PROCEED), int(SEE_OFFICER)) == (pb.PROCEED, pb.SEE_OFFICER)
    assert PROCEED_MESSAGE != SEE_OFFICER_MESSAGE


def test_the_shortlist_keeps_every_watchlisted_candidate_beyond_k() -> None:
    from biometrics.decisions import shortlist

    ranked = _identified(False, False, True, False, True).candidates
    assert [c.subject_id for c in shortlist(ranked, 1)] == ["P0", "P2", "P4"]
    assert [c.subject_id for c in shortlist(ranked, 3)] == ["P0", "P1", "P2", "P4"]
    assert shortlist(ranked, 10) == ranked
    assert shortlist((), 5) == ()


def test_a_decision_on_fingerprints_alone_the_calibration_cannot_measure_is_referred_saying_why() -> None:
    from dataclasses import replace

    from biometrics.decisions import identification_referral, verification_referral

    unmeasured = replace(_verified(True, False), finger_alone_unmeasured=True)
    assert verification_outcome(unmeasured) == verification_outcome(_verified(False, False))  # the kiosk sees no why
    assert verification_referral(unmeasured) == "finger_alone_unmeasured"
    assert verification_referral(replace(unmeasured, watchlist=True)) == "watchlist"
    assert verification_referral(replace(unmeasured, match=False)) == ""  # no match: nothing to explain
    assert verification_referral(_verified(True, False)) == ""
    found = replace(_identified(False), finger_alone_unmeasured=True)
    assert identification_outcome(found).decision is SEE_OFFICER
    assert identification_referral(found) == "finger_alone_unmeasured"
    assert identification_referral(_identified(False, True)) == "watchlist"
    assert identification_referral(_identified(False)) == "" and identification_outcome(_identified(False)).decision \
        is PROCEED
    assert identification_referral(replace(_identified(), finger_alone_unmeasured=True)) == ""
