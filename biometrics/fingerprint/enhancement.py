"""Contextual enhancement with a bank of oriented Gabor filters tuned to the ridge period.

The image is filtered once per orientation of the bank (``cv2.filter2D``); each pixel then takes the
response of the filter nearest its own ridge orientation.
"""

from __future__ import annotations

import cv2
import numpy as np

ORIENTATIONS = 16
SIGMA_FACTOR = 0.5  # Gaussian sigma as a fraction of the ridge period, across and along the ridge
ALONG_FACTOR = 0.75


def gabor_kernel(theta: float, period: float) -> np.ndarray:
    """Even-symmetric Gabor kernel for ridges running at angle ``theta`` with the given period."""
    sigma_across = SIGMA_FACTOR * period
    sigma_along = ALONG_FACTOR * period
    half = int(np.ceil(3.0 * max(sigma_across, sigma_along)))
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    along = x * np.cos(theta) + y * np.sin(theta)
    across = -x * np.sin(theta) + y * np.cos(theta)
    envelope = np.exp(-0.5 * (across**2 / sigma_across**2 + along**2 / sigma_along**2))
    kernel = envelope * np.cos(2.0 * np.pi * across / period)
    kernel -= kernel.mean()  # no response to flat areas
    return (kernel / np.abs(kernel).sum()).astype(np.float32)


PERIOD_BINS = (0.85, 1.0, 1.18)  # filter periods, as multiples of the median period (chosen on DB1_B)


def enhance(norm: np.ndarray, theta: np.ndarray, period: float, local_period: np.ndarray | None = None,
            responses: dict[tuple[int, int], np.ndarray] | None = None) -> np.ndarray:
    """Gabor-enhanced image (float32, ridges negative where the input's ridges are dark).

    With ``local_period`` (per pixel), each pixel takes the filter of the nearest period of the bank.
    ``responses`` keeps each filter's response to ``norm`` by (period, orientation) index: a second
    enhancement of the same image along another orientation field reuses them instead of filtering again.
    """
    responses = {} if responses is None else responses
    index = np.round(theta / np.pi * ORIENTATIONS).astype(np.int64) % ORIENTATIONS
    bins = np.asarray(PERIOD_BINS, dtype=np.float64) * period
    if local_period is None or len(bins) == 1:
        pindex = np.zeros(norm.shape, dtype=np.int64)
    else:
        pindex = np.argmin(np.abs(np.log(local_period[..., None] / bins[None, None, :])), axis=2)
    out = np.zeros_like(norm, dtype=np.float32)
    for p, value in enumerate(bins):
        for k in range(ORIENTATIONS):
            sel = (index == k) & (pindex == p)
            if not sel.any():
                continue
            if (p, k) not in responses:
                kernel = gabor_kernel(k * np.pi / ORIENTATIONS, float(value))
                responses[p, k] = cv2.filter2D(norm, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)
            out[sel] = responses[p, k][sel]
    return out
