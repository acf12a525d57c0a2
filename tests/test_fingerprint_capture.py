"""A fingerprint sample must be a fingerprint capture: a face photograph (colour, or grey) is refused as
``NotAFingerprint`` (INVALID_ARGUMENT), never enrolled; a real print, or a grey one saved as RGB, is not altered."""

from __future__ import annotations

from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from helpers import DATA, FACES

from biometrics.errors import NotAFingerprint, PoorQuality
from biometrics.fingerprint import ENROL_MIN_QUALITY, extract_fingerprint, fingerprint_quality
from biometrics.fingerprint.capture import (
    MAX_CHANNEL_SPREAD,
    MIN_RIDGE_SHARE,
    channel_spread,
    decode_fingerprint,
    ridge_share,
)
from biometrics.fingerprint.image import as_working_image
from biometrics.fingerprint.pipeline import analyse
from biometrics.imaging import decode_grey
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo
from verify.status import status_for

FINGERPRINTS = sorted((DATA / "fingerprints").glob("*.png"))
FACE_PHOTOS = sorted(FACES.glob("*.jpg"))
OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint")
RIGHT_INDEX = 2


def grey_png(path: Path) -> bytes:
    """A face photograph converted to grey, as an officer's image tool would save it."""
    return cv2.imencode(".png", cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))[1].tobytes()


@pytest.mark.parametrize("path", FACE_PHOTOS, ids=lambda p: p.stem)
def test_a_face_photograph_in_grey_is_not_a_fingerprint(path: Path) -> None:
    """Before: rated 94-96/100 and enrolled, with 17-25 minutiae."""
    grey = decode_fingerprint(grey_png(path))
    with pytest.raises(NotAFingerprint) as info:
        extract_fingerprint(grey, min_quality=ENROL_MIN_QUALITY, check_ridges=True)  # as enrolment extracts
    assert str(info.value).startswith("This is not a fingerprint scan: no ridge pattern was found")
    assert fingerprint_quality(grey) == 0.0
    # a probe is not held to it (it would refuse real partial or degraded prints too): it simply does not match
    extract_fingerprint(grey)


@pytest.mark.parametrize("path", FACE_PHOTOS[:3], ids=lambda p: p.stem)
def test_a_colour_photograph_is_not_a_fingerprint(path: Path) -> None:
    with pytest.raises(NotAFingerprint) as info:
        decode_fingerprint(path.read_bytes())
    assert str(info.value).startswith("This is not a fingerprint scan: it is a colour picture")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # a device's pixels
    assert channel_spread(rgb) >= MAX_CHANNEL_SPREAD
    with pytest.raises(NotAFingerprint, match="colour picture"):
        extract_fingerprint(rgb)


@pytest.mark.parametrize("path", FINGERPRINTS, ids=lambda p: p.stem)
def test_every_test_fingerprint_is_one(path: Path) -> None:
    analysis = analyse(as_working_image(decode_grey(path.read_bytes())))
    assert ridge_share(analysis.norm, analysis.mask) >= MIN_RIDGE_SHARE
    assert extract_fingerprint(decode_fingerprint(path.read_bytes())).minutiae_count > 0


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_a_grey_print_saved_as_rgb_passes_with_the_same_template(ext: str) -> None:
    path = DATA / "fingerprints" / "DB1_B_101_1.png"
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    data = cv2.imencode(ext, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))[1].tobytes()
    as_grey = cv2.imencode(ext, grey)[1].tobytes()
    assert channel_spread(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)) < MAX_CHANNEL_SPREAD
    assert np.array_equal(decode_fingerprint(data), decode_grey(data))  # the check never alters the pixels
    assert (extract_fingerprint(decode_fingerprint(data)).to_bytes()
            == extract_fingerprint(decode_fingerprint(as_grey)).to_bytes())
    rgb_pixels = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)  # a device's RGB frame of a grey sensor
    assert extract_fingerprint(rgb_pixels).to_bytes() == extract_fingerprint(grey).to_bytes()


def test_a_blank_capture_is_still_poor_quality_not_a_photograph() -> None:
    with pytest.raises(PoorQuality) as info:
        extract_fingerprint(np.full((288, 256), 255, np.uint8))
    assert not isinstance(info.value, NotAFingerprint)


def test_enrolment_refuses_a_face_photograph_as_a_finger_with_invalid_argument(tmp_path: Path) -> None:
    """The desk's ``checkpoint-enroll enrol F1 --finger right-index:photo.jpg``: refused, nothing stored."""
    station = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"),
                                     config=ServiceConfig())
    try:
        for image in (FACE_PHOTOS[0].read_bytes(), grey_png(FACE_PHOTOS[0])):
            with pytest.raises(NotAFingerprint) as info:
                station.enrol("F1", SubjectInfo(name="F One"),
                              [Sample(Modality.FINGERPRINT, image, finger=RIGHT_INDEX)], actor=OFFICER)
            assert status_for(info.value) == grpc.StatusCode.INVALID_ARGUMENT
            assert str(info.value).startswith("This is not a fingerprint scan: ")
        assert not station.holds("F1")
        assert station.sample_quality(Sample(Modality.FINGERPRINT, grey_png(FACE_PHOTOS[0]), RIGHT_INDEX)) == 0.0
    finally:
        station.close()
