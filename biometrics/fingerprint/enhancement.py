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


def enhance(norm: np.ndarray, theta: np.ndarray, period: float) -> np.ndarray:
    """Gabor-enhanced image (float32, ridges negative where the input's ridges are dark)."""
    index = np.round(theta / np.pi * ORIENTATIONS).astype(np.int64) % ORIENTATIONS
    out = np.zeros_like(norm, dtype=np.float32)
    for k in range(ORIENTATIONS):
        sel = index == k
        if not sel.any():
            continue
        kernel = gabor_kernel(k * np.pi / ORIENTATIONS, period)
        response = cv2.filter2D(norm, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT)
        out[sel] = response[sel]
    return out
