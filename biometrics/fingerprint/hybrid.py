"""Hybrid comparison: the ridge pattern compared in the alignment the minutiae give, fused with MCC.

After Ross, Jain & Reisman, "A hybrid fingerprint matcher" (Pattern Recognition 2003: ridge features aligned by
the minutiae, sum-rule fusion) and orientation-field similarity over the overlap of the foregrounds (Tico &
Kuosmanen). ``ridge_similarity``: candidate alignments are the consensus of the minutia pairs the MCC score rests
on and the rigid transforms of the ``CANDIDATES`` best local pairs alone; the one whose flow agrees best with
the other template's (over an overlap of at least ``MIN_OVERLAP`` of the smaller foreground) is kept, the other
capture's ridge pattern is warped onto this one's, and in each ``TILE`` px tile inside both masks the best
normalised correlation over shifts of up to ``SHIFT`` px is taken (local distortion); their mean is the ridge
similarity. Features: ``ridgemap.py``.
"""

from __future__ import annotations

import cv2
import numpy as np
from numba import njit

from biometrics.fingerprint.ridgemap import BLOCK, MASK_STEP, RidgeMap
from biometrics.fingerprint.similarity import _wrap, local_similarities, one_to_one_pairs, relaxed_pairs

CANDIDATES = 8  # single-pair alignments tried besides the consensus of the relaxed pairs
MIN_OVERLAP = 0.4  # of the smaller foreground, for an alignment to be chosen by its flow
MIN_FLOW_CELLS = 8
TILE = 32
TILE_STEP = 24
SHIFT = 3
MIN_TILE_OVERLAP = 0.9


def consensus(pairs) -> tuple[float, float, float]:
    """Rigid transform (phi, tx, ty), B = R(phi) A + t, from weighted minutia pairs."""
    xa, ya, ta, xb, yb, tb, w = pairs
    w = np.maximum(w, 1e-9)
    d = _wrap(tb - ta)
    phi = float(np.arctan2((w * np.sin(d)).sum(), (w * np.cos(d)).sum()))
    c, s = np.cos(phi), np.sin(phi)
    mxa, mya = np.average(xa, weights=w), np.average(ya, weights=w)
    mxb, myb = np.average(xb, weights=w), np.average(yb, weights=w)
    return phi, float(mxb - (c * mxa - s * mya)), float(myb - (s * mxa + c * mya))


def candidate_alignments(a_cyl, b_cyl) -> list[tuple[float, float, float]]:
    """The consensus alignment of the relaxed pairs, then those of the ``CANDIDATES`` best local pairs alone.
    ``a_cyl``, ``b_cyl``: (x, y, angle, bits, valid) as ``matching.cylinder_arrays`` gives them."""
    ax, ay, aa, abits, avalid = a_cyl
    bx, by, ba, bbits, bvalid = b_cyl
    gamma = local_similarities(aa, abits, avalid, ba, bbits, bvalid)
    selected = relaxed_pairs(gamma, ax, ay, aa, bx, by, ba)
    if selected is None:
        return []
    out = [consensus(selected[0])]
    n_b = gamma.shape[1]
    for k in one_to_one_pairs(gamma, CANDIDATES):
        i, j = divmod(int(k), n_b)
        phi = float(_wrap(np.array(ba[j] - aa[i])))
        c, s = np.cos(phi), np.sin(phi)
        out.append((phi, float(bx[j] - (c * ax[i] - s * ay[i])), float(by[j] - (s * ax[i] + c * ay[i]))))
    return out


def _flow_points(m: RidgeMap):
    """(x, y, orientation, coherence) of a ridge map's foreground flow cells, and its grids (computed once)."""
    cached = m.__dict__.get("_flow")
    if cached is None:
        iy, ix = np.nonzero(m.flow_mask)
        angle = m.flow.astype(np.float64) * (np.pi / 256.0)
        coh = m.coherence.astype(np.float64) / 255.0
        cached = ((ix + 0.5) * BLOCK, (iy + 0.5) * BLOCK, angle[iy, ix], coh[iy, ix], angle, coh)
        m.__dict__["_flow"] = cached
    return cached


@njit(cache=True)
def _flow_agreement(x, y, a_angle, a_coh, b_mask, b_angle, b_coh, n_b, phi, tx, ty, block, min_cells):
    c = np.cos(phi)
    s = np.sin(phi)
    h, w = b_mask.shape
    n = 0
    num = 0.0
    den = 0.0
    for k in range(x.shape[0]):
        jx = int(np.floor((c * x[k] - s * y[k] + tx) / block))
        jy = int(np.floor((s * x[k] + c * y[k] + ty) / block))
        if jx < 0 or jy < 0 or jx >= w or jy >= h or not b_mask[jy, jx]:
            continue
        n += 1
        weight = np.sqrt(a_coh[k] * b_coh[jy, jx])
        num += weight * np.cos(2.0 * (a_angle[k] + phi - b_angle[jy, jx]))
        den += weight
    overlap = n / max(1, min(x.shape[0], n_b))
    if n < min_cells:
        return -1.0, overlap
    return num / max(den, 1e-9), overlap


def flow_agreement(a: RidgeMap, b: RidgeMap, phi: float, tx: float, ty: float) -> tuple[float, float]:
    """(coherence-weighted mean cos of twice the flow difference, overlap over the smaller foreground) of ``a``
    mapped onto ``b``; (-1, overlap) when they share fewer than ``MIN_FLOW_CELLS`` cells."""
    x, y, a_angle, a_coh, _, _ = _flow_points(a)
    _, _, _, _, b_angle, b_coh = _flow_points(b)
    agreement, overlap = _flow_agreement(x, y, a_angle, a_coh, b.flow_mask, b_angle, b_coh, int(b.flow_mask.sum()),
                                         float(phi), float(tx), float(ty), float(BLOCK), MIN_FLOW_CELLS)
    return float(agreement), float(overlap)


def best_alignment(a: RidgeMap, b: RidgeMap, candidates) -> tuple[float, float, float] | None:
    """The candidate whose flow agrees best over an overlap of at least ``MIN_OVERLAP`` (else the first)."""
    if not candidates:
        return None
    x, y, a_angle, a_coh, _, _ = _flow_points(a)
    _, _, _, _, b_angle, b_coh = _flow_points(b)
    n_b = int(b.flow_mask.sum())
    best, best_agreement = 0, -np.inf
    for k, (phi, tx, ty) in enumerate(candidates):
        agreement, overlap = _flow_agreement(x, y, a_angle, a_coh, b.flow_mask, b_angle, b_coh, n_b, float(phi),
                                             float(tx), float(ty), float(BLOCK), MIN_FLOW_CELLS)
        if overlap >= MIN_OVERLAP and agreement > best_agreement:
            best, best_agreement = k, agreement
    return candidates[best]


def _pattern(m: RidgeMap) -> tuple[np.ndarray, np.ndarray]:
    """(+1 ridge / -1 valley / 0 background float32 image, foreground bool image) of a ridge map, computed
    once per map."""
    cached = m.__dict__.get("_pattern")
    if cached is None:
        h, w = m.ridges.shape
        full = cv2.resize(m.mask.astype(np.uint8), (w - w % MASK_STEP, h - h % MASK_STEP),
                          interpolation=cv2.INTER_NEAREST)
        mask = np.zeros((h, w), dtype=bool)
        mask[:full.shape[0], :full.shape[1]] = full > 0
        cached = (np.where(mask, np.where(m.ridges, 1.0, -1.0), 0.0).astype(np.float32), mask)
        m.__dict__["_pattern"] = cached
    return cached


@njit(cache=True, fastmath=True)
def _tile_correlations(pa, wb, b_sum, b_sq, both_sum, tile, step, shift, min_cover):
    """Mean over ``tile`` px tiles (every ``step`` px) whose share of pixels inside both masks is at least
    ``min_cover`` (``both_sum``: integral image of that mask) of the best normalised correlation (as OpenCV's
    TM_CCOEFF_NORMED) of ``pa``'s tile with ``wb`` shifted by up to ``shift`` px (``b_sum``, ``b_sq``: integral
    images of ``wb`` and its square); 0 when no tile counts."""
    h, w = pa.shape
    n = tile * tile
    total = 0.0
    count = 0
    for y0 in range(shift, h - tile - shift, step):
        for x0 in range(shift, w - tile - shift, step):
            cover = (both_sum[y0 + tile, x0 + tile] - both_sum[y0, x0 + tile] - both_sum[y0 + tile, x0]
                     + both_sum[y0, x0]) / n
            if cover < min_cover:
                continue
            st = 0.0
            st2 = 0.0
            for y in range(tile):
                for x in range(tile):
                    v = pa[y0 + y, x0 + x]
                    st += v
                    st2 += v * v
            var_t = st2 - st * st / n
            if var_t < 0.01 * n:
                continue
            best = -2.0
            for dy in range(-shift, shift + 1):
                for dx in range(-shift, shift + 1):
                    ya, xa = y0 + dy, x0 + dx
                    yb, xb = ya + tile, xa + tile
                    si = b_sum[yb, xb] - b_sum[ya, xb] - b_sum[yb, xa] + b_sum[ya, xa]
                    si2 = b_sq[yb, xb] - b_sq[ya, xb] - b_sq[yb, xa] + b_sq[ya, xa]
                    var_i = si2 - si * si / n
                    if var_i < 0.01 * n:
                        continue
                    sti = np.float32(0.0)
                    for y in range(tile):
                        row_b = wb[ya + y, xa:xa + tile]
                        row_a = pa[y0 + y, x0:x0 + tile]
                        for x in range(tile):
                            sti += row_b[x] * row_a[x]
                    r = (sti - st * si / n) / np.sqrt(var_t * var_i)
                    if r > best:
                        best = r
            if best > -2.0:
                total += best
                count += 1
    return total / count if count else 0.0


def pattern_correlation(a: RidgeMap, b: RidgeMap, phi: float, tx: float, ty: float) -> float:
    """Mean over ``TILE`` px tiles of ``a`` inside both masks of the best normalised correlation with ``b``
    warped onto ``a`` (shifts up to ``SHIFT`` px); 0 when no tile is shared."""
    pa, ma = _pattern(a)
    pb, mb = _pattern(b)
    c, s = np.cos(phi), np.sin(phi)
    warp = np.array([[c, -s, tx], [s, c, ty]], dtype=np.float32)
    h, w = pa.shape
    flags = cv2.WARP_INVERSE_MAP
    wb = cv2.warpAffine(pb, warp, (w, h), flags=cv2.INTER_LINEAR | flags, borderValue=0)
    wm = cv2.warpAffine(mb.astype(np.uint8), warp, (w, h), flags=cv2.INTER_NEAREST | flags, borderValue=0)
    both_sum = cv2.integral((wm > 0).astype(np.uint8) & ma.astype(np.uint8)).astype(np.float64)
    b_sum, b_sq = cv2.integral2(wb, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
    return float(_tile_correlations(pa, wb, b_sum, b_sq, both_sum, TILE, TILE_STEP, SHIFT, MIN_TILE_OVERLAP))


def ridge_similarity(a: RidgeMap, b: RidgeMap, a_cyl, b_cyl) -> float:
    """The ridge pattern's similarity of two captures in the alignment their minutiae give (0 without one)."""
    align = best_alignment(a, b, candidate_alignments(a_cyl, b_cyl))
    return 0.0 if align is None else pattern_correlation(a, b, *align)
