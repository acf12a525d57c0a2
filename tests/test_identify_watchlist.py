"""Identify's ``max_candidates`` bounds the list an officer reads, never the watchlist check: a watchlisted
candidate ranked below it still sends the traveller to an officer, raises its alert and is in the answer."""

from __future__ import annotations

from pathlib import Path

from helpers import face

from biometrics.decisions import SEE_OFFICER, identification_outcome
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint")
KIOSK = Actor(role="kiosk", identity="CN=kiosk-1,OU=kiosk,O=Checkpoint")


def sample(name: str) -> Sample:
    return Sample(Modality.FACE, face(name))


def test_a_watchlisted_candidate_ranked_below_max_candidates_is_never_cut(tmp_path: Path) -> None:
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"),
                                     config=ServiceConfig())
    try:
        # one man under two documents, the second watchlisted (an officer's override of the duplicate):
        # the probe is the first document's own photograph, so the watchlisted one ranks second
        assert service.enrol("K1000001", SubjectInfo(name="Kofi Annan"), [sample("Kofi_Annan_0002.jpg")],
                             actor=OFFICER).enrolled
        assert service.enrol("K2000002", SubjectInfo(name="Kofi Annan", watchlist=True),
                             [sample("Kofi_Annan_0004.jpg")], allow_duplicate=True,
                             override_reason="second passport, flagged", actor=OFFICER).enrolled
        full = service.identify([sample("Kofi_Annan_0002.jpg")], 10, actor=OFFICER)
        assert [c.subject_id for c in full.candidates] == ["K1000001", "K2000002"]
        alerts = len(service.list_alerts(actor=OFFICER))
        for k in (1, 2):
            result = service.identify([sample("Kofi_Annan_0002.jpg")], k, actor=KIOSK)
            assert [(c.subject_id, c.watchlist) for c in result.candidates] == [("K1000001", False),
                                                                                 ("K2000002", True)]
            assert identification_outcome(result).decision is SEE_OFFICER
            assert len(service.list_alerts(actor=OFFICER)) == alerts + 1
            alerts += 1
    finally:
        service.close()


def test_one_person_enrolled_twice_is_referred_even_when_max_candidates_lists_one(tmp_path: Path) -> None:
    """Two different subjects at or over the threshold: never PROCEED for the best one, whatever the answer's
    ``max_candidates``; the officer's answer says why (``ambiguous_identity``)."""
    from biometrics.decisions import identification_referral

    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"),
                                     config=ServiceConfig())
    try:
        assert service.enrol("K1000001", SubjectInfo(name="Kofi Annan"), [sample("Kofi_Annan_0002.jpg")],
                             actor=OFFICER).enrolled
        assert service.enrol("K2000002", SubjectInfo(name="Kofi Annan"), [sample("Kofi_Annan_0004.jpg")],
                             allow_duplicate=True, override_reason="second passport", actor=OFFICER).enrolled
        for k in (1, 10):
            result = service.identify([sample("Kofi_Annan_0002.jpg")], k, actor=KIOSK)
            assert [c.subject_id for c in result.candidates] == ["K1000001", "K2000002"][:k]
            assert identification_outcome(result).decision is SEE_OFFICER
            assert identification_referral(result) == "ambiguous_identity"
    finally:
        service.close()
