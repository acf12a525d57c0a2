"""Decoding untrusted image bytes: JPEG and PNG only, with byte and pixel caps checked first.

The dimensions are read from the file header before any pixel is decoded, so a decompression bomb (a
small file that declares a huge image) is refused without allocating it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from biometrics.errors import SampleTooLarge, UnsupportedImage

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 24_000_000
MIN_IMAGE_SIDE = 32

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless...), not DHT/JPG/DAC.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageLimits:
    """Caps on what an image may cost to decode."""

    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS


DEFAULT_LIMITS = ImageLimits()


def sniff_format(data: bytes) -> str:
    """``"png"`` or ``"jpeg"`` from the magic bytes; anything else is refused."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    raise UnsupportedImage("The image is not a JPEG or PNG file. Please send a JPEG or PNG photograph.")


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise UnsupportedImage("The PNG image is truncated or damaged (no header).")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise UnsupportedImage("The JPEG image is damaged (bad marker).")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise UnsupportedImage("The JPEG image is damaged (bad segment length).")
        if marker in _SOF_MARKERS:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            break
        i += 2 + length
    raise UnsupportedImage("The JPEG image is truncated or damaged (no frame header).")


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) declared by a JPEG or PNG header, without decoding pixels."""
    return _png_size(data) if sniff_format(data) == "png" else _jpeg_size(data)


def check_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """Refuse oversized or malformed images before decoding; returns the declared (width, height)."""
    if not data:
        raise UnsupportedImage("The image is empty.")
    if len(data) > limits.max_bytes:
        raise SampleTooLarge(
            f"The image is {len(data) / 1e6:.1f} MB; the limit is {limits.max_bytes / 1e6:.1f} MB."
        )
    width, height = image_size(data)
    if width < MIN_IMAGE_SIDE or height < MIN_IMAGE_SIDE:
        raise UnsupportedImage(f"The image is {width}x{height} pixels: too small to use.")
    if width * height > limits.max_pixels:
        raise SampleTooLarge(
            f"The image is {width}x{height} pixels; the limit is {limits.max_pixels / 1e6:.0f} megapixels."
        )
    return width, height


def _decode(data: bytes, flags: int, limits: ImageLimits) -> np.ndarray:
    width, height = check_image(data, limits)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise UnsupportedImage("The image could not be decoded: the file is damaged or truncated.")
    # EXIF orientation may have rotated the pixels by a quarter turn.
    if sorted(image.shape[:2]) != sorted((height, width)):
        raise UnsupportedImage("The image header does not match its content.")
    return image


def decode_rgb(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode JPEG/PNG bytes to an RGB uint8 array (H, W, 3)."""
    bgr = _decode(data, cv2.IMREAD_COLOR, limits)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_grey(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode JPEG/PNG bytes to a greyscale uint8 array (H, W)."""
    return _decode(data, cv2.IMREAD_GRAYSCALE, limits)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB (H, W, 3) or greyscale (H, W) uint8 array."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
