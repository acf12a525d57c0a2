"""Decoding untrusted image bytes: formats, caps checked before decoding, damaged files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import face

from biometrics.errors import SampleTooLarge, UnsupportedImage
from biometrics.imaging import ImageLimits, decode_grey, decode_rgb, encode_png, image_size


def test_jpeg_and_png_decode_to_rgb_and_grey() -> None:
    jpeg = face("Hans_Blix_0001.jpg")
    rgb = decode_rgb(jpeg)
    assert rgb.shape == (250, 250, 3) and rgb.dtype == np.uint8
    assert image_size(jpeg) == (250, 250)
    png = encode_png(rgb)
    assert np.array_equal(decode_rgb(png), rgb)
    assert decode_grey(png).shape == (250, 250)
    # RGB order: OpenCV's BGR is converted
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(rgb[..., 0], bgr[..., 2])


@pytest.mark.parametrize("data", [b"", b"hello", b"BM" + b"\x00" * 200, b"\x89PNG\r\n\x1a\n" + b"\x00" * 4])
def test_other_formats_and_garbage_are_refused(data: bytes) -> None:
    with pytest.raises(UnsupportedImage):
        decode_rgb(data)


def test_caps_are_checked_before_decoding() -> None:
    jpeg = face("Hans_Blix_0001.jpg")
    with pytest.raises(SampleTooLarge, match="MB"):
        decode_rgb(jpeg, ImageLimits(max_bytes=1000))
    with pytest.raises(SampleTooLarge, match="megapixels"):
        decode_rgb(jpeg, ImageLimits(max_pixels=250 * 249))


def test_damaged_jpeg_is_refused() -> None:
    jpeg = face("Hans_Blix_0001.jpg")
    with pytest.raises(UnsupportedImage):
        decode_rgb(jpeg[:300])
    tiny = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    with pytest.raises(UnsupportedImage, match="too small"):
        decode_rgb(tiny)
