"""1:N search edge cases found by a review: a subject erased while a search runs, and a watchlist hit ranked
beyond the search's candidate limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import face

from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Modality, Sample, SubjectInfo

FINGERS = Path(__file__).parent / "data" / "fingerprints"
PROBE_FACE = "Megawati_Sukarnoputri_0002.jpg"


def finger(name: str, position: int = 2) -> Sample:
    return Sample(Modality.FINGERPRINT, (FINGERS / name).read_bytes(), position)


@pytest.fixture
def service(tmp_path: Path):
    s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"),
                               config=ServiceConfig(max_candidates=3))
    yield s
    s.close()


def probe_template(service: CheckpointService) -> np.ndarray:
    return service._extract_faces([Sample(Modality.FACE, face(PROBE_FACE))], "search")[0].template


def crowd(service: CheckpointService, centre: np.ndarray, count: int, noise: float, seed: int = 1) -> None:
    """``count`` subjects whose faces lie near ``centre`` (held in memory, as a large gallery holds them)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        template = (centre + rng.normal(0, noise, centre.shape)).astype(np.float32)
        service.gallery.add(f"ref{i}", f"S{i:04d}", False, [template], [])


def test_an_identify_racing_an_erasure_answers_without_the_erased_subject(service: CheckpointService,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A subject found by finger outside the face hits is compared 1:1 by face; erased in between, it is not a
    candidate, and the search answers (before: NOT_FOUND naming that subject's document number to a kiosk)."""
    assert service.enrol("X-DOC-4711", SubjectInfo(name="X"), [
        Sample(Modality.FACE, face("Hans_Blix_0001.jpg")), finger("DB1_B_101_1.png"), finger("DB1_B_101_3.png")
    ]).enrolled
    crowd(service, probe_template(service), 60, 0.03)  # more faces nearer the probe than the face search returns
    real = service._may_reach
    shortlisted: list[str] = []

    def then_erased(*args):
        chosen = real(*args)
        shortlisted.extend(chosen)
        service.delete_subject("X-DOC-4711", "erasure request")
        return chosen

    monkeypatch.setattr(service, "_may_reach", then_erased)
    answer = service.identify([Sample(Modality.FACE, face(PROBE_FACE)), finger("DB1_B_101_2.png")],
                              max_candidates=3)
    assert shortlisted == ["X-DOC-4711"]  # the race was reached
    assert "X-DOC-4711" not in [c.subject_id for c in answer.candidates]
    assert answer.candidates  # the crowd's faces still answer


def test_a_watchlist_hit_ranked_beyond_the_candidate_limit_is_kept(service: CheckpointService) -> None:
    """More subjects than ``max_candidates`` pass the 1:N threshold; a watchlisted one ranked below them is still
    a candidate (decisions.shortlist never cuts a watchlist hit: the search before it cut it)."""
    centre = probe_template(service)
    crowd(service, centre, 5, 0.005)  # five near-copies of the probe: the best scores
    rng = np.random.default_rng(7)
    farther = (centre + rng.normal(0, 0.02, centre.shape)).astype(np.float32)
    service.gallery.add("refW", "W-WATCH", True, [farther], [])
    answer = service.identify([Sample(Modality.FACE, face(PROBE_FACE))], max_candidates=2)
    ids = [c.subject_id for c in answer.candidates]
    assert "W-WATCH" in ids, ids
    assert ids[:2] == [c for c in ids if c != "W-WATCH"][:2]  # the two best first, the watchlist hit after them
