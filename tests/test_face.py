"""The face detection cascade, on real LFW images (tests/data/faces)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from biometrics.face import REFINE_BELOW_SIDE, _hog, detect_faces, extract_face_template
from biometrics.imaging import decode_rgb

FACES = Path(__file__).parent / "data" / "faces"


def _rgb(name: str) -> np.ndarray:
    return decode_rgb((FACES / name).read_bytes())


def _frame(name: str) -> np.ndarray:
    """The LFW image in the middle of a 640x480 grey frame (a kiosk camera's size): the face stays small."""
    rgb = _rgb(name)
    frame = np.full((480, 640, 3), 128, np.uint8)
    frame[115:365, 195:445] = rgb
    return frame


@pytest.mark.parametrize("name", ["Kofi_Annan_0001.jpg", "Megawati_Sukarnoputri_0002.jpg"])
def test_a_small_image_is_searched_upsampled_first(name):
    rgb = _rgb(name)
    boxes = detect_faces(rgb)
    finer = max(_hog(rgb, 1), key=lambda b: b.side)
    assert boxes[0].detector == "hog1"
    assert (boxes[0].top, boxes[0].left) == (finer.top, finer.left)


@pytest.mark.parametrize("name", ["Kofi_Annan_0001.jpg", "Megawati_Sukarnoputri_0002.jpg"])
def test_a_small_face_in_a_large_frame_is_located_again_upsampled(name):
    rgb = _frame(name)
    coarse = _hog(rgb, 0)
    assert coarse and coarse[0].side < REFINE_BELOW_SIDE  # found at the frame's own scale, but small
    boxes = detect_faces(rgb)
    finer = max(_hog(rgb, 1), key=lambda b: b.side)
    assert boxes[0].detector == "hog1"
    assert (boxes[0].top, boxes[0].left, boxes[0].bottom, boxes[0].right) == (
        finer.top, finer.left, finer.bottom, finer.right)


def test_a_large_face_in_a_large_frame_keeps_the_image_scale_box():
    rgb = cv2.resize(_rgb("Kofi_Annan_0001.jpg"), None, fx=2.5, fy=2.5, interpolation=cv2.INTER_CUBIC)
    boxes = detect_faces(rgb)
    assert boxes[0].detector == "hog0" and boxes[0].side >= REFINE_BELOW_SIDE


def test_the_template_records_which_stage_found_the_face():
    rgb = _rgb("Hans_Blix_0001.jpg")
    template = extract_face_template(rgb)
    assert template.template.shape == (128,) and template.template.dtype == np.float32
    # the cascade's own first box, found upsampled (a 250x250 LFW image is small): the stage is recorded
    assert template.box == detect_faces(rgb)[0]
    assert template.box.detector == "hog1"
