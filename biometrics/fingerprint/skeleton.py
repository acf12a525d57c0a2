"""Binarisation of the enhanced image and thinning of the ridges to one-pixel-wide lines.

Thinning is Guo & Hall's parallel algorithm (Comm. ACM 32(3), 1989) run with 256-entry lookup
tables over each pixel's 8-neighbourhood code, so every pass is a few array operations.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

# Neighbour order x1..x8 counter-clockwise from east: (dy, dx)
NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _bits(code: int) -> list[int]:
    return [(code >> i) & 1 for i in range(8)]


def _guo_hall_luts() -> tuple[np.ndarray, np.ndarray]:
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        x = _bits(code)
        x9 = [*x, x[0]]
        # x9[i] is x_{i+1}
        xh = sum(1 for i in range(4) if x9[2 * i] == 0 and (x9[2 * i + 1] or x9[2 * i + 2]))
        n1 = sum(1 for k in range(4) if x9[2 * k] or x9[2 * k + 1])
        n2 = sum(1 for k in range(4) if x9[2 * k + 1] or x9[(2 * k + 2) % 8])
        g1 = xh == 1
        g2 = 2 <= min(n1, n2) <= 3
        x1, x2, x3, x4, x5, x6, x7, x8 = x
        g3 = ((x2 or x3 or not x8) and x1) == 0
        g3p = ((x6 or x7 or not x4) and x5) == 0
        first[code] = g1 and g2 and g3
        second[code] = g1 and g2 and g3p
    return first, second


_FIRST, _SECOND = _guo_hall_luts()
_CROSSING = np.array(
    [sum(abs(_bits(c)[i] - _bits(c)[(i + 1) % 8]) for i in range(8)) // 2 for c in range(256)], dtype=np.uint8)
_COUNT = np.array([sum(_bits(c)) for c in range(256)], dtype=np.uint8)


def neighbour_code(binary: np.ndarray) -> np.ndarray:
    """8-bit code of each pixel's neighbours (bit i set when neighbour x_{i+1} is set)."""
    b = np.pad(binary.astype(np.uint8), 1)
    h, w = binary.shape
    code = np.zeros((h, w), dtype=np.uint8)
    for i, (dy, dx) in enumerate(NEIGHBOURS):
        code |= b[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] << i
    return code


def thin(binary: np.ndarray, max_iterations: int = 100) -> np.ndarray:
    """One-pixel-wide skeleton of a boolean image."""
    skel = binary.astype(bool).copy()
    for _ in range(max_iterations):
        changed = False
        for lut in (_FIRST, _SECOND):
            delete = skel & lut[neighbour_code(skel)]
            if delete.any():
                skel &= ~delete
                changed = True
        if not changed:
            break
    return skel


def binarise(enhanced: np.ndarray, mask: np.ndarray, period: float) -> np.ndarray:
    """Ridge pixels (True) of the enhanced image inside the mask, with specks and pores cleaned."""
    ridges = (enhanced < 0) & mask
    # fill pores and remove specks smaller than a fraction of a ridge period squared
    min_area = max(4, int(0.5 * period * period))
    labels, count = ndimage.label(ridges)
    if count:
        sizes = np.bincount(labels.ravel())
        small = sizes < min_area
        small[0] = False
        ridges &= ~small[labels]
    holes, count = ndimage.label(~ridges & mask)
    if count:
        sizes = np.bincount(holes.ravel())
        small = sizes < min_area
        small[0] = False
        ridges |= small[holes]
    return cv2.medianBlur(ridges.astype(np.uint8), 3).astype(bool) & mask


def crossing_number(skel: np.ndarray) -> np.ndarray:
    """Crossing number of each skeleton pixel (0 elsewhere): 1 ending, 3 bifurcation."""
    return np.where(skel, _CROSSING[neighbour_code(skel)], 0)


def neighbour_count(skel: np.ndarray) -> np.ndarray:
    """Number of set 8-neighbours of each pixel."""
    return _COUNT[neighbour_code(skel)]
