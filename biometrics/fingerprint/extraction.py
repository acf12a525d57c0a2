"""From a greyscale image to a ``FingerprintTemplate``, refusing what cannot give one."""

from __future__ import annotations

import numpy as np

from biometrics.errors import PoorQuality
from biometrics.fingerprint.capture import check_ridge_pattern
from biometrics.fingerprint.cylinders import build_cylinders
from biometrics.fingerprint.image import WORKING_DPI, as_working_image
from biometrics.fingerprint.pipeline import Analysis, analyse
from biometrics.fingerprint.quality import quality_factors, quality_score
from biometrics.fingerprint.template import FingerprintTemplate, quantise_minutiae

MIN_QUALITY = 10.0  # below this a capture is refused outright (blank, noise, a smudge)
MIN_MINUTIAE = 8
MIN_CYLINDERS = 4


def image_quality(analysis: Analysis) -> float:
    """Quality 0..100 of an analysed image."""
    return quality_score(quality_factors(analysis.norm, analysis.mask, analysis.theta, analysis.coherence))


def template_from_analysis(analysis: Analysis, quality: float) -> FingerprintTemplate:
    """Build the template (quantised minutiae and their cylinders) of an analysed image."""
    minutiae = quantise_minutiae(analysis.minutiae)
    keep, bits, valid = build_cylinders(minutiae["x"], minutiae["y"], minutiae["angle"], analysis.mask)
    h, w = analysis.mask.shape
    return FingerprintTemplate(minutiae, keep.astype(np.int64), bits, valid, float(quality), w, h)


def extract(grey: np.ndarray, dpi: int = WORKING_DPI, min_quality: float = MIN_QUALITY, *,
            check_ridges: bool = False) -> FingerprintTemplate:
    """Template of a greyscale capture; ``PoorQuality`` when the capture cannot give a usable one; with
    ``check_ridges`` (enrolment), ``NotAFingerprint`` when it shows no ridge pattern (``capture.py``: a
    photograph sent as a finger)."""
    return template_or_refusal(analyse(as_working_image(grey, dpi)), min_quality, check_ridges=check_ridges)


def template_or_refusal(analysis: Analysis, min_quality: float = MIN_QUALITY, *,
                        check_ridges: bool = False) -> FingerprintTemplate:
    """Template of an analysed capture; ``PoorQuality`` when its quality or its features fall short; with
    ``check_ridges``, ``NotAFingerprint`` when the image the extractor traces shows no ridge pattern over its
    foreground (checked after the quality, so a blank or noisy capture is still told to retake as poor
    quality). Enrolment checks it, where a wrong file would become a useless reference; a probe does not, where
    it would also refuse real partial or degraded prints (measured: 3 of DB3_B's 320 off-centre ZFM windows, one
    dry DB1_B and one textured DB3_B copy) and a photograph simply does not match. The checks only refuse: the
    template is that of the analysis either way."""
    quality = image_quality(analysis)
    if quality < min_quality:
        raise PoorQuality(
            f"The fingerprint image is of too poor quality ({quality:.0f}/100); "
            "clean the sensor and place the finger flat, then try again.")
    if check_ridges:
        check_ridge_pattern(analysis.norm, analysis.mask)
    template = template_from_analysis(analysis, quality)
    if template.minutiae_count < MIN_MINUTIAE or template.cylinder_count < MIN_CYLINDERS:
        raise PoorQuality(
            f"Too few fingerprint features were found ({template.minutiae_count} minutiae); "
            "press the finger flat over the whole sensor window and try again.")
    return template
