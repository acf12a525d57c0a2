"""Decoding untrusted image bytes: JPEG and PNG only, with byte and pixel caps checked first.

The dimensions are read from the file header before any pixel is decoded, so a decompression bomb (a
small file that declares a huge image) is refused without allocating it. A greyscale image is a fingerprint
capture, and a fingerprint is small: :func:`decode_grey` holds it to :data:`MAX_FINGERPRINT_PIXELS` as well.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

from biometrics.errors import FingerprintTooLarge, SampleTooLarge, UnsupportedImage

MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 24_000_000
# A fingerprint at 500 dpi is well under 1 MP (a ZFM sensor 256x288, FVC2002 DB1 388x374, a whole flat
# finger about 400x500); 2048 x 2048 (4.2 MP) is the largest image the fingerprint pipeline works on
# (biometrics.fingerprint.image.MAX_SIDE at 500 dpi), and also holds a four-finger slap at 500 dpi.
MAX_FINGERPRINT_PIXELS = 2048 * 2048
# The largest fingerprint sample the service extracts: 800 x 800 pixels (0.64 MP). A whole finger at 500 dpi
# (about 40 x 40 mm rolled, less flat) fits in it with room to spare, and every scanner this project reads
# gives far less (the ZFM window 256 x 288, FVC2002's sensors at most 296 x 560 and 388 x 374). Extraction
# runs on the caller's gRPC thread and its time grows with the pixels: about 0.4 s at 388 x 388, 1.5 s at
# 800 x 800, 9.5 s at 2048 x 2048 on the 2-core VM, so a larger image is refused before any extraction.
MAX_FINGERPRINT_SAMPLE = 800 * 800
MIN_IMAGE_SIDE = 32

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless...), not DHT/JPG/DAC.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageLimits:
    """Caps on what an image may cost to decode (a fingerprint is held to both pixel caps), and on the size of a
    fingerprint the service extracts (``max_fingerprint_sample``, pixels: :func:`check_fingerprint_size`)."""

    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = MAX_IMAGE_PIXELS
    max_fingerprint_pixels: int = MAX_FINGERPRINT_PIXELS
    max_fingerprint_sample: int = MAX_FINGERPRINT_SAMPLE


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


def check_pixels(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """Refuse a ``width`` x ``height`` image over ``max_pixels`` with :class:`SampleTooLarge` (``what`` names it)."""
    if width * height > max_pixels:
        raise SampleTooLarge(
            f"The {what} is {width}x{height} pixels; the limit is {max_pixels / 1e6:.1f} megapixels."
        )


def check_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS, max_pixels: int | None = None) -> tuple[int, int]:
    """Refuse oversized or malformed images before decoding; returns the declared (width, height).

    ``max_pixels``: a tighter pixel cap than ``limits.max_pixels`` for this kind of image (a fingerprint).
    """
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
    if max_pixels is not None:
        check_pixels(width, height, max_pixels, "fingerprint image")
    return width, height


def check_fingerprint_size(image: bytes | np.ndarray, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """Refuse a fingerprint sample larger than a scanner gives, from its header (encoded bytes, checked against
    the decoding caps first: :class:`SampleTooLarge`) or its shape (a device's pixels), before anything is decoded
    or extracted: :class:`FingerprintTooLarge` over ``limits.max_fingerprint_sample`` pixels."""
    if isinstance(image, bytes):
        width, height = check_image(image, limits, limits.max_fingerprint_pixels)
    elif isinstance(image, np.ndarray) and image.ndim >= 2:
        height, width = int(image.shape[0]), int(image.shape[1])
    else:
        return  # not an image: the extraction refuses it, at no cost
    cap = limits.max_fingerprint_sample
    if width * height > cap:
        side = int(cap ** 0.5)
        raise FingerprintTooLarge(
            f"The fingerprint image is {width}x{height} pixels; a fingerprint scanner at 500 dpi gives at most about "
            f"{side}x{side} ({cap / 1e6:.2f} megapixels, the limit here). Please send the scanner's image as it "
            "was captured, not enlarged, one finger per image.")


def _decode(data: bytes, flags: int, limits: ImageLimits, max_pixels: int | None = None) -> np.ndarray:
    width, height = check_image(data, limits, max_pixels)
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
    """Decode JPEG/PNG bytes of a fingerprint to a greyscale uint8 array (H, W).

    Besides ``limits.max_pixels``, the header must declare at most ``limits.max_fingerprint_pixels``
    (:data:`MAX_FINGERPRINT_PIXELS`): a highly compressible PNG of a few kilobytes may declare millions of
    pixels, which the fingerprint pipeline would hold several times over as float32.
    """
    return _decode(data, cv2.IMREAD_GRAYSCALE, limits, limits.max_fingerprint_pixels)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB (H, W, 3) or greyscale (H, W) uint8 array."""
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
