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

An image whose ratio is under ``BLUR_RATIO`` is restored, and one that the second look (below) finds
blurred (on FVC2002 DB1_B, the tuning set, the clean images' log10 ratios span -1.53 to -0.39, the sigma 2 px
blurred copies' -3.05 to -1.95: the threshold -1.75 lies between, and no clean image, ZFM cut or other
degradation of DB1_B falls under it).

Its blur is then estimated from a band where the blurred pattern still stands above the floor
(``shoulder_ratio``): the power just below the harmonic (``SHOULDER_BAND`` times the ridge frequency) over
the ridge band's, compared with a typical sharp capture's (``SHARP_SHOULDER``, DB1_B's clean median), by
the Gaussian attenuation of the two bands. The harmonic band itself cannot measure the blur it detects: a
Gaussian of sigma 2 px should take a 500 dpi print's harmonic ratio from about 10^-1.0 to 10^-4.3, but on
DB1_B's blurred copies it stops near 10^-2.6 (median), on a floor of spectral leakage (the windowed
foreground, the image's borders) and rounding to grey levels that is about 40 times what is left of the
harmonic; the estimate it gave read 1.0-1.6 px (median 1.4) for the true 2. The shoulder band is attenuated
about half as much (in log power), its signal stays above that floor (expected median 10^-2.95, measured
10^-2.92), and it reads 1.55-2.21 px (median 1.98). The harmonic estimate, which the floor can only lower,
is kept as a lower bound. The shoulder's sharp level is that of prints, whose ridge frequencies spread: on
a hand-made pattern of one ridge period it is lower, and the blur is over-estimated by up to a third at
sigma 1.5-2 px (the tests). Beyond about 3 px at 500 dpi the shoulder reaches the floor too and the estimate
saturates again, near 2.7 px.

A second look, when the harmonic gate does not fire: blur also moves the block periods, and where it merges
dotted or very fine ridges into blobs most blocks read a wider period than the ridges have, so the 25th
percentile lands between the ridges and their harmonic and the gate reads a sharp image (DB1_B 107_8, scaled
by 0.83 and blurred by 2 px: 25th percentile 10.3 px for ridges of about 7, log10 ratio -1.05). So the
shoulder ratio is measured again at the finest ridges' period (the ``FINEST_QUANTILE`` percentile) and the
image is blurred if it is under ``SHOULDER_BLUR_RATIO``: on DB1_B the sharp images (clean, the ZFM cuts
``fingerprint-eval`` and the calibration use, every other degradation) read -2.10 to -0.6 in log10, the
blurred copies -3.58 to -2.45, and the threshold, -2.27, is the middle of that gap (0.17 from the nearest
sharp image, more than the harmonic gate's 0.13, in a measure attenuated half as fast). Every image the
harmonic gate fires on is estimated as above; one that only the second look fires on is estimated at the
finest period, from the shoulder and harmonic ratios there against DB1_B's clean medians at that period
(``SHARP_SHOULDER_FINEST``, ``SHARP_RATIO_FINEST``), and restored with that period.

A third look, when neither gate fires: where blur has all but erased fine ridges, even the finest block
periods read the blobs left (9-11 px for ridges of about 6-7), and the shoulder band at that period holds
what is left of the ridges. Blur's Gaussian falloff moves the plain spectral peak the same way; weighted by
the frequency to the ``WHITENING_POWER`` (the radial power profile of the image's Laplacian: a whitened
spectrum), the peak moves far less (DB1_B scaled by 0.83 and blurred by 2.5 px: 6.96-9.88 px, median 7.92,
where p10 reads up to 12.8), and on a sharp image it moves, if anything, to shorter periods (noise and the
harmonics), where the shoulder ratio is high. The shoulder ratio at that whitened period (from the spectrum
taken at the finest period) under ``SHOULDER_BLUR_RATIO_WHITENED`` marks the image blurred: on DB1_B the
sharp images above, and sharp copies scaled by 0.83 and 0.75, read -2.27 to -0.8 in log10 and the threshold,
-2.45, is 0.18 under the nearest; of the DB1_B-derived copies (scaled and/or blurred by 2-3 px) that the two
gates miss it catches 24 of 46. Such an image's blur is estimated at the whitened period against DB1_B's
clean medians there (``SHARP_SHOULDER_WHITENED``, ``SHARP_RATIO_WHITENED``) and restored with that period.
Images the gates fire on, and sharp ones, are untouched by it.

The blur is inverted in the frequency domain, the gain held at its value at ``GAIN_LIMIT_FREQUENCY`` times
the ridge frequency beyond it (noise beyond the ridges' harmonics is not raised further) and at most
``MAX_GAIN``.
"""

from __future__ import annotations

import cv2
import numpy as np

from biometrics.fingerprint.frequency import MAX_PERIOD, MIN_PERIOD, block_periods

RIDGE_BAND = (0.7, 1.4)  # radial frequency band of the ridges, in multiples of the ridge frequency
HARMONIC_BAND = (1.6, 2.6)  # band of the second harmonic, same units
BLUR_RATIO = 10 ** -1.75  # harmonic ratio under which an image is treated as blurred (chosen on DB1_B)
SHARP_RATIO = 10 ** -1.0  # the harmonic ratio of a typical sharp capture (DB1_B's median)
SHOULDER_BAND = (1.6, 1.8)  # band between the ridges and their harmonic, where the blur is measured
SHARP_SHOULDER = 10 ** -1.37  # its power over the ridge band's on a typical sharp capture (DB1_B's median)
FINE_QUANTILE = 25  # percentile of the block periods taken as the image's ridge period here
FINEST_QUANTILE = 10  # the second look's period: the finest ridges, nearer the truth where blur moved p25
SHOULDER_BLUR_RATIO = 10 ** -2.27  # shoulder ratio at the finest period under which an image is blurred
SHARP_SHOULDER_FINEST = 10 ** -1.41  # the shoulder ratio at the finest period on DB1_B's clean images (median)
SHARP_RATIO_FINEST = 10 ** -1.08  # the harmonic ratio at the finest period on DB1_B's clean images (median)
WHITENING_POWER = 4  # the third look's period: the peak of the radial power profile times f**4 (a Laplacian's)
PROFILE_BIN = 0.0025  # cycles/px, the radial profile's bins
PROFILE_SMOOTHING = 5  # bins averaged before the whitened peak is taken
SHOULDER_BLUR_RATIO_WHITENED = 10 ** -2.45  # shoulder ratio at the whitened period under which an image is blurred
SHARP_SHOULDER_WHITENED = 10 ** -1.66  # the shoulder ratio at the whitened period on DB1_B's clean images (median)
SHARP_RATIO_WHITENED = 10 ** -1.25  # the harmonic ratio at the whitened period on DB1_B's clean images (median)
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


def _band_power(power: np.ndarray, radial: np.ndarray, band: tuple[float, float]) -> float:
    return float(power[(radial > band[0]) & (radial < band[1])].sum())


def harmonic_ratio(image: np.ndarray, mask: np.ndarray, period: float) -> float:
    """Power of the second-harmonic band over that of the ridge band, on the foreground (see the module)."""
    power, radial = _spectrum(image, mask, period)
    ridge = _band_power(power, radial, RIDGE_BAND)
    harmonic = _band_power(power, radial, HARMONIC_BAND)
    return harmonic / ridge if ridge > 0 else 1.0


def shoulder_ratio(image: np.ndarray, mask: np.ndarray, period: float) -> float:
    """Power of ``SHOULDER_BAND`` over that of the ridge band, on the foreground (see the module)."""
    power, radial = _spectrum(image, mask, period)
    ridge = _band_power(power, radial, RIDGE_BAND)
    return _band_power(power, radial, SHOULDER_BAND) / ridge if ridge > 0 else 1.0


def _band_centre_sq(band: tuple[float, float]) -> float:
    """Mean squared radial frequency over an annulus (ridge units)."""
    lo, hi = band
    return (hi**4 - lo**4) / (2.0 * (hi**2 - lo**2))


def attenuation_sigma(ratio: float, sharp: float, band: tuple[float, float], period: float) -> float:
    """The Gaussian blur (px) that takes the power ratio of ``band`` to the ridge band from ``sharp`` down
    to ``ratio`` (0 if ``ratio`` is not below ``sharp``).

    A Gaussian of sigma s scales the power at frequency f by exp(-4 pi^2 s^2 f^2), so the ratio of two bands
    by exp(-4 pi^2 s^2 (f_b^2 - f_r^2)).
    """
    if ratio <= 0 or ratio >= sharp:
        return 0.0
    spread = (_band_centre_sq(band) - _band_centre_sq(RIDGE_BAND)) / period**2
    return float(np.sqrt(np.log(sharp / ratio) / (4.0 * np.pi**2 * spread)))


def blur_sigma(ratio: float, period: float, shoulder: float | None = None) -> float:
    """The Gaussian blur (px) of an image of harmonic ratio ``ratio`` and shoulder ratio ``shoulder``; 0
    when ``ratio`` is at least ``BLUR_RATIO`` (a sharp image).

    The larger of the blur that takes ``SHARP_SHOULDER`` down to ``shoulder`` and the one that takes
    ``SHARP_RATIO`` down to ``ratio`` (the harmonic one alone without ``shoulder``): the floor under the
    harmonic band only ever lowers the latter.
    """
    if ratio >= BLUR_RATIO or ratio <= 0:
        return 0.0
    sigma = attenuation_sigma(ratio, SHARP_RATIO, HARMONIC_BAND, period)
    if shoulder is not None:
        sigma = max(sigma, attenuation_sigma(shoulder, SHARP_SHOULDER, SHOULDER_BAND, period))
    return sigma


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


def _period_quantiles(image: np.ndarray, theta: np.ndarray, mask: np.ndarray) -> tuple[float, float] | None:
    """(``FINE_QUANTILE``, ``FINEST_QUANTILE``) percentiles of the foreground's block periods (None if fewer
    than 3 measured)."""
    _, periods = block_periods(image, theta, mask)
    valid = periods[np.isfinite(periods)]
    if valid.size < 3:
        return None
    fine, finest = np.percentile(valid, [FINE_QUANTILE, FINEST_QUANTILE])
    return float(fine), float(finest)


def fine_period(image: np.ndarray, theta: np.ndarray, mask: np.ndarray) -> float | None:
    """The ``FINE_QUANTILE`` percentile of the foreground's block periods (None if fewer than 3 measured)."""
    periods = _period_quantiles(image, theta, mask)
    return None if periods is None else periods[0]


def finest_blur_sigma(image: np.ndarray, mask: np.ndarray, finest: float) -> float:
    """The second look (see the module): 0 unless the shoulder ratio at the finest ridges' period is under
    ``SHOULDER_BLUR_RATIO``; then the blur from that ratio and the harmonic one at the same period, each
    against DB1_B's clean median at that period, the larger taken (as in :func:`blur_sigma`)."""
    shoulder = shoulder_ratio(image, mask, finest)
    if shoulder >= SHOULDER_BLUR_RATIO or shoulder <= 0:
        return 0.0
    return max(attenuation_sigma(shoulder, SHARP_SHOULDER_FINEST, SHOULDER_BAND, finest),
               attenuation_sigma(harmonic_ratio(image, mask, finest), SHARP_RATIO_FINEST, HARMONIC_BAND, finest))


def whitened_period(power: np.ndarray, frequency: np.ndarray) -> float:
    """The period (px) at the peak of the foreground's radial power profile weighted by frequency to the
    ``WHITENING_POWER`` (the profile of the image's Laplacian), between ``MAX_PERIOD`` and ``MIN_PERIOD``:
    blur's falloff, which moves the plain peak and the block periods towards long periods, is largely
    undone by the weighting (see the module)."""
    edges = np.arange(0.0, 0.5 + PROFILE_BIN, PROFILE_BIN)
    centres = (edges[:-1] + edges[1:]) / 2.0
    profile = np.histogram(frequency.ravel(), edges, weights=power.ravel())[0]
    band = (centres >= 1.0 / MAX_PERIOD) & (centres <= 1.0 / MIN_PERIOD)
    weighted = np.convolve(profile[band] * centres[band] ** WHITENING_POWER,
                           np.ones(PROFILE_SMOOTHING) / PROFILE_SMOOTHING, mode="same")
    return float(1.0 / centres[band][np.argmax(weighted)])


def whitened_ratios(image: np.ndarray, mask: np.ndarray, finest: float) -> tuple[float, float, float]:
    """(whitened period, shoulder ratio, harmonic ratio at it), from the spectrum taken at ``finest``."""
    power, radial = _spectrum(image, mask, finest)
    period = whitened_period(power, radial / finest)
    radial = radial * (period / finest)
    ridge = _band_power(power, radial, RIDGE_BAND)
    if ridge <= 0:
        return period, 1.0, 1.0
    return (period, _band_power(power, radial, SHOULDER_BAND) / ridge,
            _band_power(power, radial, HARMONIC_BAND) / ridge)


def whitened_blur_sigma(image: np.ndarray, mask: np.ndarray, finest: float) -> tuple[float, float]:
    """The third look (see the module): (0, 0) unless the shoulder ratio at the whitened period is under
    ``SHOULDER_BLUR_RATIO_WHITENED``; then (the blur, from that ratio and the harmonic one against DB1_B's
    clean medians at the whitened period, the larger taken; the whitened period)."""
    period, shoulder, ratio = whitened_ratios(image, mask, finest)
    if shoulder >= SHOULDER_BLUR_RATIO_WHITENED or shoulder <= 0:
        return 0.0, 0.0
    sigma = max(attenuation_sigma(shoulder, SHARP_SHOULDER_WHITENED, SHOULDER_BAND, period),
                attenuation_sigma(ratio, SHARP_RATIO_WHITENED, HARMONIC_BAND, period))
    return sigma, period


def estimate_blur(image: np.ndarray, theta: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(sigma px of the blur to invert, 0 for a sharp image; the ridge period it was measured against).

    First the harmonic gate at the fine period (and the blur estimated there, as before the second look);
    if it does not fire, the shoulder gate at the finest ridges' period, measured against that period."""
    periods = _period_quantiles(image, theta, mask)
    if periods is None:
        return 0.0, 0.0
    period, finest = periods
    ratio = harmonic_ratio(image, mask, period)
    if ratio < BLUR_RATIO:
        return blur_sigma(ratio, period, shoulder_ratio(image, mask, period)), period
    sigma = finest_blur_sigma(image, mask, finest)
    if sigma > 0:
        return sigma, finest
    sigma, whitened = whitened_blur_sigma(image, mask, finest)
    return (sigma, whitened) if sigma > 0 else (0.0, period)
