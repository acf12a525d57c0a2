"""A face + finger 1:N search compares the face one to one only with the subjects found by finger that could still
reach the threshold (a shortlist), and finds exactly the candidates that scoring every subject would.

Faces are hand-made templates (the extractor takes the sample for the template), fingers real FVC2002 impressions
(tests/data/fingerprints): subject S000 holds finger 101 (the probe is its impression 2), the others other fingers.
80 subjects, so that most lie outside the face search's 50 hits and are found by finger alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_face_references import TemplateAsImage

from biometrics.fingerprint import extract_fingerprint
from biometrics.imaging import decode_grey
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Modality, ModalityScore

FINGERS = Path(__file__).resolve().parent / "data" / "fingerprints"
RIGHT_INDEX = 2
pytestmark = pytest.mark.slow  # real fingerprint extraction


def template(name: str):
    return extract_fingerprint(decode_grey((FINGERS / f"{name}.png").read_bytes()))


class CountingIndex:
    """The gallery's face index, counting its one-to-one comparisons."""

    def __init__(self, index) -> None:
        self.index, self.compared = index, []

    def compare(self, probe: np.ndarray, subject_id: str) -> float:
        self.compared.append(subject_id)
        return self.index.compare(probe, subject_id)

    def __getattr__(self, name: str):
        return getattr(self.index, name)

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self.index


def exhaustive(service: CheckpointService, face: np.ndarray, fingers, threshold: float) -> list[tuple[str, float]]:
    """Every subject scored as the search scores one, whatever the face search found."""
    g = service.gallery
    out = []
    for sid in g.watchlist:
        scores = [ModalityScore(Modality.FACE, service._face_score_of([face], sid, 1))]
        scores += [ModalityScore(Modality.FINGERPRINT, s, f) for f, s in g.fingerprint_gallery.compare(sid, fingers)]
        score = service.search_score(scores)
        if score >= threshold:
            out.append((sid, score))
    return sorted(out, key=lambda item: (-item[1], item[0]))


def test_the_shortlist_compares_few_faces_and_loses_no_candidate(tmp_path: Path) -> None:
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"),
                                     extractor=TemplateAsImage())
    try:
        rng = np.random.default_rng(3)
        faces = (rng.standard_normal((80, 128)) * 0.1).astype(np.float32)
        faces[0, 0] += 2.0  # the finger's owner: a face farther from every probe than anyone's
        others = [template(n) for n in ("DB1_B_102_1", "DB1_B_103_1", "DB3_B_101_1")]
        g = service.gallery
        for i in range(80):
            finger = template("DB1_B_101_1") if i == 0 else others[i % 3]
            g.add(f"ref{i}", f"S{i:03d}", False, [faces[i]], [(RIGHT_INDEX, finger)])
        probes = [(rng.standard_normal(128) * 0.1).astype(np.float32), faces[7] + 0.001]  # nobody's; S007's
        fingers = [(RIGHT_INDEX, template("DB1_B_101_2"))]
        threshold = service.search_threshold()
        for face in probes:
            g.face_index = counting = CountingIndex(g.face_index)
            found = [(c.subject_id, c.score) for c in service._search([face], fingers, 10, threshold)]
            compared = list(counting.compared)
            g.face_index = counting.index
            want = exhaustive(service, face, fingers, threshold)
            assert [sid for sid, _ in found] == [sid for sid, _ in want]
            assert [s for _, s in found] == pytest.approx([s for _, s in want], abs=1e-9)
            assert "S000" in dict(found)  # the finger's owner, his face far from the probe: found by finger
            assert compared == ["S000"]  # of the 30 subjects found by finger outside the 50 face hits, one could
    finally:
        service.close()
