"""A 1:N search (Identify, an enrolment's duplicate search) compares every probe with all of a subject's fingers,
whatever positions were declared: the scanner cannot tell which finger is on it. Verify (1:1) keeps the rule of
the position asked for: another finger than asked is rejected, never accepted."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from helpers import fingerprint_image
from helpers import fingerprint_template as template

import biometrics.fingerprint as fp
from biometrics.decisions import SEE_OFFICER, identification_outcome
from biometrics.fingerprint.gallery import FingerprintGallery
from biometrics.scores import ScoreCalibration
from biometrics.service import CheckpointService, NoReference, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint")
KIOSK = Actor(role="kiosk", identity="CN=kiosk-1,OU=kiosk,O=Checkpoint")
RIGHT_INDEX, RIGHT_MIDDLE, LEFT_INDEX = 2, 3, 7
pytestmark = pytest.mark.slow  # real fingerprint extraction


def finger(name: str, position: int) -> Sample:
    return Sample(Modality.FINGERPRINT, fingerprint_image(name).read_bytes(), position)


def test_a_search_finds_a_finger_declared_under_another_position_corrected_for_every_template() -> None:
    calibration = ScoreCalibration.for_modality("fingerprint")
    index, middle = template("DB1_B_101_1"), template("DB1_B_102_1")
    gallery = FingerprintGallery(calibration)
    gallery.add("A", [(RIGHT_INDEX, index), (RIGHT_MIDDLE, middle)])
    probe = template("DB1_B_101_2")
    raw = fp.compare_fingerprints(probe, index)
    # declared as the middle finger, or as a finger never enrolled: found, named by the enrolled finger it matched,
    # and corrected for both templates compared (not only those of its declared position)
    for declared in (RIGHT_MIDDLE, LEFT_INDEX):
        found = gallery.search([(declared, probe)])
        assert list(found) == ["A"]
        [(matched, score)] = found["A"]
        assert matched == RIGHT_INDEX
        assert score == pytest.approx(float(calibration.score(raw)) - math.log10(2))
        assert score >= 3.0
    # two fingers swapped: two enrolled fingers reached, one score each (not one finger counted twice)
    swapped = gallery.search([(RIGHT_MIDDLE, probe), (RIGHT_INDEX, middle)])
    assert sorted(f for f, _ in swapped["A"]) == [RIGHT_INDEX, RIGHT_MIDDLE]
    # 1:1 keeps the position asked for
    assert gallery.compare("A", [(LEFT_INDEX, probe)]) == []
    assert [f for f, _ in gallery.compare("A", [(RIGHT_INDEX, probe)])] == [RIGHT_INDEX]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckpointService]:
    root = tmp_path_factory.mktemp("positions-search")
    s = CheckpointService.open(StoreLocation(root / "data", key_dir=root / "keys"))
    yield s
    s.close()


def test_enrolling_again_with_a_finger_under_another_position_is_a_possible_duplicate(
        service: CheckpointService) -> None:
    assert service.enrol("A0000001", SubjectInfo(name="A", watchlist=True),
                         [finger("DB1_B_101_1", RIGHT_INDEX), finger("DB1_B_102_1", RIGHT_MIDDLE)],
                         actor=OFFICER).enrolled
    again = service.enrol("B0000001", SubjectInfo(name="B"),
                          [finger("DB1_B_101_2", RIGHT_MIDDLE), finger("DB1_B_103_1", RIGHT_INDEX)], actor=OFFICER)
    assert [c.subject_id for c in again.possible_duplicates] == ["A0000001"]
    assert not again.enrolled


def test_a_watchlisted_traveller_presenting_another_finger_is_found(service: CheckpointService) -> None:
    result = service.identify([finger("DB1_B_101_3", LEFT_INDEX)], actor=KIOSK)
    assert [(c.subject_id, c.watchlist) for c in result.candidates] == [("A0000001", True)]
    assert identification_outcome(result).decision is SEE_OFFICER
    # Verify keeps the finger asked for: another one is not compared (the traveller sees an officer)
    with pytest.raises(NoReference):
        service.verify("A0000001", [finger("DB1_B_101_3", LEFT_INDEX)], actor=KIOSK)
