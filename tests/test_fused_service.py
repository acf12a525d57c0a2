"""Face + fingerprint in one Verify, through the service in process (real images, real models, SQLite store).

The traveller is Dick Vermeil of LFW (tests/data/fused/README.md): enrolled from Dick_Vermeil_0001.jpg, his
Dick_Vermeil_0002.jpg scores s = 2.36 against it (distance 0.586, measured with the shipped face calibration
on 2026-11-30): under the service threshold s >= 3 (FMR 0.1%), so his face alone is turned away. His finger is
FVC2002 DB1_B finger 101 (enrolled from impressions 1 and 3, probed with impression 2), a chimeric pairing as
in the fused benchmark. With both he is accepted. An impostor who presents his finger with another face
(Kofi_Annan_0004.jpg, s = 0.04 against the reference: less alike than most impostors) is not: a face under the
contradiction floor caps the fused score (biometrics.fingerprint.fusion.CONTRADICTION_FLOORS).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from biometrics.decisions import PROCEED, SEE_OFFICER, identification_outcome
from biometrics.errors import InvalidSample
from biometrics.fingerprint.fusion import CONTRADICTION_FLOORS
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Modality, Sample, SubjectInfo

DATA = Path(__file__).resolve().parent / "data"
RIGHT_INDEX = 2
SUBJECT = "USA0000014"
pytestmark = pytest.mark.slow  # real face and fingerprint extraction


def face(name: str) -> Sample:
    folder = "fused" if name.startswith("Dick_Vermeil") else "faces"
    return Sample(Modality.FACE, (DATA / folder / name).read_bytes())


def finger(name: str) -> Sample:
    return Sample(Modality.FINGERPRINT, (DATA / "fingerprints" / f"{name}.png").read_bytes(), RIGHT_INDEX)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fused")
    svc = CheckpointService.open(StoreLocation(root / "data", key_dir=root / "keys"))
    enrolled = svc.enrol(SUBJECT, SubjectInfo(name="Dick Vermeil", nationality="USA"),
                         [face("Dick_Vermeil_0001.jpg"), finger("DB1_B_101_1"), finger("DB1_B_101_3")])
    assert enrolled.enrolled
    yield svc
    svc.close()


def test_the_genuine_face_alone_fails_and_face_with_finger_is_accepted(service: CheckpointService) -> None:
    face_only = service.verify(SUBJECT, [face("Dick_Vermeil_0002.jpg")])
    assert not face_only.match
    assert CONTRADICTION_FLOORS["face"] < face_only.score < face_only.threshold  # weak, but not contradicting
    both = service.verify(SUBJECT, [face("Dick_Vermeil_0002.jpg"), finger("DB1_B_101_2")])
    assert both.match and both.score >= both.threshold
    finger_score = next(m.score for m in both.modality_scores if m.modality == Modality.FINGERPRINT)
    assert both.score > max(face_only.score, finger_score)  # the two agree: more than either alone


def test_a_matching_finger_with_another_face_is_turned_away(service: CheckpointService) -> None:
    finger_only = service.verify(SUBJECT, [finger("DB1_B_101_2")])
    assert finger_only.match  # the finger on its own is his
    attack = service.verify(SUBJECT, [face("Kofi_Annan_0004.jpg"), finger("DB1_B_101_2")])
    face_score = next(m.score for m in attack.modality_scores if m.modality == Modality.FACE)
    assert face_score < CONTRADICTION_FLOORS["face"]
    assert not attack.match
    assert attack.score == pytest.approx(face_score)  # capped at the contradicting face's score


def test_two_frames_of_the_traveller_count_as_one_combined_face(service: CheckpointService) -> None:
    one = service.verify(SUBJECT, [face("Dick_Vermeil_0002.jpg")])
    two = service.verify(SUBJECT, [face("Dick_Vermeil_0002.jpg"), face("Dick_Vermeil_0002.jpg")])
    # the mean of two identical frames is that frame; the score drawn from two samples loses log10(2)
    assert two.score == pytest.approx(max(0.0, one.score - 0.30103), abs=1e-3)


def test_identify_fuses_without_the_floor_and_sends_a_contradicted_candidate_to_an_officer(
        service: CheckpointService) -> None:
    found = service.identify([face("Dick_Vermeil_0002.jpg"), finger("DB1_B_101_2")])
    assert [c.subject_id for c in found.candidates] == [SUBJECT]
    assert found.candidates[0].score >= found.threshold and not found.candidates[0].contradicted
    assert identification_outcome(found).decision is PROCEED
    # his finger with another face: Verify turns it away (above), a 1:N search must still name him
    attack = service.identify([face("Kofi_Annan_0004.jpg"), finger("DB1_B_101_2")])
    assert [c.subject_id for c in attack.candidates] == [SUBJECT]
    (hit,) = attack.candidates
    scores = {m.modality: m.score for m in hit.modality_scores}
    assert scores[Modality.FACE] < CONTRADICTION_FLOORS["face"] and hit.contradicted
    assert hit.score == pytest.approx(scores[Modality.FINGERPRINT] - 2 * math.log10(2))  # of 2 modalities, of 2 tests
    assert identification_outcome(attack).decision is SEE_OFFICER  # never a silent PROCEED


def test_a_watchlisted_finger_under_another_face_is_held_at_enrolment_and_alerts_at_identify(
        tmp_path: Path) -> None:
    """One person, one identity: the same finger enrolled with another face is a possible duplicate, and a
    watchlisted traveller cannot hide the finger's hit behind another face."""
    svc = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    try:
        assert svc.enrol(SUBJECT, SubjectInfo(name="Dick Vermeil", nationality="USA", watchlist=True),
                         [face("Dick_Vermeil_0001.jpg"), finger("DB1_B_101_1"), finger("DB1_B_101_3")]).enrolled
        second = svc.enrol("XXX0000099", SubjectInfo(name="Kofi Annan", nationality="GHA"),
                           [face("Kofi_Annan_0004.jpg"), finger("DB1_B_101_2")])
        assert not second.enrolled
        assert [(c.subject_id, c.contradicted) for c in second.possible_duplicates] == [(SUBJECT, True)]
        assert "XXX0000099" not in svc.gallery
        alerts = len(svc.list_alerts())
        found = svc.identify([face("Kofi_Annan_0004.jpg"), finger("DB1_B_101_2")])
        assert [(c.subject_id, c.watchlist) for c in found.candidates] == [(SUBJECT, True)]
        assert identification_outcome(found).decision is SEE_OFFICER
        raised = svc.list_alerts()  # newest first
        assert len(raised) == alerts + 1
        assert (raised[0].kind, raised[0].subject_id, raised[0].decision_id) == ("watchlist_identify", SUBJECT,
                                                                                 found.decision_id)
        assert not svc.verify(SUBJECT, [face("Kofi_Annan_0004.jpg"), finger("DB1_B_101_2")]).match  # 1:1 keeps it
    finally:
        svc.close()


def test_a_call_of_a_two_attempt_transaction_states_its_fused_score_as_one_of_two(service: CheckpointService) -> None:
    samples = [face("Dick_Vermeil_0002.jpg"), finger("DB1_B_101_2")]
    alone = service.verify(SUBJECT, samples)
    of_two = service.verify(SUBJECT, samples, attempts=2, attempt=2)
    assert of_two.modality_scores == alone.modality_scores  # each modality's own score, as it is
    assert of_two.score == pytest.approx(max(0.0, alone.score - math.log10(2)), abs=1e-12)
    assert of_two.score < alone.score
    assert service.verify(SUBJECT, samples, attempts=0).score == pytest.approx(alone.score)  # 0: one call
    finger_only = service.verify(SUBJECT, [finger("DB1_B_101_2")], attempts=3)  # one modality: it is the fused
    assert finger_only.score == pytest.approx(max(0.0, finger_only.modality_scores[0].score - math.log10(3)))


def test_a_transaction_whose_first_placement_fails_is_accepted_on_the_second(service: CheckpointService) -> None:
    traveller = face("Dick_Vermeil_0002.jpg")
    first = service.verify(SUBJECT, [traveller, finger("DB1_B_102_1")], attempts=2, attempt=1)  # a wrong finger
    assert not first.match and first.feedback_id == ""  # a step: nothing published, nothing to rate
    second = service.verify(SUBJECT, [traveller, finger("DB1_B_101_2")], attempts=2, attempt=2)
    assert second.match and second.score >= second.threshold and second.feedback_id  # the end: published


@pytest.mark.parametrize("attempts", [4, -1, 10**6])
def test_a_transaction_allows_one_to_three_attempts(service: CheckpointService, attempts: int) -> None:
    with pytest.raises(InvalidSample, match="1 to 3 attempts"):
        service.verify(SUBJECT, [face("Dick_Vermeil_0002.jpg")], attempts=attempts)
