"""One finger enrolled under two positions, position 0 mixed with declared positions, and ties of raw scores.

A review enrolled DB1_B finger 101 as the right index (impressions 1-3) and again as the left index (4-6), the
desk's common mistake (the applicant does not move to the next finger): it was accepted and then counted twice
(Verify with 101_7 at both positions 22.91, once 11.52). Such an enrolment is now refused, INVALID_ARGUMENT, before
anything is stored (``biometrics.fingerprint.agreement.positions_of_one_finger``); so is one mixing fingers sent
without a position (0) with declared ones. And which enrolled finger a probe matched no longer depends on the order
of the gallery's rows when raw scores tie. Real FVC2002 samples (tests/data/fingerprints and fingerprints-more).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import pytest
from helpers import fingerprint_image as image
from helpers import fingerprint_template as template

from biometrics.errors import InvalidSample, SamplesDisagree, SubjectNotFound
from biometrics.fingerprint.agreement import one_finger
from biometrics.fingerprint.gallery import FingerprintGallery
from biometrics.scores import ScoreCalibration
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint")
UNKNOWN, RIGHT_INDEX, RIGHT_MIDDLE, LEFT_INDEX = 0, 2, 3, 7
pytestmark = pytest.mark.slow  # real fingerprint extraction


def finger(name: str, position: int) -> Sample:
    return Sample(Modality.FINGERPRINT, image(name).read_bytes(), position)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckpointService]:
    root = tmp_path_factory.mktemp("two-positions")
    s = CheckpointService.open(StoreLocation(root / "data", key_dir=root / "keys"))
    yield s
    s.close()


def test_different_fingers_under_their_positions_are_enrolled(service: CheckpointService) -> None:
    samples = [finger(f"DB1_B_101_{i}", RIGHT_INDEX) for i in (1, 2, 3)] + [
        finger("DB1_B_102_1", LEFT_INDEX), finger("DB1_B_103_1", RIGHT_MIDDLE)]
    assert service.enrol("TWOP0003", SubjectInfo(name="Three Fingers"), samples, actor=OFFICER).enrolled
    assert len(service.get_subject("TWOP0003", actor=OFFICER).templates) == 5


def test_one_finger_enrolled_under_two_positions_is_refused(service: CheckpointService) -> None:
    samples = [finger(f"DB1_B_101_{i}", RIGHT_INDEX) for i in (1, 2, 3)] + [
        finger(f"DB1_B_101_{i}", LEFT_INDEX) for i in (4, 5, 6)]
    with pytest.raises(SamplesDisagree, match=re.escape(
            "The right index and the left index look like one finger: place each finger in turn")) as err:
        service.enrol("TWOP0001", SubjectInfo(name="Same Finger Twice"), samples, actor=OFFICER)
    assert isinstance(err.value, InvalidSample)  # INVALID_ARGUMENT at the desk
    assert "9 comparisons" in str(err.value)
    with pytest.raises(SubjectNotFound):
        service.get_subject("TWOP0001", actor=OFFICER)
    # one impression under each: a single comparison decides
    with pytest.raises(SamplesDisagree, match="look like one finger"):
        service.enrol("TWOP0002", SubjectInfo(name="Same Finger Twice"),
                      [finger("DB1_B_101_1", RIGHT_INDEX), finger("DB1_B_101_7", LEFT_INDEX)], actor=OFFICER)


def test_position_zero_mixed_with_declared_positions_is_refused(service: CheckpointService) -> None:
    for samples in ([finger("DB1_B_101_1", RIGHT_INDEX), finger("DB1_B_102_1", UNKNOWN)],
                    [finger("DB1_B_101_1", UNKNOWN), finger("DB1_B_101_2", UNKNOWN),
                     finger("DB1_B_102_1", LEFT_INDEX)]):
        with pytest.raises(SamplesDisagree, match="give every finger's position, or none") as err:
            service.enrol("MIX00003", SubjectInfo(name="Mixed Positions"), samples, actor=OFFICER)
        assert isinstance(err.value, InvalidSample)
        with pytest.raises(SubjectNotFound):
            service.get_subject("MIX00003", actor=OFFICER)
    # a finger without a position, none declared, is still enrolled (as before)
    assert service.enrol("NONE0001", SubjectInfo(name="No Positions"), [finger("DB3_B_101_1", UNKNOWN)],
                         actor=OFFICER).enrolled


def test_the_rule() -> None:
    assert one_finger([2.6, 2.5, 0.3])  # median 2.5 of three
    assert not one_finger([2.6, 2.4, 0.3])
    assert not one_finger([2.5, 0.1])  # two pairs: the median is not asked, and none is high
    assert one_finger([12.0])  # one pair at the top of the scale
    assert not one_finger([0.4] * 8 + [3.0])
    assert not one_finger([])


def test_a_tie_of_raw_scores_does_not_depend_on_the_rows_order() -> None:
    """The same template enrolled under two positions (a legacy subject: no longer accepted at enrolment) ties
    exactly; the probe matched the lowest position, or 0, whichever order the station loaded the rows in. The
    search compares each probe with every row (1:N), compare only with its position's and 0's (1:1): the same
    best, corrected for k comparisons (search) or ``compared`` (compare)."""
    calibration = ScoreCalibration.for_modality("fingerprint")
    t1, t2, other = template("DB1_B_101_1"), template("DB1_B_101_2"), template("DB1_B_102_1")
    for rows, probes, expected, k, compared_k in (
            ([(LEFT_INDEX, t1), (RIGHT_INDEX, t1)], [(UNKNOWN, t2)], [RIGHT_INDEX], 2, 2),
            # a tie with a template of position 0 goes to 0: the probe is one finger with the subject's others (was
            # two scores, right and left index, in one of the two orders)
            ([(RIGHT_INDEX, t1), (UNKNOWN, t1), (LEFT_INDEX, other)], [(RIGHT_INDEX, t2), (LEFT_INDEX, other)],
             [LEFT_INDEX], 6, 4)):
        results = []
        for order in (rows, rows[::-1]):
            gallery = FingerprintGallery(calibration)
            gallery.add("S", order)
            found = gallery.search(probes)["S"]
            assert [f for f, _ in found] == expected
            compared = gallery.compare("S", probes)
            assert [f for f, _ in compared] == expected
            assert [s for _, s in compared] == pytest.approx([s + math.log10(k / compared_k) for _, s in found])
            results.append(found)
        assert results[0] == results[1]
