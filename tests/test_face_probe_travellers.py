"""A search (Identify, each of its frames) with a second traveller in the picture is refused, never searched on the
largest face alone (a watchlisted traveller beside a larger face raised no alert); a much smaller face far behind
(the queue) is ignored (``PROBE_SECOND_FACE_RATIO``). Verify asks whether the traveller nearest the camera holds
the document: it scores the largest face, as before."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from helpers import face, side_by_side

from biometrics.decisions import SEE_OFFICER, identification_outcome
from biometrics.errors import MultipleFaces
from biometrics.face import (
    PROBE_SECOND_FACE_RATIO,
    detect_faces,
    extract_face_template,
    face_distance,
    frame_quality,
)
from biometrics.imaging import decode_rgb
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo
from verify.status import status_for

OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint")
KIOSK = Actor(role="kiosk", identity="CN=kiosk-1,OU=kiosk,O=Checkpoint")
# The review's case: a watchlisted traveller (220 px) beside a larger face (250 px), one 500x250 picture.
TWO_TRAVELLERS = (("Kofi_Annan_0004.jpg", 220), ("Hans_Blix_0001.jpg", 250))
# The same traveller with someone far back in the queue (a face a third of the traveller's side).
ONE_IN_THE_QUEUE = (("Kofi_Annan_0004.jpg", 250), ("Hans_Blix_0001.jpg", 80))


def rgb_of(data: bytes) -> np.ndarray:
    return decode_rgb(data)


def test_the_composed_pictures_hold_the_faces_they_are_meant_to() -> None:
    """Both faces are detected in each, at the ratios the tests rely on (either side of the rule)."""
    ratios = {}
    for name, pair in (("two", TWO_TRAVELLERS), ("queue", ONE_IN_THE_QUEUE)):
        boxes = detect_faces(rgb_of(side_by_side(*pair)))
        assert len(boxes) == 2
        ratios[name] = boxes[1].side / boxes[0].side
    assert ratios["queue"] < PROBE_SECOND_FACE_RATIO <= 0.8 <= ratios["two"]


def test_a_second_traveller_is_refused_with_a_message_the_kiosk_can_show() -> None:
    with pytest.raises(MultipleFaces) as info:
        extract_face_template(rgb_of(side_by_side(*TWO_TRAVELLERS)), "search")
    assert str(info.value).startswith("Two faces are in the picture: one traveller at a time, please.")
    assert status_for(info.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_small_face_far_behind_is_ignored_and_the_traveller_is_scored() -> None:
    alone = extract_face_template(rgb_of(face("Kofi_Annan_0004.jpg")), "search")
    queued = extract_face_template(rgb_of(side_by_side(*ONE_IN_THE_QUEUE)), "search")
    assert queued.box.left < 250  # the traveller's face, at the left
    assert face_distance(queued.template, alone.template) < 0.2


def test_a_camera_frame_with_a_second_traveller_is_not_chosen() -> None:
    """The camera's frame scorer applies the search's rule, so a burst never picks a frame a search refuses."""
    assert frame_quality(rgb_of(side_by_side(*TWO_TRAVELLERS))) is None
    assert frame_quality(rgb_of(side_by_side(*ONE_IN_THE_QUEUE))) is not None


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    """K1 (Kofi Annan, from Kofi_Annan_0001) enrolled on the watchlist."""
    root = tmp_path_factory.mktemp("travellers")
    station = CheckpointService.open(StoreLocation(root / "data", key_dir=root / "keys"), config=ServiceConfig())
    assert station.enrol("K1", SubjectInfo(name="Kofi Annan", watchlist=True),
                         [Sample(Modality.FACE, face("Kofi_Annan_0001.jpg"))], actor=OFFICER).enrolled
    yield station
    station.close()


def test_identify_of_the_traveller_alone_raises_the_watchlist_alert(service) -> None:
    alerts = len(service.list_alerts(actor=OFFICER))
    result = service.identify([Sample(Modality.FACE, face("Kofi_Annan_0004.jpg"))], 5, actor=KIOSK)
    assert [(c.subject_id, c.watchlist) for c in result.candidates] == [("K1", True)]
    assert identification_outcome(result).decision is SEE_OFFICER
    assert len(service.list_alerts(actor=OFFICER)) == alerts + 1


@pytest.mark.parametrize("call", ["identify", "burst"])
def test_a_second_traveller_is_refused_by_identify_and_its_bursts(service, call: str) -> None:
    """Before: Identify answered SEE OFFICER with no candidate and no alert."""
    two = Sample(Modality.FACE, side_by_side(*TWO_TRAVELLERS))
    alone = Sample(Modality.FACE, face("Kofi_Annan_0004.jpg"))
    with pytest.raises(MultipleFaces, match="one traveller at a time"):
        if call == "identify":
            service.identify([two], 5, actor=KIOSK)
        else:  # several frames of one traveller, one of them with a second face
            service.identify([alone, two], 5, actor=KIOSK)


def test_verify_scores_the_traveller_nearest_the_camera(service) -> None:
    """Is the traveller in front of the camera the holder of K1? The nearest face (the largest) answers; a
    smaller K1 beside it does not make the nearer traveller K1."""
    nearest = extract_face_template(rgb_of(side_by_side(*TWO_TRAVELLERS)), "probe")
    assert nearest.box.left >= 220  # Hans Blix's face, on the right, the larger
    assert not service.verify("K1", [Sample(Modality.FACE, side_by_side(*TWO_TRAVELLERS))], actor=OFFICER).match
    assert service.verify("K1", [Sample(Modality.FACE, side_by_side(("Kofi_Annan_0004.jpg", 250),
                                                                       ("Hans_Blix_0001.jpg", 200)))],
                          actor=OFFICER).match


def test_a_face_far_behind_does_not_hide_the_traveller_from_the_watchlist(service) -> None:
    result = service.identify([Sample(Modality.FACE, side_by_side(*ONE_IN_THE_QUEUE))], 5, actor=KIOSK)
    assert [(c.subject_id, c.watchlist) for c in result.candidates] == [("K1", True)]
    assert identification_outcome(result).decision is SEE_OFFICER


@pytest.mark.parametrize(("second_side", "refused"), [(240, True), (180, False)])
def test_a_kiosk_frame_found_at_the_image_scale_applies_the_same_rule(second_side: int, refused: bool) -> None:
    """A 640x480 frame whose largest face (about 180 px) is over REFINE_BELOW_SIDE: the image-scale HOG alone
    finds both faces (a second at 0.58 of the first, refused; at 0.40, someone further back, ignored)."""
    frame = rgb_of(side_by_side(("Hans_Blix_0001.jpg", 420), ("Kofi_Annan_0004.jpg", second_side), size=(640, 480)))
    boxes = detect_faces(frame)
    assert [b.detector for b in boxes] == ["hog0", "hog0"]
    if refused:
        with pytest.raises(MultipleFaces, match="one traveller at a time"):
            extract_face_template(frame, "search")
    else:
        assert extract_face_template(frame, "search").box == boxes[0]
