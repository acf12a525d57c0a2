"""numba-compiled MCC comparison: the computation of ``similarity.py`` (local similarities by popcount,
LSS-R consolidation) for one pair and for one probe against a packed gallery, in parallel.

Compiled lazily on first use (and cached on disk by numba).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from biometrics.fingerprint.popcount import popcount64
from biometrics.fingerprint.similarity import (
    D1_CUTOFF,
    D2_CUTOFF,
    DELTA_THETA,
    MAX_NP,
    MIN_NP,
    MU_P,
    MU_P1,
    MU_P2,
    MU_P3,
    N_REL,
    TAU_P,
    TAU_P1,
    TAU_P2,
    TAU_P3,
    W_R,
)

PI = np.pi
TWO_PI = 2.0 * np.pi


@njit(cache=True, inline="always")
def _wrap(a):
    # valid for |a| < 5 pi, which covers every use here (differences of wrapped angles)
    if a >= PI:
        a -= TWO_PI
        if a >= PI:
            a -= TWO_PI
    elif a < -PI:
        a += TWO_PI
        if a < -PI:
            a += TWO_PI
    return a


@njit(cache=True, inline="always")
def _sigmoid(v, mu, tau):
    return 1.0 / (1.0 + np.exp(-tau * (v - mu)))


@njit(cache=True)
def pair_score(ax, ay, aa, abits, avalid, bx, by, ba, bbits, bvalid, min_bits):
    """LSS-R score of two cylinder sets (arrays as in ``FingerprintTemplate``)."""
    n_a = ax.shape[0]
    n_b = bx.shape[0]
    if n_a == 0 or n_b == 0:
        return 0.0
    n_words = abits.shape[1]
    total = n_a * n_b
    vals = np.empty(total)
    ia = np.empty(total, dtype=np.int64)
    ib = np.empty(total, dtype=np.int64)
    count = 0
    for i in range(n_a):
        for j in range(n_b):
            if abs(_wrap(aa[i] - ba[j])) > DELTA_THETA:
                continue
            p1 = 0
            p2 = 0
            p3 = 0
            p4 = 0
            for w in range(n_words):
                a = abits[i, w]
                b = bbits[j, w]
                va = avalid[i, w]
                vb = bvalid[j, w]
                p1 += popcount64(a & vb)
                p2 += popcount64(b & va)
                p3 += popcount64(a & b)
                p4 += popcount64(va & vb)
            if p4 < min_bits:
                continue
            norm = np.sqrt(np.float64(p1)) + np.sqrt(np.float64(p2))
            if norm <= 0.0:
                continue
            xor = np.float64(p1) + np.float64(p2) - 2.0 * np.float64(p3)
            if xor < 0.0:
                xor = 0.0
            s = 1.0 - np.sqrt(xor) / norm
            if s > 0.0:
                vals[count] = s
                ia[count] = i
                ib[count] = j
                count += 1
    if count == 0:
        return 0.0
    n_r = min(n_a, n_b)
    order = np.argsort(-vals[:count], kind="mergesort")
    # one-to-one: best pairs first, each minutia of either side used once
    used_a = np.zeros(n_a, dtype=np.bool_)
    used_b = np.zeros(n_b, dtype=np.bool_)
    sel = np.empty(n_r, dtype=np.int64)
    n = 0
    for k in range(count):
        o = order[k]
        if used_a[ia[o]] or used_b[ib[o]]:
            continue
        used_a[ia[o]] = True
        used_b[ib[o]] = True
        sel[n] = o
        n += 1
        if n == n_r:
            break
    sel = sel[:n]
    lam0 = vals[sel]
    ra = ia[sel]
    rb = ib[sel]
    rho = np.zeros((n, n))
    for r in range(n):
        xa_r = ax[ra[r]]
        ya_r = ay[ra[r]]
        ta_r = aa[ra[r]]
        xb_r = bx[rb[r]]
        yb_r = by[rb[r]]
        tb_r = ba[rb[r]]
        for c in range(r + 1, n):
            dxa = xa_r - ax[ra[c]]
            dya = ya_r - ay[ra[c]]
            dxb = xb_r - bx[rb[c]]
            dyb = yb_r - by[rb[c]]
            d1 = abs(np.sqrt(dxa * dxa + dya * dya) - np.sqrt(dxb * dxb + dyb * dyb))
            if d1 > D1_CUTOFF:
                continue
            d2 = abs(_wrap(_wrap(ta_r - aa[ra[c]]) - _wrap(tb_r - ba[rb[c]])))
            if d2 > D2_CUTOFF:
                continue
            z12 = _sigmoid(d1, MU_P1, TAU_P1) * _sigmoid(d2, MU_P2, TAU_P2)
            phi_a = np.arctan2(dya, dxa)  # direction from minutia c to minutia r
            phi_b = np.arctan2(dyb, dxb)
            d3 = abs(_wrap(_wrap(ta_r - phi_a) - _wrap(tb_r - phi_b)))
            rho[r, c] = z12 * _sigmoid(d3, MU_P3, TAU_P3)
            # the other way round the radial angle is taken from r to c: phi + pi on both sides
            d3 = abs(_wrap(_wrap(aa[ra[c]] - phi_a - PI) - _wrap(ba[rb[c]] - phi_b - PI)))
            rho[c, r] = z12 * _sigmoid(d3, MU_P3, TAU_P3)
    lam = lam0.copy()
    nxt = np.empty(n)
    denom = max(n - 1, 1)
    for _ in range(N_REL):
        for r in range(n):
            acc = 0.0
            for c in range(n):
                acc += rho[r, c] * lam[c]
            nxt[r] = W_R * lam[r] + (1.0 - W_R) * acc / denom
        lam[:] = nxt
    efficiency = lam / lam0
    n_p_full = MIN_NP + np.round(_sigmoid(np.float64(min(n_a, n_b)), MU_P, TAU_P) * (MAX_NP - MIN_NP))
    n_p = min(int(n_p_full), n)
    best = np.argsort(-efficiency, kind="mergesort")[:n_p]
    acc = 0.0
    for k in range(n_p):
        acc += lam[best[k]]
    return acc / n_p_full


@njit(cache=True, parallel=True)
def gallery_scores(ax, ay, aa, abits, avalid, gx, gy, ga, gbits, gvalid, offsets, min_bits):
    """Score of the probe against every template of a packed gallery (template t owns rows
    ``offsets[t]:offsets[t + 1]``)."""
    n_t = offsets.shape[0] - 1
    out = np.zeros(n_t)
    for t in prange(n_t):
        s = offsets[t]
        e = offsets[t + 1]
        out[t] = pair_score(ax, ay, aa, abits, avalid, gx[s:e], gy[s:e], ga[s:e], gbits[s:e], gvalid[s:e],
                            min_bits)
    return out
