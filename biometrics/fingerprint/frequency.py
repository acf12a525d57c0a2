"""Ridge frequency: the spacing of ridges measured across them, block by block.

Each block's signature is the image sampled along the ridge normal (averaged along the ridge);
its dominant period comes from the signature's spectrum, within the range a 500 dpi finger allows.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

STEP = 16
SIGNATURE_LENGTH = 48  # samples across the ridges
SIGNATURE_WIDTH = 12  # samples along the ridges, averaged
MIN_PERIOD = 4.0  # pixels at 500 dpi
MAX_PERIOD = 16.0
DEFAULT_PERIOD = 9.0  # typical adult ridge period at 500 dpi, used when nothing can be measured


def block_periods(norm: np.ndarray, theta: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (centres (B, 2) as (y, x), periods (B,)) for blocks inside the mask; NaN where unmeasurable."""
    h, w = norm.shape
    ys, xs = np.mgrid[STEP // 2:h:STEP, STEP // 2:w:STEP]
    ys, xs = ys.ravel(), xs.ravel()
    keep = mask[ys, xs]
    ys, xs = ys[keep], xs[keep]
    if ys.size == 0:
        return np.zeros((0, 2)), np.zeros(0)
    t = theta[ys, xs].astype(np.float64)
    # unit vectors along the ridge (d) and across it (n)
    dx, dy = np.cos(t), np.sin(t)
    nx, ny = -dy, dx
    u = np.arange(SIGNATURE_LENGTH) - (SIGNATURE_LENGTH - 1) / 2.0
    v = np.arange(SIGNATURE_WIDTH) - (SIGNATURE_WIDTH - 1) / 2.0
    px = xs[:, None, None] + u[None, :, None] * nx[:, None, None] + v[None, None, :] * dx[:, None, None]
    py = ys[:, None, None] + u[None, :, None] * ny[:, None, None] + v[None, None, :] * dy[:, None, None]
    samples = ndimage.map_coordinates(norm, [py.ravel(), px.ravel()], order=1, mode="reflect")
    signature = samples.reshape(px.shape).mean(axis=2)
    signature = signature - signature.mean(axis=1, keepdims=True)
    signature *= np.hanning(SIGNATURE_LENGTH)[None, :]
    n_fft = 256
    spectrum = np.abs(np.fft.rfft(signature, n=n_fft, axis=1))
    freqs = np.fft.rfftfreq(n_fft)
    band = (freqs >= 1.0 / MAX_PERIOD) & (freqs <= 1.0 / MIN_PERIOD)
    band_spec = spectrum[:, band]
    peak = np.argmax(band_spec, axis=1)
    peak_freq = freqs[band][peak]
    # a peak that does not stand out from the rest of the band is not a ridge pattern
    contrast = band_spec[np.arange(len(peak)), peak] / np.maximum(band_spec.mean(axis=1), 1e-9)
    periods = np.where(contrast > 2.0, 1.0 / peak_freq, np.nan)
    return np.stack([ys, xs], axis=1), periods


def ridge_period(norm: np.ndarray, theta: np.ndarray, mask: np.ndarray) -> float:
    """Median ridge period (pixels) over the foreground; ``DEFAULT_PERIOD`` if unmeasurable."""
    _, periods = block_periods(norm, theta, mask)
    valid = periods[np.isfinite(periods)]
    if valid.size < 3:
        return DEFAULT_PERIOD
    return float(np.clip(np.median(valid), MIN_PERIOD + 1, MAX_PERIOD - 2))


def period_field(norm: np.ndarray, theta: np.ndarray, mask: np.ndarray, median: float) -> np.ndarray:
    """Smoothed per-pixel ridge period: block measurements, gaps filled with ``median``."""
    import cv2

    h, w = norm.shape
    centres, periods = block_periods(norm, theta, mask)
    gh, gw = len(range(STEP // 2, h, STEP)), len(range(STEP // 2, w, STEP))
    grid = np.full((gh, gw), median, dtype=np.float32)
    if len(periods):
        iy = (centres[:, 0] - STEP // 2) // STEP
        ix = (centres[:, 1] - STEP // 2) // STEP
        ok = np.isfinite(periods)
        grid[iy[ok].astype(int), ix[ok].astype(int)] = periods[ok]
    grid = ndimage.median_filter(grid, size=3, mode="nearest")
    grid = ndimage.gaussian_filter(grid, 1.0, mode="nearest")
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
