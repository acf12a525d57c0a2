"""Minutiae from a ridge skeleton: detection by crossing number, direction by ridge tracing,
and removal of the false minutiae that thinning and noise produce (spurs, bridges, broken ridges,
the border of the print).

Direction convention (consistent under the ridge/valley duality, so an ending seen as a bifurcation
in another impression keeps its angle): an ending points along its ridge, into the ridge; a
bifurcation points between its two branches, away from its stem. Angles are radians in [0, 2*pi),
image axes (x right, y down).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from biometrics.fingerprint.skeleton import NEIGHBOURS, crossing_number

ENDING = 0
BIFURCATION = 1

MINUTIA_DTYPE = np.dtype([("x", "f4"), ("y", "f4"), ("angle", "f4"), ("kind", "u1"), ("quality", "u1")])

TRACE_PERIODS = 1.6  # length of a traced branch, in ridge periods
SPUR_PERIODS = 0.8  # a branch ending (or meeting another minutia) sooner than this is an artefact
BROKEN_PERIODS = 1.8  # two facing endings closer than this are one broken ridge
CLUSTER_PERIODS = 0.5  # minutiae closer than this to each other are noise
BORDER_PERIODS = 1.0  # minutiae closer than this to the edge of the print are the edge, not the finger
BRIDGE_PERIODS = 1.5  # a branch across the ridge flow meeting a junction sooner than this is a bridge
BRIDGE_ANGLE = np.pi / 4  # "across the flow": the branch deviates more than this from the ridge orientation
MAX_MINUTIAE = 100


def _walk(skel: np.ndarray, y: int, x: int, first: tuple[int, int], length: int) -> tuple[int, int, int, bool]:
    """Follow the skeleton from (y, x) through ``first`` for up to ``length`` steps.

    Returns (y_end, x_end, steps, stopped_early): stopped_early when the line ended or met a junction.
    """
    h, w = skel.shape
    prev = (y, x)
    cur = first
    visited = {prev, cur}
    for step in range(1, length):
        cy, cx = cur
        nexts = []
        for dy, dx in NEIGHBOURS:
            ny, nx = cy + dy, cx + dx
            if 0 <= ny < h and 0 <= nx < w and skel[ny, nx] and (ny, nx) not in visited:
                # skip pixels that are also neighbours of the previous pixel (corner shortcuts)
                if abs(ny - prev[0]) <= 1 and abs(nx - prev[1]) <= 1:
                    continue
                nexts.append((ny, nx))
        if len(nexts) != 1:
            return cy, cx, step, True
        prev, cur = cur, nexts[0]
        visited.add(cur)
    return cur[0], cur[1], length, False


def _branch_starts(skel: np.ndarray, y: int, x: int) -> list[tuple[int, int]]:
    """One starting pixel per branch leaving (y, x): per run of set neighbours, 4-neighbours first."""
    h, w = skel.shape
    flags = []
    for dy, dx in NEIGHBOURS:
        ny, nx = y + dy, x + dx
        flags.append(bool(0 <= ny < h and 0 <= nx < w and skel[ny, nx]))
    if all(flags):
        return []
    start = flags.index(False)
    runs: list[list[int]] = []
    for k in range(1, 9):
        i = (start + k) % 8
        if flags[i]:
            if runs and runs[-1][-1] == (i - 1) % 8 and flags[(i - 1) % 8]:
                runs[-1].append(i)
            else:
                runs.append([i])
    starts = []
    for run in runs:
        even = [i for i in run if i % 2 == 0]  # 4-neighbours (E, N, W, S) are even indices
        i = even[0] if even else run[0]
        starts.append((y + NEIGHBOURS[i][0], x + NEIGHBOURS[i][1]))
    return starts


def _across(dx: float, dy: float, theta: float) -> bool:
    """Whether the vector (dx, dy) runs across the ridge orientation ``theta`` (more than ``BRIDGE_ANGLE``)."""
    if dx == 0 and dy == 0:
        return False
    diff = abs(np.angle(np.exp(2j * (np.arctan2(dy, dx) - theta)))) / 2.0
    return bool(diff > BRIDGE_ANGLE)


def _closest_orientation(angle: float, theta: float) -> float:
    """The direction theta or theta + pi nearest to ``angle``."""
    diff = np.angle(np.exp(1j * (angle - theta)))
    return float(np.mod(theta if abs(diff) <= np.pi / 2 else theta + np.pi, 2 * np.pi))


def extract_minutiae(skel: np.ndarray, mask: np.ndarray, theta: np.ndarray, coherence: np.ndarray,
                     period: float) -> np.ndarray:
    """Minutiae of a skeleton as a structured array of ``MINUTIA_DTYPE``, best quality first."""
    cn = crossing_number(skel)
    border = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    trace_len = max(6, round(TRACE_PERIODS * period))
    spur_len = SPUR_PERIODS * period
    candidates = []
    for kind, cn_value in ((ENDING, 1), (BIFURCATION, 3)):
        ys, xs = np.nonzero(cn == cn_value)
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
            if border[y, x] < BORDER_PERIODS * period:
                continue
            starts = _branch_starts(skel, y, x)
            if len(starts) != (1 if kind == ENDING else 3):
                continue
            traces = [_walk(skel, y, x, s, trace_len) for s in starts]
            if any(early and steps < spur_len for _, _, steps, early in traces):
                continue  # spur, bridge, hole or short ridge
            if BRIDGE_PERIODS and any(early and steps < BRIDGE_PERIODS * period
                                      and _across(tx - x, ty - y, float(theta[y, x]))
                                      for ty, tx, steps, early in traces):
                continue  # a bridge (or spur) across the ridge flow
            vectors = [np.array([tx - x, ty - y], dtype=np.float64) for ty, tx, _, _ in traces]
            if kind == ENDING:
                direction = vectors[0]
            else:
                units = [v / max(np.linalg.norm(v), 1e-9) for v in vectors]
                # the stem is the branch pointing most away from the other two
                stem = min(range(3), key=lambda i, u=units: float(u[i] @ (u[(i + 1) % 3] + u[(i + 2) % 3])))
                direction = -units[stem]
            angle = float(np.arctan2(direction[1], direction[0]))
            angle = _closest_orientation(angle, float(theta[y, x]))
            q = float(coherence[y, x]) * min(1.0, border[y, x] / (3.0 * period))
            candidates.append((x, y, angle, kind, q))
    if not candidates:
        return np.zeros(0, dtype=MINUTIA_DTYPE)
    minutiae = np.array(candidates, dtype=[("x", "f8"), ("y", "f8"), ("angle", "f8"), ("kind", "u1"),
                                            ("quality", "f8")])
    minutiae = _remove_pairs(minutiae, period)
    order = np.argsort(-minutiae["quality"], kind="stable")[:MAX_MINUTIAE]
    minutiae = minutiae[order]
    out = np.zeros(len(minutiae), dtype=MINUTIA_DTYPE)
    for name in ("x", "y", "angle", "kind"):
        out[name] = minutiae[name]
    out["quality"] = np.clip(np.round(100.0 * minutiae["quality"]), 0, 100)
    return out


def _remove_pairs(m: np.ndarray, period: float) -> np.ndarray:
    """Drop broken-ridge pairs (facing endings) and clusters of minutiae too close together."""
    if len(m) < 2:
        return m
    dx = m["x"][:, None] - m["x"][None, :]
    dy = m["y"][:, None] - m["y"][None, :]
    dist = np.hypot(dx, dy)
    np.fill_diagonal(dist, np.inf)
    drop = np.zeros(len(m), dtype=bool)
    # clusters
    drop |= (dist < CLUSTER_PERIODS * period).any(axis=1)
    # facing endings: directions roughly opposite and each pointing away from the other
    ending = m["kind"] == ENDING
    ang_diff = np.abs(np.angle(np.exp(1j * (m["angle"][:, None] - m["angle"][None, :]))))
    facing = (dist < BROKEN_PERIODS * period) & ending[:, None] & ending[None, :] & (ang_diff > 2 * np.pi / 3)
    drop |= facing.any(axis=1)
    return m[~drop]
