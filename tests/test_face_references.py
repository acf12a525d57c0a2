"""A face score is corrected for the references a subject holds and for the photographs an enrolment screens with.

A subject's face score is its best template's: with k references an impostor has k chances, so the score loses
``log10(k)`` (the union bound, as for fingers: ``fusion.best_of_k``), in Verify and in 1:N searches alike. An
enrolment's photographs are searched as several frames of one traveller: combined by the multi-frame rule (their
mean), the score less ``log10`` of their number. Hand-made templates (an extractor that takes the sample for the
template), so that every distance is known.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from biometrics import multiframe
from biometrics.face import FaceBox, FaceTemplate
from biometrics.fingerprint.fusion import best_of_k
from biometrics.multiframe import RULES, weighted_mean_template
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Modality, Sample, SubjectInfo

R, D = 0.3, 0.45  # references r e_i (pairwise 0.42 apart: one person); the probe D from the first


class TemplateAsImage:
    """The sample's image is the template itself."""

    def extract_face(self, image: np.ndarray, purpose: str = "probe") -> FaceTemplate:
        return FaceTemplate(np.asarray(image, dtype=np.float32), FaceBox(0, 1, 1, 0, 1.0, "test"), 90.0)


def unit(i: int) -> np.ndarray:
    v = np.zeros(128, dtype=np.float32)
    v[i] = 1.0
    return v


REFERENCES = [R * unit(0), R * unit(1), R * unit(2)]
PROBE = R * unit(0) + D * unit(3)


def face(template: np.ndarray) -> Sample:
    return Sample(Modality.FACE, template)


def open_service(root: Path) -> CheckpointService:
    return CheckpointService.open(StoreLocation(root / "data", key_dir=root / "keys"), extractor=TemplateAsImage())


@pytest.fixture()
def service(tmp_path: Path):
    svc = open_service(tmp_path)
    # the same person under two documents: THREE with three references, ONE with the nearest of them only
    assert svc.enrol("THREE", SubjectInfo(name="x"), [face(t) for t in REFERENCES]).enrolled
    assert svc.enrol("ONE", SubjectInfo(name="x"), [face(REFERENCES[0])], allow_duplicate=True,
                     override_reason="hand-made twin").enrolled
    yield svc
    svc.close()


def test_a_subject_with_three_references_scores_log10_3_under_its_best_one_alone(service: CheckpointService) -> None:
    one = service.verify("ONE", [face(PROBE)])
    three = service.verify("THREE", [face(PROBE)])
    assert one.score == pytest.approx(service.face_score(D), abs=1e-6)  # the nearest reference, distance D
    assert 3.0 < three.score < one.score < 12.0  # inside the calibration's range: nothing clipped
    assert three.score == pytest.approx(one.score - math.log10(3), abs=1e-9)
    two_frames = service.verify("THREE", [face(PROBE), face(PROBE)])  # frames and references multiply
    assert two_frames.score == pytest.approx(one.score - math.log10(2 * 3), abs=1e-6)


@pytest.mark.parametrize("rule", RULES)
def test_several_frames_lose_log10_of_their_number_by_every_rule(tmp_path: Path, rule: str) -> None:
    """The mean of k frames is held to the same union bound as the best of k (measured on LFW, docs/benchmarks.md,
    "Several frames per traveller"). A review: ``multiframe.compared_count`` said the opposite (the mean of k frames
    one comparison, no loss), used by nothing but its own test; the module now states no other count."""
    assert not hasattr(multiframe, "compared_count")
    svc = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"),
                                 config=ServiceConfig(multiframe_rule=rule), extractor=TemplateAsImage())
    try:
        assert svc.enrol("ONE", SubjectInfo(name="x"), [face(REFERENCES[0])]).enrolled
        one = svc.verify("ONE", [face(PROBE)]).score
        for k in (2, 3):  # identical frames: every rule compares the probe's own template
            assert svc.verify("ONE", [face(PROBE)] * k).score == pytest.approx(one - math.log10(k), abs=1e-6)
    finally:
        svc.close()


def test_identify_corrects_each_candidate_for_its_references(service: CheckpointService) -> None:
    found = {c.subject_id: c.score for c in service.identify([face(PROBE)]).candidates}
    assert found["THREE"] == pytest.approx(found["ONE"] - math.log10(3), abs=1e-9)


def test_the_enrolment_screen_combines_its_photographs_and_corrects_for_them(service: CheckpointService) -> None:
    photographs = [PROBE, R * unit(0) + D * unit(4), R * unit(0) + D * unit(5)]
    _, found, enrolled, _ = service.screen(photographs, [], False)
    scores = {c.subject_id: c.score for c in found}
    mean = weighted_mean_template(np.asarray(photographs, dtype=np.float64)).astype(np.float32)
    nearest = float(np.linalg.norm(mean.astype(np.float64) - REFERENCES[0].astype(np.float64)))
    assert not enrolled
    assert scores["ONE"] == pytest.approx(best_of_k(float(service.face_score(nearest)), 3), abs=1e-6)
    assert scores["THREE"] == pytest.approx(best_of_k(float(service.face_score(nearest)), 3 * 3), abs=1e-6)


def test_the_count_is_the_same_after_a_restart_and_gone_with_the_subject(tmp_path: Path) -> None:
    svc = open_service(tmp_path)
    try:
        assert svc.enrol("THREE", SubjectInfo(name="x"), [face(t) for t in REFERENCES]).enrolled
        before = svc.verify("THREE", [face(PROBE)]).score
    finally:
        svc.close()
    again = open_service(tmp_path)  # the gallery loaded from the store, in pages
    try:
        assert again.gallery.face_references("THREE") == 3
        assert again.verify("THREE", [face(PROBE)]).score == pytest.approx(before, abs=1e-9)
        again.delete_subject("THREE", "erasure request")
        assert "THREE" not in again.gallery.face_counts
    finally:
        again.close()
