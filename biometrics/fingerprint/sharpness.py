"""Blur detection and compensation, measured against the image's own ridge period.

A sharp capture's ridges are not sinusoids: their edges and uneven widths put energy at twice the ridge
frequency and above. A blurred capture (out of focus, a moving finger) loses that energy far more than its
ridge band. ``harmonic_ratio`` is the power in the second harmonic's band (radial frequencies
``HARMONIC_BAND`` times the ridge frequency) over the power in the ridge band (``RIDGE_BAND``), on the
foreground, in units of the image's own ridge frequency, so a sensor with wide ridges is not mistaken for
a blurred one. The ridge frequency here is that of the finer ridges (the ``FINE_QUANTILE`` percentile of
the block periods, not the median): blur shifts the spectrum's peak towards low frequencies, and on a
dotted, dry print it moved the median period from 7.5 to 11 px, which put the true ridges in the
"harmonic" band.

Only an image whose ratio is under ``BLUR_RATIO`` is restored (on FVC2002 DB1_B, the tuning set, the
clean images' log10 ratios span -1.53 to -0.39, the sigma 2 px blurred copies' -3.05 to -1.95: the
threshold -1.75 lies between, and no clean image, ZFM cut or other degradation of DB1_B falls under it).
Its blur is estimated as the Gaussian that takes a typical sharp capture's ratio (``SHARP_RATIO``, DB1_B's
median) down to the measured one, and inverted in the frequency domain, the gain held at its value at
``GAIN_LIMIT_FREQUENCY`` times the ridge frequency beyond it (noise beyond the ridges' harmonics is not
raised further) and at most ``MAX_GAIN``.
"""

from __future__ import annotations

import cv2
import numpy as np

from biometrics.fingerprint.frequency import block_periods

RIDGE_BAND = (0.7, 1.4)  # radial frequency band of the ridges, in multiples of the ridge frequency
HARMONIC_BAND = (1.6, 2.6)  # band of the second harmonic, same units
BLUR_RATIO = 10 ** -1.75  # harmonic ratio under which an image is treated as blurred (chosen on DB1_B)
SHARP_RATIO = 10 ** -1.0  # the harmonic ratio of a typical sharp capture (DB1_B's median)
FINE_QUANTILE = 25  # percentile of the block periods taken as the image's ridge period here
GAIN_LIMIT_FREQUENCY = 2.0  # the restoring gain stops growing at this multiple of the ridge frequency
MAX_GAIN = 20.0
RESTORE = True  # off: no image is restored (the extractor before this module)


def _spectrum(image: np.ndarray, mask: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    """(power spectrum of the foreground with its slow shading removed, radial frequency in ridge units)."""
    image = image.astype(np.float32)
    detail = image - cv2.GaussianBlur(image, (0, 0), period)
    window = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), period / 2.0)
    power = np.abs(np.fft.rfft2(detail * window)) ** 2
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.rfftfreq(image.shape[1])[None, :]
    return power, np.hypot(fx, fy) * period


def harmonic_ratio(image: np.ndarray, mask: np.ndarray, period: float) -> float:
    """Power of the second-harmonic band over that of the ridge band, on the foreground (see the module)."""
    power, radial = _spectrum(image, mask, period)
    ridge = float(power[(radial > RIDGE_BAND[0]) & (radial < RIDGE_BAND[1])].sum())
    harmonic = float(power[(radial > HARMONIC_BAND[0]) & (radial < HARMONIC_BAND[1])].sum())
    return harmonic / ridge if ridge > 0 else 1.0


def _band_centre_sq(band: tuple[float, float]) -> float:
    """Mean squared radial frequency over an annulus (ridge units)."""
    lo, hi = band
    return (hi**4 - lo**4) / (2.0 * (hi**2 - lo**2))


def blur_sigma(ratio: float, period: float) -> float:
    """The Gaussian blur (px) that takes a harmonic ratio of ``SHARP_RATIO`` down to ``ratio``; 0 when
    ``ratio`` is at least ``BLUR_RATIO`` (a sharp image).

    A Gaussian of sigma s scales the power at frequency f by exp(-4 pi^2 s^2 f^2), so the ratio of two bands
    by exp(-4 pi^2 s^2 (f_h^2 - f_r^2)).
    """
    if ratio >= BLUR_RATIO or ratio <= 0:
        return 0.0
    spread = (_band_centre_sq(HARMONIC_BAND) - _band_centre_sq(RIDGE_BAND)) / period**2
    return float(np.sqrt(np.log(SHARP_RATIO / ratio) / (4.0 * np.pi**2 * spread)))


def deblur(image: np.ndarray, sigma: float, period: float) -> np.ndarray:
    """Invert a Gaussian blur of ``sigma`` px, the gain capped (see the module docstring)."""
    if sigma <= 0:
        return image
    h, w = image.shape
    pad = int(np.ceil(2 * period))
    padded = cv2.copyMakeBorder(image.astype(np.float32), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    fy = np.fft.fftfreq(padded.shape[0])[:, None]
    fx = np.fft.rfftfreq(padded.shape[1])[None, :]
    f = np.minimum(np.hypot(fx, fy), GAIN_LIMIT_FREQUENCY / period)
    gain = np.minimum(np.exp(2.0 * np.pi**2 * sigma**2 * f * f), MAX_GAIN)
    restored = np.fft.irfft2(np.fft.rfft2(padded) * gain, s=padded.shape)
    return restored[pad:pad + h, pad:pad + w].astype(np.float32)


def fine_period(image: np.ndarray, theta: np.ndarray, mask: np.ndarray) -> float | None:
    """The ``FINE_QUANTILE`` percentile of the foreground's block periods (None if fewer than 3 measured)."""
    _, periods = block_periods(image, theta, mask)
    valid = periods[np.isfinite(periods)]
    return float(np.percentile(valid, FINE_QUANTILE)) if valid.size >= 3 else None


def estimate_blur(image: np.ndarray, theta: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(sigma px of the blur to invert, 0 for a sharp image; the ridge period it was measured against)."""
    period = fine_period(image, theta, mask)
    if period is None:
        return 0.0, 0.0
    return blur_sigma(harmonic_ratio(image, mask, period), period), period
