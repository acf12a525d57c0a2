"""Foreground segmentation: where the finger touched the sensor.

Local standard deviation of the normalised image over a block, thresholded, then cleaned by
morphology and reduced to the largest connected region with its holes filled.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

BLOCK = 16
STD_THRESHOLD = 0.2  # in units of the image's global standard deviation


def local_std(norm: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Standard deviation of ``norm`` over a ``block`` x ``block`` window around each pixel."""
    mean = cv2.blur(norm, (block, block), borderType=cv2.BORDER_REFLECT)
    mean_sq = cv2.blur(norm * norm, (block, block), borderType=cv2.BORDER_REFLECT)
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))


def foreground_mask(norm: np.ndarray, block: int = BLOCK, threshold: float = STD_THRESHOLD) -> np.ndarray:
    """Boolean mask of the fingerprint area of a normalised image."""
    std = local_std(norm, block)
    mask = std > threshold
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (block + 1, block + 1))
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(norm.shape, dtype=bool)
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    largest = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(largest)
