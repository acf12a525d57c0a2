"""The extraction pipeline from a working-resolution image to minutiae, keeping every stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biometrics.fingerprint import enhancement, sharpness
from biometrics.fingerprint.enhancement import enhance
from biometrics.fingerprint.frequency import period_field, ridge_period
from biometrics.fingerprint.image import local_normalise, normalise
from biometrics.fingerprint.minutiae import extract_minutiae
from biometrics.fingerprint.orientation import orientation_field
from biometrics.fingerprint.segmentation import foreground_mask
from biometrics.fingerprint.skeleton import binarise, thin

REFINE_ORIENTATION = True  # enhance a second time along the enhanced image's ridge flow (chosen on DB1_B)


@dataclass(frozen=True)
class Analysis:
    """Every stage of one extraction (all arrays have the working image's shape)."""

    norm: np.ndarray  # the locally normalised image
    mask: np.ndarray
    theta: np.ndarray
    coherence: np.ndarray
    period: float
    enhanced: np.ndarray
    ridges: np.ndarray
    skeleton: np.ndarray
    minutiae: np.ndarray


def _fields(norm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """(locally normalised image, orientation, coherence, foreground mask, median ridge period)."""
    local = local_normalise(norm)
    theta, coherence = orientation_field(local)
    mask = foreground_mask(norm, coherence)
    return local, theta, coherence, mask, ridge_period(local, theta, mask)


def analyse(image: np.ndarray) -> Analysis:
    """Run normalisation, orientation, segmentation, frequency, enhancement, thinning and minutiae detection.

    The image is normalised globally (for the segmentation's contrast test) and locally (everything else);
    the ridge orientation is measured on the locally normalised image, then once more on the enhanced image
    (whose ridges are continuous where the capture's were broken or merged), which steers the final
    enhancement. A blurred image (``sharpness``: its ridges lack their harmonics) is deblurred first and
    measured again; a sharp one is left as it is.
    """
    norm = normalise(image)
    local, theta, coherence, mask, period = _fields(norm)
    if sharpness.RESTORE:
        sigma, fine = sharpness.estimate_blur(local, theta, mask)
        if sigma > 0:
            norm = normalise(sharpness.deblur(norm, sigma, fine))
            local, theta, coherence, mask, period = _fields(norm)
    periods = period_field(local, theta, mask, period) if len(enhancement.PERIOD_BINS) > 1 else None
    responses: dict = {}
    enhanced = enhance(local, theta, period, periods, responses)
    if REFINE_ORIENTATION:
        flow, _ = orientation_field(enhanced)
        enhanced = enhance(local, flow, period, periods, responses)
    ridges = binarise(enhanced, mask, period)
    skeleton = thin(ridges)
    minutiae = extract_minutiae(skeleton, mask, theta, coherence, period)
    return Analysis(local, mask, theta, coherence, period, enhanced, ridges, skeleton, minutiae)
