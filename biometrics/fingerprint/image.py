"""Input checks and resampling of a greyscale fingerprint image to the working resolution (500 dpi).

Every check on the image's size is made on its shape, before a pixel is copied or converted: a
fingerprint is held as float32 (four bytes a pixel) and several working images of its size, so an
oversized array (a decoded bomb, a device's frame) is refused before it costs anything.
"""

from __future__ import annotations

import cv2
import numpy as np

from biometrics.errors import InvalidSample
from biometrics.fingerprint.capture import check_single_channel
from biometrics.imaging import MAX_FINGERPRINT_PIXELS, check_pixels

WORKING_DPI = 500
MIN_SIDE = 96  # pixels at 500 dpi (about 5 mm): smaller is not a fingerprint capture
MAX_SIDE = 2048


def working_size(width: int, height: int, dpi: int = WORKING_DPI) -> tuple[int, int]:
    """(width, height) of a ``width`` x ``height`` image at ``dpi`` once resampled to ``WORKING_DPI``."""
    if int(dpi) == WORKING_DPI:
        return width, height
    scale = WORKING_DPI / float(dpi)
    return max(1, round(width * scale)), max(1, round(height * scale))


def as_working_image(grey: np.ndarray, dpi: int = WORKING_DPI, max_pixels: int = MAX_FINGERPRINT_PIXELS
                     ) -> np.ndarray:
    """Check a greyscale image and return it as float32 at ``WORKING_DPI``.

    Raises ``SampleTooLarge`` for an image of more than ``max_pixels`` (checked on its shape, before any
    conversion) and ``InvalidSample`` for anything that is not a plausible 2-D grey image (``NotAFingerprint``
    for a colour picture: channels that differ, ``capture.check_single_channel``).
    """
    if not isinstance(grey, np.ndarray):
        raise InvalidSample("The fingerprint sample is not an image.")
    if grey.ndim < 2:
        raise InvalidSample("The fingerprint sample must be a greyscale image.")
    height, width = int(grey.shape[0]), int(grey.shape[1])
    check_pixels(width, height, max_pixels, "fingerprint image")
    if (grey.ndim == 3 and grey.shape[2] not in (1, 3, 4)) or grey.ndim > 3:
        raise InvalidSample("The fingerprint sample must be a greyscale image.")
    if not (np.issubdtype(grey.dtype, np.integer) or np.issubdtype(grey.dtype, np.floating)):
        raise InvalidSample("The fingerprint image has an unsupported pixel type.")
    if not 100 <= int(dpi) <= 2000:
        raise InvalidSample(f"Unsupported fingerprint resolution: {dpi} dpi.")
    w, h = working_size(width, height, dpi)
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise InvalidSample(
            f"The fingerprint image is {w}x{h} pixels at {WORKING_DPI} dpi; "
            f"expected sides between {MIN_SIDE} and {MAX_SIDE}.")
    if grey.ndim == 3:
        check_single_channel(grey)
        grey = grey[..., 0] if grey.shape[2] == 1 else cv2.cvtColor(
            grey.astype(np.uint8), cv2.COLOR_RGB2GRAY if grey.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    image = grey.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise InvalidSample("The fingerprint image contains invalid pixel values.")
    if (w, h) != (width, height):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if w < width else cv2.INTER_LINEAR)
    return image


def normalise(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (a flat image stays zero)."""
    std = float(image.std())
    centred = image - float(image.mean())
    return centred / std if std > 1e-6 else centred


LOCAL_SIGMA = 8.0  # px at 500 dpi: about one ridge period
LOCAL_FLOOR = 0.2  # local spreads below this fraction of the global one are not amplified further


def local_normalise(norm: np.ndarray, sigma: float = LOCAL_SIGMA, floor: float = LOCAL_FLOOR) -> np.ndarray:
    """Contrast normalisation that adapts to the image: each pixel minus its local mean (Gaussian
    ``sigma``), over its local standard deviation, so faint and strong parts of a print (a dry edge, a
    pressed centre, uneven illumination) reach the same range. Spreads under ``floor`` times the global
    one (flat background) are divided by that floor instead, so noise is not raised to ridge contrast."""
    image = norm.astype(np.float32)
    mean = cv2.GaussianBlur(image, (0, 0), sigma)
    centred = image - mean
    var = cv2.GaussianBlur(centred * centred, (0, 0), sigma)
    low = (floor * max(float(image.std()), 1e-6)) ** 2
    return centred / np.sqrt(np.maximum(var, low))
