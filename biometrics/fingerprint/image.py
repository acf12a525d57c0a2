"""Input checks and resampling of a greyscale fingerprint image to the working resolution (500 dpi)."""

from __future__ import annotations

import cv2
import numpy as np

from biometrics.errors import InvalidSample

WORKING_DPI = 500
MIN_SIDE = 96  # pixels at 500 dpi (about 5 mm): smaller is not a fingerprint capture
MAX_SIDE = 2048


def as_working_image(grey: np.ndarray, dpi: int = WORKING_DPI) -> np.ndarray:
    """Check a greyscale image and return it as float32 at ``WORKING_DPI``.

    Raises ``InvalidSample`` for anything that is not a plausible 2-D grey image.
    """
    if not isinstance(grey, np.ndarray):
        raise InvalidSample("The fingerprint sample is not an image.")
    if grey.ndim == 3 and grey.shape[2] in (1, 3, 4):
        grey = grey[..., 0] if grey.shape[2] == 1 else cv2.cvtColor(
            grey.astype(np.uint8), cv2.COLOR_RGB2GRAY if grey.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    if grey.ndim != 2:
        raise InvalidSample("The fingerprint sample must be a greyscale image.")
    if not (np.issubdtype(grey.dtype, np.integer) or np.issubdtype(grey.dtype, np.floating)):
        raise InvalidSample("The fingerprint image has an unsupported pixel type.")
    if not 100 <= int(dpi) <= 2000:
        raise InvalidSample(f"Unsupported fingerprint resolution: {dpi} dpi.")
    image = grey.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise InvalidSample("The fingerprint image contains invalid pixel values.")
    if int(dpi) != WORKING_DPI:
        scale = WORKING_DPI / float(dpi)
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    h, w = image.shape
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise InvalidSample(
            f"The fingerprint image is {w}x{h} pixels at {WORKING_DPI} dpi; "
            f"expected sides between {MIN_SIDE} and {MAX_SIDE}.")
    return image


def normalise(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (a flat image stays zero)."""
    std = float(image.std())
    centred = image - float(image.mean())
    return centred / std if std > 1e-6 else centred
