"""The extraction pipeline from a working-resolution image to minutiae, keeping every stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biometrics.fingerprint import enhancement
from biometrics.fingerprint.enhancement import enhance
from biometrics.fingerprint.frequency import period_field, ridge_period
from biometrics.fingerprint.image import normalise
from biometrics.fingerprint.minutiae import extract_minutiae
from biometrics.fingerprint.orientation import orientation_field
from biometrics.fingerprint.segmentation import foreground_mask
from biometrics.fingerprint.skeleton import binarise, thin


@dataclass(frozen=True)
class Analysis:
    """Every stage of one extraction (all arrays have the working image's shape)."""

    norm: np.ndarray
    mask: np.ndarray
    theta: np.ndarray
    coherence: np.ndarray
    period: float
    enhanced: np.ndarray
    ridges: np.ndarray
    skeleton: np.ndarray
    minutiae: np.ndarray


def analyse(image: np.ndarray) -> Analysis:
    """Run segmentation, orientation, frequency, enhancement, thinning and minutiae detection."""
    norm = normalise(image)
    mask = foreground_mask(norm)
    theta, coherence = orientation_field(norm)
    period = ridge_period(norm, theta, mask)
    local = period_field(norm, theta, mask, period) if len(enhancement.PERIOD_BINS) > 1 else None
    enhanced = enhance(norm, theta, period, local)
    ridges = binarise(enhanced, mask, period)
    skeleton = thin(ridges)
    minutiae = extract_minutiae(skeleton, mask, theta, coherence, period)
    return Analysis(norm, mask, theta, coherence, period, enhanced, ridges, skeleton, minutiae)
