"""What a kiosk does with the traveller: a decision and the message to show, from a 1:1 or 1:N result.

A kiosk sees no score, no candidate and no watchlist flag. It gets :data:`PROCEED` only when the traveller
matched (Verify), or was identified (Identify), as someone on no watchlist whose modalities do not contradict
each other; every other outcome is :data:`SEE_OFFICER` with one and the same message, so that a watchlist hit
cannot be told from a no-match on the kiosk's screen (a watchlist hit is an alert for officers:
``CheckpointService.list_alerts``).

Pure functions over :class:`~biometrics.types.VerificationResult` and
:class:`~biometrics.types.IdentificationResult`; the gRPC servicer only copies their answer into the response.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from biometrics.types import Candidate, IdentificationResult, VerificationResult


class TravellerDecision(enum.IntEnum):
    """What the kiosk does (numbered as in the gRPC contract's ``TravellerDecision``)."""

    PROCEED = 1
    SEE_OFFICER = 2


PROCEED = TravellerDecision.PROCEED
SEE_OFFICER = TravellerDecision.SEE_OFFICER

#: Shown when the traveller may go on.
PROCEED_MESSAGE = "Thank you. Please proceed."
#: Shown for every other outcome: a no-match, no candidate, or a watchlist hit alike.
SEE_OFFICER_MESSAGE = "Please see an officer at the desk."


@dataclass(frozen=True)
class TravellerOutcome:
    """A decision for the traveller and the message the kiosk shows."""

    decision: TravellerDecision
    message: str


_PROCEED = TravellerOutcome(PROCEED, PROCEED_MESSAGE)
_SEE_OFFICER = TravellerOutcome(SEE_OFFICER, SEE_OFFICER_MESSAGE)


def verification_outcome(result: VerificationResult) -> TravellerOutcome:
    """PROCEED for a match with a subject on no watchlist and not waiting for a review as a possible duplicate,
    on a score whose FMR the calibration measures; SEE_OFFICER (one message) otherwise."""
    proceed = (result.match and not result.watchlist and not result.in_review
               and not result.finger_alone_unmeasured)
    return _PROCEED if proceed else _SEE_OFFICER


def ambiguous_identity(result: IdentificationResult) -> bool:
    """Two or more different subjects at or over the threshold (listed, or beyond the answer's
    ``max_candidates``: ``result.ambiguous``): one person enrolled twice, or a false match; the search cannot
    say who the traveller is."""
    return result.ambiguous or len({c.subject_id for c in result.candidates}) > 1


def identification_outcome(result: IdentificationResult) -> TravellerOutcome:
    """PROCEED when there is exactly one candidate (one subject), on no watchlist and not contradicted;
    SEE_OFFICER otherwise.

    Any watchlisted candidate at or over the threshold sends the traveller to an officer, not only the top
    one: the search says the traveller may be that person, and the officer decides. So does any contradicted
    candidate (found through one modality while another says "not this person": a matching finger with a face
    that does not match is what a stolen finger looks like), a second subject at or over the threshold (an
    ambiguous identity: one person enrolled twice, or a false match; not "the best one wins"), and a search on
    fingerprints alone under a calibration that cannot measure the operating FMR.
    """
    if (result.candidates and not result.finger_alone_unmeasured and not ambiguous_identity(result)
            and not any(c.watchlist or c.contradicted for c in result.candidates)):
        return _PROCEED
    return _SEE_OFFICER


def verification_referral(result: VerificationResult) -> str:
    """Why a match sends the traveller to an officer (for officers only): ``watchlist``, ``in_review`` or
    ``finger_alone_unmeasured``; "" for a match that proceeds and for no match."""
    if not result.match:
        return ""
    for reason, applies in (("watchlist", result.watchlist), ("in_review", result.in_review),
                            ("finger_alone_unmeasured", result.finger_alone_unmeasured)):
        if applies:
            return reason
    return ""


def identification_referral(result: IdentificationResult) -> str:
    """Why candidates send the traveller to an officer (for officers only): ``watchlist``, ``contradicted``,
    ``ambiguous_identity`` (two or more subjects at or over the threshold) or ``finger_alone_unmeasured``, the
    first that applies; "" when there is none or the traveller proceeds."""
    if not result.candidates:
        return ""
    for reason, applies in (("watchlist", any(c.watchlist for c in result.candidates)),
                            ("contradicted", any(c.contradicted for c in result.candidates)),
                            ("ambiguous_identity", ambiguous_identity(result)),
                            ("finger_alone_unmeasured", result.finger_alone_unmeasured)):
        if applies:
            return reason
    return ""


def shortlist(candidates: Sequence[Candidate], k: int) -> tuple[Candidate, ...]:
    """The candidates an Identify answer shows, in rank order: the ``k`` best, and every watchlisted one ranked
    beyond them. ``k`` (the caller's ``max_candidates``) bounds the list an officer reads; it never cuts a
    watchlist hit out of the decision, its alert or the answer."""
    return tuple(c for i, c in enumerate(candidates) if i < k or c.watchlist)
