"""Fingerprint modality: minutiae extraction and Minutia Cylinder-Code (MCC) comparison.

Pipeline (one module per step): ``image`` (checks, resampling to 500 dpi, global and local contrast
normalisation) -> ``orientation`` -> ``segmentation`` (contrast and orientation coherence) -> ``frequency``
-> ``enhancement`` (oriented Gabor, steered a second time by the enhanced image's ridge flow) -> ``skeleton``
(binarisation, thinning) -> ``minutiae`` (crossing number, false-minutiae removal) -> ``cylinders`` (bit MCC) ->
``template`` (versioned bytes); ``capture`` refuses what is no fingerprint capture (a colour picture, an image
with no ridge pattern: a face photograph). Comparison: ``similarity`` (numpy reference) and ``kernels`` (numba),
local cylinder similarities from popcounts consolidated by LSS-R; ``matching`` for 1:1 and 1:N.

Raw scores are similarities in [0, 1]; the service states them as false-match scores with
``biometrics.scores.ScoreCalibration`` loaded from ``biometrics/calibration/fingerprint.json``.
A finger enrolled from several impressions is a list of templates; its score is the best of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biometrics.fingerprint.extraction import MIN_QUALITY, extract
from biometrics.fingerprint.image import as_working_image
from biometrics.fingerprint.matching import PackedGallery, Reference, compare, compare_gallery
from biometrics.fingerprint.positions import FingerPosition
from biometrics.fingerprint.template import FingerprintTemplate, TemplateFormatError

ENROL_MIN_QUALITY = 40.0  # quality an enrolment capture needs (verification probes need MIN_QUALITY)

__all__ = [
    "ENROL_MIN_QUALITY",
    "MIN_QUALITY",
    "FingerPosition",
    "FingerprintTemplate",
    "PackedGallery",
    "TemplateFormatError",
    "compare_fingerprint_gallery",
    "compare_fingerprints",
    "extract_fingerprint",
    "fingerprint_quality",
]


def extract_fingerprint(grey: np.ndarray, *, dpi: int = 500, min_quality: float = MIN_QUALITY,
                        check_ridges: bool = False) -> FingerprintTemplate:
    """Template of a greyscale fingerprint image at ``dpi`` (resampled to 500 dpi).

    Raises ``InvalidSample`` for input that is not a greyscale image (``NotAFingerprint`` for a colour
    picture), ``PoorQuality`` (a subclass) when the capture's quality is below ``min_quality`` or too few
    minutiae are found, and with ``check_ridges`` ``NotAFingerprint`` when no ridge pattern is found. Enrolment
    passes ``min_quality=ENROL_MIN_QUALITY, check_ridges=True``.
    """
    return extract(grey, dpi=dpi, min_quality=min_quality, check_ridges=check_ridges)


def fingerprint_quality(grey: np.ndarray, *, dpi: int = 500) -> float:
    """Image quality 0..100 (area x clarity x regularity of the ridges; see ``quality.py``); 0 for an image with
    no ridge pattern (``capture.py``: a photograph, whose edges the three factors alone rated up to 96)."""
    from biometrics.fingerprint.capture import has_ridge_pattern
    from biometrics.fingerprint.extraction import image_quality
    from biometrics.fingerprint.pipeline import analyse

    analysis = analyse(as_working_image(grey, dpi))
    return image_quality(analysis) if has_ridge_pattern(analysis.norm, analysis.mask) else 0.0


def compare_fingerprints(probe: FingerprintTemplate, reference: Reference) -> float:
    """Raw similarity in [0, 1], higher = more alike; a reference may be a list of impressions (best)."""
    return compare(probe, reference)


def compare_fingerprint_gallery(probe: FingerprintTemplate,
                                references: Sequence[Reference] | PackedGallery) -> np.ndarray:
    """Raw similarities of a probe against each reference, one numba pass over packed arrays."""
    return compare_gallery(probe, references)
