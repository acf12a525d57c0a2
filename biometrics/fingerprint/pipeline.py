"""The extraction pipeline from a working-resolution image to minutiae, keeping every stage."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Fields:
    """What the extractor measures of a capture before it traces ridges: the image and its fields."""

    local: np.ndarray  # the locally normalised image (deblurred first when blurred)
    mask: np.ndarray
    theta: np.ndarray
    coherence: np.ndarray
    period: float
    periods: np.ndarray | None  # per-pixel ridge period, or None with a one-period Gabor bank
    flow: np.ndarray  # the ridge flow measured on the first enhancement, which steers the final one
    responses: dict = field(default_factory=dict, repr=False)  # Gabor responses of ``local``, reused


def measure_fields(image: np.ndarray) -> Fields:
    """Normalise a working-resolution image and measure its fields.

    The image is normalised globally (for the segmentation's contrast test) and locally (everything else);
    the ridge orientation is measured on the locally normalised image, then once more on the enhanced image
    (whose ridges are continuous where the capture's were broken or merged): that flow steers the final
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
    flow, responses = theta, {}
    if REFINE_ORIENTATION:
        flow, _ = orientation_field(enhance(local, theta, period, periods, responses))
    return Fields(local, mask, theta, coherence, period, periods, flow, responses)


def trace_ridges(local: np.ndarray, fields: Fields) -> Analysis:
    """Enhance ``local`` along ``fields``, binarise, thin and detect minutiae.

    ``local`` is normally ``fields.local``; the fields of another capture of the same finger, pixel for
    pixel (a clean copy of a degraded image), give what the ridge stage alone can do
    (``checkpoint-bench fingerprint-ceiling``).
    """
    f = fields
    enhanced = enhance(local, f.flow, f.period, f.periods, f.responses if local is f.local else None)
    ridges = binarise(enhanced, f.mask, f.period)
    skeleton = thin(ridges)
    minutiae = extract_minutiae(skeleton, f.mask, f.theta, f.coherence, f.period)
    return Analysis(local, f.mask, f.theta, f.coherence, f.period, enhanced, ridges, skeleton, minutiae)


def analyse(image: np.ndarray) -> Analysis:
    """Run normalisation, orientation, segmentation, frequency, enhancement, thinning and minutiae detection
    (``measure_fields``, then ``trace_ridges``)."""
    fields = measure_fields(image)
    return trace_ridges(fields.local, fields)
