"""An enrolment's face samples must be of one person: two people's photographs under one document are refused
(INVALID_ARGUMENT at the desk) before anything is stored; one person's several photographs are enrolled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import face

from biometrics.errors import InvalidSample, SamplesDisagree, SubjectNotFound
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
