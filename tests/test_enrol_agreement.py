"""An enrolment's face samples must be of one person: two people's photographs under one document are refused
(INVALID_ARGUMENT at the desk) before anything is stored; one person's several photographs are enrolled. Likewise
the impressions of one finger must be of one finger (biometrics.fingerprint.agreement): real FVC2002 samples."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA, face

from biometrics.errors import InvalidSample, SamplesDisagree, SubjectNotFound
from biometrics.fingerprint.agreement import MIN_IMPRESSION_AGREEMENT, disagreement, impression_groups
from biometrics.multiframe import MIN_ENROL_AGREEMENT, disagreeing_pairs
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint")


def sample(name: str) -> Sample:
    return Sample(Modality.FACE, face(name))


def test_pairs_under_the_agreement_score_are_named_worst_first() -> None:
    templates = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [0.0, 2.0]])

    def score(distance: np.ndarray) -> np.ndarray:  # a toy calibration: nearer is likelier the same person
        return 4.0 - 2.0 * distance

    assert disagreeing_pairs(templates[:2], score) == []
    pairs = disagreeing_pairs(templates, score, min_score=MIN_ENROL_AGREEMENT)
    assert [(a, b) for a, b, _ in pairs] == [(2, 3), (1, 3), (0, 3)]  # (0, 2) and (1, 2) score 2.0 and 2.2
    assert all(s < MIN_ENROL_AGREEMENT for _, _, s in pairs)
    assert disagreeing_pairs(templates[:1], score) == []


def test_two_peoples_photographs_under_one_document_are_refused(tmp_path: Path) -> None:
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"),
                                     config=ServiceConfig())
    try:
        with pytest.raises(SamplesDisagree, match="photographs 1 and 2 do not look like the same person") as err:
            service.enrol("MIX00001", SubjectInfo(name="Mixed"),
                          [sample("Kofi_Annan_0001.jpg"), sample("Megawati_Sukarnoputri_0001.jpg")], actor=OFFICER)
        assert isinstance(err.value, InvalidSample)
        with pytest.raises(SubjectNotFound):
            service.get_subject("MIX00001", actor=OFFICER)
        kofi = [sample(f"Kofi_Annan_000{i}.jpg") for i in (1, 2, 4)]
        assert service.enrol("K1000001", SubjectInfo(name="Kofi Annan"), kofi, actor=OFFICER).enrolled
        assert len(service.get_subject("K1000001", actor=OFFICER).templates) == 3
    finally:
        service.close()


# -- fingerprints: the impressions of one finger must be of one finger --------------------------------------------

def finger(name: str, position: int = 2) -> Sample:
    return Sample(Modality.FINGERPRINT, (DATA / "fingerprints" / f"{name}.png").read_bytes(), position)


def test_impressions_agree_directly_or_through_another() -> None:
    def score(a: str, b: str) -> float:  # a toy comparison: impressions of a finger named by its first letter
        return {("a1", "a3"): 0.5}.get((a, b), 12.0 if a[0] == b[0] else 0.2)

    assert impression_groups(["a1", "a2", "a3"], score) == ([[0, 1, 2]], 0.0)  # a1 and a3 meet through a2
    groups, best = impression_groups(["a1", "a2", "b1"], score)
    assert groups == [[0, 1], [2]] and best == 0.2
    assert impression_groups(["a1", "b1", "b2", "a2"], score)[0] == [[0, 3], [1, 2]]
    assert impression_groups(["a1"], score) == ([[0]], 0.0)
    message = disagreement(2, [[0, 1], [2]], 0.2)
    assert message.startswith("The impressions of the right index do not agree: capture that finger again")
    assert "impression 3 matches none of impressions 1 and 2" in message
    assert "the finger sent without a position" in disagreement(0, [[1, 2], [0]], 0.4)


@pytest.fixture(scope="module")
def fingers_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckpointService]:
    root = tmp_path_factory.mktemp("finger-agreement")
    service = CheckpointService.open(StoreLocation(root / "data", key_dir=root / "keys"))
    yield service
    service.close()


@pytest.mark.parametrize(("samples", "words"), [
    # a review: DB1_B_101_1 and DB1_B_103_1 (two fingers) were enrolled as one right index
    (["DB1_B_101_1", "DB1_B_103_1"], "the right index do not agree: capture that finger again (impression 2 matches "
                                     "none of impression 1;"),
    (["DB1_B_101_1", "DB1_B_101_2", "DB1_B_103_1"], "impression 3 matches none of impressions 1 and 2"),
])
def test_two_fingers_enrolled_as_one_are_refused(fingers_service: CheckpointService, samples: list[str],
                                                 words: str) -> None:
    with pytest.raises(SamplesDisagree, match=re.escape(words)) as err:
        fingers_service.enrol("MIXF0001", SubjectInfo(name="Mixed Fingers"), [finger(n) for n in samples],
                              actor=OFFICER)
    assert isinstance(err.value, InvalidSample)  # INVALID_ARGUMENT at the desk
    assert f"under {MIN_IMPRESSION_AGREEMENT:g}" in str(err.value)
    with pytest.raises(SubjectNotFound):
        fingers_service.get_subject("MIXF0001", actor=OFFICER)


def test_impressions_sent_without_a_position_must_be_one_finger(fingers_service: CheckpointService) -> None:
    with pytest.raises(SamplesDisagree, match="The impressions of the finger sent without a position do not agree"):
        fingers_service.enrol("MIXF0002", SubjectInfo(name="No Position"),
                              [finger("DB1_B_101_1", 0), finger("DB1_B_102_1", 0)], actor=OFFICER)


def test_one_fingers_impressions_and_fingers_apart_are_enrolled(tmp_path: Path) -> None:
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    try:
        three = [finger(f"DB1_B_101_{i}") for i in (1, 2, 3)]
        assert service.enrol("ONEF0001", SubjectInfo(name="One Finger"), [*three, finger("DB1_B_102_1", 7)],
                             actor=OFFICER).enrolled  # another finger under its own position is not compared
        assert len(service.get_subject("ONEF0001", actor=OFFICER).templates) == 4
    finally:
        service.close()
