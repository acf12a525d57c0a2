"""Minutia Cylinder-Code (Cappelli, Ferrara, Maltoni, IEEE TPAMI 32(12), 2010), bit version.

Each minutia gets a cylinder: a disc of radius ``R`` around it, rotated to its direction, cut into
``NS`` x ``NS`` spatial cells (only those whose centre lies within the disc are kept) and ``ND``
directional sections. A cell's bit says whether neighbouring minutiae, near the cell and with the
section's relative direction, contribute at least ``MU_PSI``. A cell is valid when its centre lies inside
the print's foreground. Bits are laid out cell-major (``ND`` bits per cell) and packed into uint64
words; validity is stored expanded to the same layout so that every similarity term is a popcount of
an AND of words.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

R = 70.0  # cylinder radius, pixels at 500 dpi
NS = 16  # spatial cells along a side
ND = 6  # directional sections
SIGMA_S = 28.0 / 3.0
SIGMA_D = 2.0 * np.pi / 9.0
MU_PSI = 0.01  # bit threshold on a cell's contribution
MIN_VALID_CELLS = 0.5  # fraction of the disc's cells a valid cylinder needs (paper: 0.75; tuned on DB1_B)
MIN_NEIGHBOURS = 2  # minutiae within R + 3 sigma_S a valid cylinder needs

DELTA_S = 2.0 * R / NS
DELTA_D = 2.0 * np.pi / ND


def _disc_offsets() -> np.ndarray:
    """(C, 2) offsets (u, v) of the cell centres within the disc, in the cylinder's own frame."""
    idx = (np.arange(NS) - (NS - 1) / 2.0) * DELTA_S
    u, v = np.meshgrid(idx, idx, indexing="xy")
    inside = np.hypot(u, v) <= R
    return np.stack([u[inside], v[inside]], axis=1)


CELL_OFFSETS = _disc_offsets()
N_CELLS = len(CELL_OFFSETS)
N_BITS = N_CELLS * ND
N_WORDS = (N_BITS + 63) // 64


def angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """d_phi(a, b): a - b wrapped into [-pi, pi)."""
    return np.mod(a - b + np.pi, 2.0 * np.pi) - np.pi


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(M, N_BITS) bool -> (M, N_WORDS) uint64, bit i of the row in word i // 64, position i % 64."""
    m = bits.shape[0]
    padded = np.zeros((m, N_WORDS * 64), dtype=np.uint8)
    padded[:, :bits.shape[1]] = bits
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").reshape(m, N_WORDS).astype(np.uint64)


def unpack_bits(words: np.ndarray) -> np.ndarray:
    """Inverse of ``pack_bits``."""
    m = words.shape[0]
    raw = np.ascontiguousarray(words.astype("<u8")).view(np.uint8).reshape(m, N_WORDS * 8)
    return np.unpackbits(raw, axis=1, bitorder="little")[:, :N_BITS].astype(bool)


def build_cylinders(x: np.ndarray, y: np.ndarray, angle: np.ndarray, mask: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cylinders of a minutiae set.

    Returns (keep, bits, valid): ``keep`` the indices of the minutiae whose cylinder is valid,
    ``bits`` and ``valid`` (len(keep), N_WORDS) uint64: contributions and expanded cell validity.
    """
    n = len(x)
    if n == 0:
        empty = np.zeros((0, N_WORDS), dtype=np.uint64)
        return np.zeros(0, dtype=np.int64), empty, empty
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = CELL_OFFSETS[:, 0], CELL_OFFSETS[:, 1]
    # cell centres in image coordinates: (n, C)
    px = x[:, None] + u[None, :] * cos[:, None] - v[None, :] * sin[:, None]
    py = y[:, None] + u[None, :] * sin[:, None] + v[None, :] * cos[:, None]
    if mask is None:
        cell_valid = np.ones(px.shape, dtype=bool)
    else:
        h, w = mask.shape
        ix = np.round(px).astype(np.int64)
        iy = np.round(py).astype(np.int64)
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        cell_valid = np.zeros(px.shape, dtype=bool)
        cell_valid[inside] = mask[iy[inside], ix[inside]]
    # spatial contribution of every minutia t to every cell of every cylinder i: (n, C, n)
    d2 = (px[:, :, None] - x[None, None, :]) ** 2 + (py[:, :, None] - y[None, None, :]) ** 2
    spatial = np.exp(-d2 / (2.0 * SIGMA_S**2)) / (SIGMA_S * np.sqrt(2.0 * np.pi))
    spatial[d2 > (3.0 * SIGMA_S) ** 2] = 0.0
    spatial[np.arange(n), :, np.arange(n)] = 0.0
    # directional contribution (n, n, ND): area of the Gaussian over each section
    rel = angle_difference(angle[:, None], angle[None, :])  # d_phi(theta_i, theta_t)
    centres = -np.pi + (np.arange(ND) + 0.5) * DELTA_D
    alpha = angle_difference(centres[None, None, :], rel[:, :, None])
    scale = SIGMA_D * np.sqrt(2.0)
    directional = 0.5 * (erf((alpha + DELTA_D / 2) / scale) - erf((alpha - DELTA_D / 2) / scale))
    contrib = np.einsum("ict,itk->ick", spatial, directional)  # (n, C, ND)
    bits = (contrib >= MU_PSI) & cell_valid[:, :, None]
    # validity of each cylinder
    dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(dist, np.inf)
    neighbours = (dist <= R + 3.0 * SIGMA_S).sum(axis=1)
    keep = np.nonzero((cell_valid.sum(axis=1) >= MIN_VALID_CELLS * N_CELLS)
                      & (neighbours >= MIN_NEIGHBOURS))[0]
    bits = bits[keep].reshape(len(keep), N_BITS)
    valid = np.repeat(cell_valid[keep], ND, axis=1)
    return keep, pack_bits(bits), pack_bits(valid)


HULL_MARGIN = 50.0  # Omega: how far beyond the minutiae's convex hull cells count as valid


def hull_region(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], margin: float = HULL_MARGIN) -> np.ndarray:
    """Boolean image: the convex hull of the minutiae enlarged by ``margin`` pixels (MCC's validity area)."""
    import cv2
    from scipy import ndimage

    region = np.zeros(shape, dtype=np.uint8)
    if len(x) >= 3:
        points = np.stack([np.round(x), np.round(y)], axis=1).astype(np.int32)
        cv2.fillConvexPoly(region, cv2.convexHull(points), 1)
    elif len(x):
        region[np.round(y).astype(int), np.round(x).astype(int)] = 1
    if not region.any():
        return region.astype(bool)
    return ndimage.distance_transform_edt(region == 0) <= margin
