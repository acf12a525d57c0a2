"""Comparison of two MCC templates: local cylinder similarities consolidated by LSS-R.

Local similarity (bit MCC): for cylinders a, b with expanded validities Va, Vb,
``1 - sqrt(|a&Vb ^ b&Va|) / (sqrt(|a&Vb|) + sqrt(|b&Va|))``, where
``|a&Vb ^ b&Va| = |a&Vb| + |b&Va| - 2|a&b|`` (bits are zero outside their own valid cells), so each term
is a popcount of an AND. Pairs whose directions differ by more than ``DELTA_THETA`` or whose valid cells
overlap less than ``MIN_MATCHABLE_CELLS`` score 0.

Global score, Local Similarity Sort with Relaxation (LSS-R) with a one-to-one selection: the
``n_R = min(nA, nB)`` best local pairs, taken greedily so that no minutia of either side is in two of them
(the cheap form of the paper's LSA assignment: a minutia that resembles several others no longer fills the
list with copies of itself), are relaxed ``N_REL`` times against each other's geometric compatibility
(distance, direction difference, radial angle), and the ``n_P`` pairs whose similarity held up best
(efficiency) are averaged.

The kernels are numba-compiled (``kernels.py``); ``compare_reference`` here is the same computation in
plain numpy, one pair at a time, kept as the readable reference and the speed baseline.
"""

from __future__ import annotations

import numpy as np

from biometrics.fingerprint.cylinders import N_CELLS, ND

DELTA_THETA = np.pi / 2.0
MIN_MATCHABLE_CELLS = 0.5  # fraction of the disc's cells two cylinders must share (paper: 0.6; chosen on DB1_B)
MIN_NP, MAX_NP, MU_P, TAU_P = 4, 12, 20.0, 0.4
N_REL, W_R = 5, 0.5
MU_P1, TAU_P1 = 5.0, -8.0 / 5.0
MU_P2, TAU_P2 = np.pi / 12.0, -30.0
MU_P3, TAU_P3 = np.pi / 12.0, -30.0
# Beyond these, the pair compatibility rho is below 1e-13: taken as 0 (skips the costly terms)
D1_CUTOFF = MU_P1 + 30.0 / -TAU_P1
D2_CUTOFF = MU_P2 + 30.0 / -TAU_P2

MIN_MATCHABLE_BITS = MIN_MATCHABLE_CELLS * N_CELLS * ND


def sigmoid(v: np.ndarray | float, mu: float, tau: float) -> np.ndarray | float:
    """Z(v; mu, tau) = 1 / (1 + exp(-tau (v - mu)))."""
    return 1.0 / (1.0 + np.exp(-tau * (v - mu)))


def n_pairs(n_a: int, n_b: int) -> int:
    """n_P: how many relaxed pairs the global score averages."""
    return MIN_NP + round(float(sigmoid(min(n_a, n_b), MU_P, TAU_P)) * (MAX_NP - MIN_NP))


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.mod(a + np.pi, 2.0 * np.pi) - np.pi


def local_similarities(a_angle, a_bits, a_valid, b_angle, b_bits, b_valid) -> np.ndarray:
    """(nA, nB) matrix of local cylinder similarities (numpy reference)."""
    p1 = np.bitwise_count(a_bits[:, None, :] & b_valid[None, :, :]).sum(axis=2, dtype=np.int64)
    p2 = np.bitwise_count(b_bits[None, :, :] & a_valid[:, None, :]).sum(axis=2, dtype=np.int64)
    p3 = np.bitwise_count(a_bits[:, None, :] & b_bits[None, :, :]).sum(axis=2, dtype=np.int64)
    p4 = np.bitwise_count(a_valid[:, None, :] & b_valid[None, :, :]).sum(axis=2, dtype=np.int64)
    norm = np.sqrt(p1) + np.sqrt(p2)
    xor = np.maximum(p1 + p2 - 2 * p3, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(norm > 0, 1.0 - np.sqrt(xor) / norm, 0.0)
    matchable = (np.abs(_wrap(a_angle[:, None] - b_angle[None, :])) <= DELTA_THETA) & (p4 >= MIN_MATCHABLE_BITS)
    return np.where(matchable, sim, 0.0)


def one_to_one_pairs(gamma: np.ndarray, n_r: int) -> np.ndarray:
    """Flat indices into ``gamma`` of up to ``n_r`` pairs with positive similarity, best first, taken greedily
    so that no row (minutia of A) nor column (minutia of B) is used twice."""
    n_a, n_b = gamma.shape
    flat = gamma.ravel()
    used_a = np.zeros(n_a, dtype=bool)
    used_b = np.zeros(n_b, dtype=bool)
    chosen: list[int] = []
    for k in np.argsort(-flat, kind="stable"):
        if flat[k] <= 0 or len(chosen) == n_r:
            break
        i, j = divmod(int(k), n_b)
        if not (used_a[i] or used_b[j]):
            used_a[i] = used_b[j] = True
            chosen.append(int(k))
    return np.asarray(chosen, dtype=np.int64)


def relaxed_score(gamma: np.ndarray, ax, ay, aa, bx, by, ba) -> float:
    """LSS-R global score from a local similarity matrix and the two cylinders' minutiae."""
    n_a, n_b = gamma.shape
    if n_a == 0 or n_b == 0:
        return 0.0
    top = one_to_one_pairs(gamma, min(n_a, n_b))
    if top.size == 0:
        return 0.0
    flat = gamma.ravel()
    ra, rb = top // n_b, top % n_b
    lam0 = flat[top]
    # pairwise geometric compatibility of the selected pairs
    xa, ya, ta = ax[ra], ay[ra], aa[ra]
    xb, yb, tb = bx[rb], by[rb], ba[rb]
    da = np.hypot(xa[:, None] - xa[None, :], ya[:, None] - ya[None, :])
    db = np.hypot(xb[:, None] - xb[None, :], yb[:, None] - yb[None, :])
    d1 = np.abs(da - db)
    d2 = np.abs(_wrap(_wrap(ta[:, None] - ta[None, :]) - _wrap(tb[:, None] - tb[None, :])))
    rad_a = _wrap(ta[:, None] - np.arctan2(ya[:, None] - ya[None, :], xa[:, None] - xa[None, :]))
    rad_b = _wrap(tb[:, None] - np.arctan2(yb[:, None] - yb[None, :], xb[:, None] - xb[None, :]))
    d3 = np.abs(_wrap(rad_a - rad_b))
    rho = sigmoid(d1, MU_P1, TAU_P1) * sigmoid(d2, MU_P2, TAU_P2) * sigmoid(d3, MU_P3, TAU_P3)
    rho[(d1 > D1_CUTOFF) | (d2 > D2_CUTOFF)] = 0.0
    np.fill_diagonal(rho, 0.0)
    n = len(lam0)
    lam = lam0.copy()
    for _ in range(N_REL):
        lam = W_R * lam + (1.0 - W_R) * (rho @ lam) / max(n - 1, 1)
    efficiency = lam / lam0
    n_p = min(n_pairs(n_a, n_b), n)
    best = np.argsort(-efficiency, kind="stable")[:n_p]
    return float(lam[best].sum() / n_pairs(n_a, n_b))
