"""Ridge orientation field from smoothed gradient moments, with its coherence (reliability)."""

from __future__ import annotations

import cv2
import numpy as np

GRADIENT_SIGMA = 1.0
MOMENT_SIGMA = 7.0
SMOOTH_SIGMA = 5.0


def orientation_field(norm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (theta, coherence) per pixel.

    ``theta`` is the ridge direction in radians in [0, pi) (image axes: x right, y down);
    ``coherence`` in [0, 1] is how consistently the gradients agree around the pixel.
    """
    smoothed = cv2.GaussianBlur(norm, (0, 0), GRADIENT_SIGMA)
    gx = cv2.Sobel(smoothed, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smoothed, cv2.CV_32F, 0, 1, ksize=3)
    gxx = cv2.GaussianBlur(gx * gx, (0, 0), MOMENT_SIGMA)
    gyy = cv2.GaussianBlur(gy * gy, (0, 0), MOMENT_SIGMA)
    gxy = cv2.GaussianBlur(gx * gy, (0, 0), MOMENT_SIGMA)
    # Doubled-angle vector of the dominant gradient; ridges run perpendicular to it.
    c2 = gxx - gyy
    s2 = 2.0 * gxy
    energy = gxx + gyy
    coherence = np.sqrt(c2 * c2 + s2 * s2) / np.maximum(energy, 1e-9)
    c2 = cv2.GaussianBlur(c2, (0, 0), SMOOTH_SIGMA)
    s2 = cv2.GaussianBlur(s2, (0, 0), SMOOTH_SIGMA)
    gradient_angle = 0.5 * np.arctan2(s2, c2)
    theta = np.mod(gradient_angle + np.pi / 2.0, np.pi).astype(np.float32)
    return theta, np.clip(coherence, 0.0, 1.0).astype(np.float32)
