"""Non-minutiae features of a capture, kept in the template for the hybrid comparison (``hybrid.py``).

Broken (dry) or merged (wet) ridges lose minutiae long before they lose their flow and their pattern. The
template keeps, besides the minutiae:

- the ridge flow on a grid of ``BLOCK`` px: the doubled-angle mean orientation of the enhanced image and its
  coherence, and which blocks are foreground;
- the foreground mask on a grid of ``MASK_STEP`` px;
- the ridge pattern: the sign of the enhanced image inside the mask, one bit a pixel (zlib-compressed).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

MASK_STEP = 4  # px per cell of the stored foreground mask
BLOCK = 8  # px per cell of the stored ridge flow


@dataclass(frozen=True, eq=False)
class RidgeMap:
    """``flow`` (h8, w8) uint8 orientation in pi/256 units, ``coherence`` (h8, w8) uint8 (/255), ``flow_mask``
    (h8, w8) bool; ``mask`` (h4, w4) bool; ``ridges`` (h, w) bool (enhanced image > 0); ``shape`` (h, w)."""

    flow: np.ndarray
    coherence: np.ndarray
    flow_mask: np.ndarray
    mask: np.ndarray
    ridges: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.ridges.shape

    def to_bytes(self) -> bytes:
        """``h``, ``w`` (u16), then zlib of: flow, coherence, flow mask bits, mask bits, ridge bits."""
        h, w = self.ridges.shape
        body = b"".join([self.flow.astype(np.uint8).tobytes(), self.coherence.astype(np.uint8).tobytes(),
                         np.packbits(self.flow_mask).tobytes(), np.packbits(self.mask).tobytes(),
                         np.packbits(self.ridges).tobytes()])
        return np.array([h, w], dtype="<u2").tobytes() + zlib.compress(body, 9)

    @classmethod
    def from_bytes(cls, data: bytes) -> RidgeMap:
        """Parse ``to_bytes``'s output; ``ValueError`` when it does not fit."""
        h, w = (int(v) for v in np.frombuffer(data[:4], dtype="<u2"))
        body = zlib.decompress(data[4:])
        h8, w8, h4, w4 = h // BLOCK, w // BLOCK, h // MASK_STEP, w // MASK_STEP
        sizes = [h8 * w8, h8 * w8, (h8 * w8 + 7) // 8, (h4 * w4 + 7) // 8, (h * w + 7) // 8]
        if len(body) != sum(sizes):
            raise ValueError("ridge map of the wrong size")
        parts, off = [], 0
        for n in sizes:
            parts.append(np.frombuffer(body, dtype=np.uint8, count=n, offset=off))
            off += n

        def bits(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
            return np.unpackbits(p)[:shape[0] * shape[1]].reshape(shape).astype(bool)

        return cls(parts[0].reshape(h8, w8).copy(), parts[1].reshape(h8, w8).copy(), bits(parts[2], (h8, w8)),
                   bits(parts[3], (h4, w4)), bits(parts[4], (h, w)))


def _block_mean(a: np.ndarray, step: int) -> np.ndarray:
    h, w = a.shape
    h2, w2 = h // step, w // step
    return a[:h2 * step, :w2 * step].reshape(h2, step, w2, step).mean(axis=(1, 3))


def ridge_map(enhanced: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> RidgeMap:
    """The stored non-minutiae features of an analysed capture: ``enhanced`` is the final enhanced image,
    ``flow`` the ridge flow that steered it, ``mask`` the foreground."""
    from biometrics.fingerprint.orientation import orientation_field

    _, coherence = orientation_field(enhanced)
    m = mask.astype(np.float64)
    weight = coherence * m
    c = _block_mean(np.cos(2.0 * flow) * weight, BLOCK)
    s = _block_mean(np.sin(2.0 * flow) * weight, BLOCK)
    m8 = _block_mean(m, BLOCK)
    angle = np.mod(0.5 * np.arctan2(s, c), np.pi)
    coh = np.hypot(c, s) / np.maximum(m8, 1e-6)
    flow_q = np.round(angle / np.pi * 256.0).astype(np.int64) % 256
    coh_q = np.clip(np.round(coh * 255.0), 0, 255)
    mask4 = _block_mean(m, MASK_STEP) > 0.5
    return RidgeMap(flow_q.astype(np.uint8), coh_q.astype(np.uint8), m8 > 0.5, mask4, (enhanced > 0) & mask)
