"""Exact 1:N search that scans int8 templates (a quarter of the float32 bytes) and re-ranks a proven shortlist.

Each gallery template ``g`` (float32) is stored as int8 codes ``c`` with a per-template scale ``s``
(``s = max|g_j| / 127``, ``c = round(g / s)``), beside its exact squared norm ``|g|^2``, its quantisation error
``e = |g - s c|`` and ``|s c|`` (both rounded up to float32). A probe ``q`` is quantised the same way
(``t``, ``d``, ``e_q = |q - t d|``). A compiled kernel (numba, :mod:`biometrics.compact_kernels`) reads only the
codes and computes, per row, the exact integer ``c.d`` and the estimate ``a = |g|^2 - 2 s t (c.d)`` of the
ranking score ``|g|^2 - 2 g.q`` (``|g - q|^2`` less ``|q|^2``). Since ``g.q - s t c.d = (g - s c).q + s c.(q - t d)``,
Cauchy-Schwarz bounds the error by ``e |q| + |s c| e_q``, so every row's true score lies in ``[a - m, a + m]``
with ``m = 2 (e |q| + |s c| e_q)`` plus a float-rounding slack of ``2^-20 (|g|^2 + |q|^2)`` (float32 storage of
``|g|^2`` is within ``2^-24``; the kernel's float64 arithmetic and the float64 re-rank far inside that).

The shortlist is not a fixed size: with ``keep = k x (most templates of any subject)``, ``U`` = the keep-th
smallest upper bound ``a + m`` over the gallery, and the shortlist = every row whose lower bound ``a - m`` is
at most ``U``. ``keep`` rows have a true score at most ``U``; they belong to at least ``k`` subjects, so the
k-th subject's score is at most ``U``, and any row left out (lower bound > ``U``) is strictly worse than
it: the float32 rows of the shortlist, re-ranked in float64 (as :class:`biometrics.matcher.TemplateIndex`
does), give exactly the exact search's top k (same subjects, same order, same distances).
The kernel keeps ``U`` with a running max-heap per probe, so the shortlist is found in the single pass.

:class:`CompactIndex` is a drop-in for ``TemplateIndex`` (same ``search(probes, k)`` contract and writes, with
copy-on-write snapshots); :func:`quantise`, :func:`shortlist` and :func:`rerank` are the parts an index with
its own buffers can call. The kernels are compiled on the first search (or :func:`warm_up`), not at import,
and cached on disk by numba. Figures: docs/performance.md, "Compact int8 scan".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biometrics.matcher import ScanSnapshot, SnapshotReads, as_probes, as_templates, search_snapshot
from biometrics.subject_table import SubjectTable
from biometrics.threadpool import LazyThreadPool

# Below this many rows a search runs in the calling thread only.
PARALLEL_MIN_ROWS = 65_536
# Largest absolute code; int32 holds a dot product of two code vectors up to this dimension.
CODE_MAX = 127
MAX_DIM = (2**31 - 1) // (CODE_MAX * CODE_MAX)
# From this many probes a search multiplies blocks of codes by BLAS instead of the fused kernel.
BATCH_MIN_PROBES = 8
# From this many probes :meth:`CompactIndex.search` scans the float32 rows it keeps for the re-rank with the exact
# float32 GEMM (biometrics.matcher) instead of the codes. Measured at 1,000,000 templates (docs/performance.md): the
# fused int8 kernel wins by 3-6x at 2 and 4 probes in every run; the BLAS product of codes (8 probes or more) won by
# 1.1-1.2x on a quiet machine and lost by 1.4-4x under load (its serial conversion and bounds suffer first when
# another process takes a core), and at 64 probes it was 0.52-1.15x. No memory is added: those rows and their
# norms are held anyway.
EXACT_BATCH_MIN_PROBES = 8
# Values of one block of float32 codes (or of its product with the probes) in the BLAS path: 4 MiB.
BATCH_BLOCK_VALUES = 1 << 20
# Rows quantised per numpy pass (bounds the temporaries of a bulk load).
QUANTISE_CHUNK = 65_536

_pool = LazyThreadPool("compact")


def _kernels():
    """The numba kernels, imported (and compiled or loaded from numba's cache) on first use."""
    from biometrics import compact_kernels

    return compact_kernels


def _round_up(x: np.ndarray) -> np.ndarray:
    """float64 values as float32, never smaller than the input (bounds stay bounds)."""
    f = x.astype(np.float32)
    low = f.astype(np.float64) < x
    f[low] = np.nextafter(f[low], np.float32(np.inf))
    return f


@dataclass(frozen=True)
class Quantised:
    """int8 codes of templates with what the scan's bounds need, one entry per template (row)."""

    codes: np.ndarray  # (n, D) int8
    scales: np.ndarray  # (n,) float32: the template is about scales * codes
    norms: np.ndarray  # (n,) float32 squared norms of the float32 templates (+inf: removed)
    errors: np.ndarray  # (n,) float32, >= |template - scale * codes|
    code_norms: np.ndarray  # (n,) float32, >= |scale * codes|


def quantise(rows: np.ndarray) -> Quantised:
    """Quantise float32 templates (M, D) to int8 with a per-template scale (``max|g_j| / 127``)."""
    rows = np.asarray(rows, dtype=np.float32)
    n, dim = rows.shape
    codes = np.empty((n, dim), dtype=np.int8)
    scales = np.empty(n, dtype=np.float32)
    norms = np.empty(n, dtype=np.float32)
    errors = np.empty(n, dtype=np.float32)
    code_norms = np.empty(n, dtype=np.float32)
    for a in range(0, n, QUANTISE_CHUNK):
        b = min(a + QUANTISE_CHUNK, n)
        g = rows[a:b].astype(np.float64)
        peak = np.abs(g).max(axis=1)
        s = (peak / CODE_MAX).astype(np.float32)
        safe = np.where(s > 0, s, np.float32(1)).astype(np.float64)
        c = np.clip(np.rint(g / safe[:, None]), -CODE_MAX, CODE_MAX)
        approx = c * s.astype(np.float64)[:, None]  # exact: 24-bit scale x 8-bit code
        codes[a:b] = c
        scales[a:b] = s
        with np.errstate(over="ignore"):  # a norm beyond float32 becomes +inf; CompactIndex refuses it
            norms[a:b] = np.einsum("ij,ij->i", g, g)
        diff = g - approx
        errors[a:b] = _round_up(np.sqrt(np.einsum("ij,ij->i", diff, diff)) * (1 + 1e-12))
        code_norms[a:b] = _round_up(np.sqrt(np.einsum("ij,ij->i", approx, approx)) * (1 + 1e-12))
    return Quantised(codes, scales, norms, errors, code_norms)


def shortlist(gallery: Quantised, probes: np.ndarray, keep: int, *, threads: int = 1) -> list[np.ndarray]:
    """Per probe, the rows (sorted) that may be among its ``keep`` nearest live rows; provably a superset.

    Every row whose true score could be at most the ``keep``-th smallest true score is returned, so the
    ``keep`` nearest rows (and every row tied with them) are in it; rows with ``norms`` +inf are never
    returned. ``probes`` (M, D) float32, finite. Fewer than :data:`BATCH_MIN_PROBES` probes: the fused
    int8 kernel, ``threads`` Python threads sharing the rows (it releases the GIL); more: per block of rows,
    the codes as float32 times the probes' codes by BLAS (exact: integers below 2^24), then the same bounds.
    """
    q = np.ascontiguousarray(np.atleast_2d(probes), dtype=np.float32)
    pq = quantise(q)
    q64 = q.astype(np.float64)
    probe_norms = _round_up(np.sqrt(np.einsum("ij,ij->i", q64, q64)) * (1 + 1e-12)).astype(np.float64)
    probe = (pq.scales.astype(np.float64), probe_norms, pq.errors.astype(np.float64), 2.0**-20 * probe_norms**2)
    n, dim = gallery.codes.shape
    keep = max(int(keep), 1)
    kernels = _kernels()
    if len(q) >= BATCH_MIN_PROBES and dim * CODE_MAX * CODE_MAX < 2**24:
        found = [_scan_blas(kernels, gallery, pq.codes, probe, keep)]
    else:
        parts = max(1, min(threads, n // (PARALLEL_MIN_ROWS // 2))) if n >= PARALLEL_MIN_ROWS else 1
        bounds = [n * i // parts for i in range(parts + 1)]
        args = (kernels, gallery, pq.codes, probe, keep)
        if parts == 1:
            found = [_scan_fused(*args, 0, n)]
        else:
            futures = [_pool().submit(_scan_fused, *args, bounds[i], bounds[i + 1]) for i in range(parts)]
            found = [f.result() for f in futures]
    out = []
    for p in range(len(q)):
        uppers = np.concatenate([s.heap[p, : s.heap_len[p]] for s in found])
        threshold = np.partition(uppers, keep - 1)[keep - 1] if len(uppers) >= keep else np.inf
        rows = np.concatenate([s.cand_rows[p, : s.cand_len[p]] for s in found])
        lower = np.concatenate([s.cand_lower[p, : s.cand_len[p]] for s in found])
        out.append(np.sort(rows[lower <= threshold]))
    return out


class _ScanState:
    """One scan's per-probe state: the max-heap of upper bounds, the candidates, the next row to scan."""

    def __init__(self, probes: int, keep: int, start: int) -> None:
        self.heap = np.empty((probes, keep), dtype=np.float64)
        self.heap_len = np.zeros(probes, dtype=np.int64)
        cap = 4 * keep + 64
        self.cand_rows = np.empty((probes, cap), dtype=np.int64)
        self.cand_lower = np.empty((probes, cap), dtype=np.float64)
        self.cand_len = np.zeros(probes, dtype=np.int64)
        self.position = np.full(probes, start, dtype=np.int64)

    def grow(self) -> None:
        """Double the candidate buffers (a probe had more rows within its bound than they held)."""
        m, cap = self.cand_rows.shape
        rows = np.empty((m, 2 * cap), dtype=np.int64)
        lower = np.empty((m, 2 * cap), dtype=np.float64)
        rows[:, :cap] = self.cand_rows
        lower[:, :cap] = self.cand_lower
        self.cand_rows, self.cand_lower = rows, lower

    def buffers(self) -> tuple[np.ndarray, ...]:
        return self.heap, self.heap_len, self.cand_rows, self.cand_lower, self.cand_len


def _scan_fused(
    kernels, gallery: Quantised, probe_codes: np.ndarray, probe: tuple, keep: int, start: int, stop: int
) -> _ScanState:
    """Rows ``[start, stop)`` through the fused int8 kernel (in the calling thread)."""
    state = _ScanState(len(probe_codes), keep, start)
    g = gallery
    args = (g.codes, g.scales, g.norms, g.errors, g.code_norms, probe_codes, *probe, keep, stop, state.position)
    while not kernels.scan_rows(*args, *state.buffers()):
        state.grow()
    return state


def _scan_blas(kernels, gallery: Quantised, probe_codes: np.ndarray, probe: tuple, keep: int) -> _ScanState:
    """Every row, block by block: float32 codes, one BLAS product with the probes' codes, the bounds."""
    n, dim = gallery.codes.shape
    m = len(probe_codes)
    state = _ScanState(m, keep, 0)
    block = max(1024, BATCH_BLOCK_VALUES // max(m, dim))
    rows = np.empty((block, dim), dtype=np.float32)
    dots = np.empty((m, block), dtype=np.float32)
    q = probe_codes.astype(np.float32)
    g = gallery
    for a in range(0, n, block):
        b = min(a + block, n)
        kernels.codes_to_float(g.codes, a, b, rows)
        np.matmul(q, rows[: b - a].T, out=dots[:, : b - a])
        args = (dots, a, b, g.scales, g.norms, g.errors, g.code_norms, *probe, keep, state.position)
        while not kernels.select_rows(*args, *state.buffers()):
            state.grow()
    return state


def rerank(
    rows: np.ndarray, owners: np.ndarray, probe: np.ndarray, candidates: np.ndarray, k: int
) -> list[tuple[int, float]]:
    """Exact top ``k`` (owner, distance) of ``candidates``, one per owner, nearest first.

    Distances are float64 differences of the float32 ``rows`` (as ``TemplateIndex``); ties go to the lower row.
    """
    diff = rows[candidates].astype(np.float64) - probe.astype(np.float64)
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    order = np.lexsort((candidates, dist))
    _, first = np.unique(owners[candidates[order]], return_index=True)
    best = order[np.sort(first)][:k]
    return [(int(owners[candidates[j]]), float(dist[j])) for j in best]


def warm_up() -> None:
    """Compile (or load from numba's cache) the scan kernels now rather than on the first search."""
    gallery = quantise(np.eye(2, 4, dtype=np.float32))
    shortlist(gallery, np.ones((1, 4), dtype=np.float32), 1)
    shortlist(gallery, np.ones((BATCH_MIN_PROBES, 4), dtype=np.float32), 1)


@dataclass(frozen=True)
class _Snapshot(ScanSnapshot):
    """An immutable view of the index: rows ``[0, n)`` of the buffers at publication time, the float32 rows
    (``exact``, for the re-rank and the exact batch scan) with their norms and owners, and their int8 codes."""

    gallery: Quantised  # the int8 codes and what the scan's bounds need


class CompactIndex(SnapshotReads):
    """Templates grouped by subject, searched exactly through an int8 scan; a subject's score is its best template.

    The same contract as :class:`biometrics.matcher.TemplateIndex` (``add``, ``add_many``, ``remove``,
    ``search``, ``compare``, ``templates_of``; lock-free searches on copy-on-write snapshots), with the same
    results: top k equal to the exact float64 search. Memory: the float32 rows stay (for the re-rank) and
    the int8 codes and four float32 per row come on top (N x (D + 16) bytes); the scan reads only those.
    ``threads``: Python threads sharing a large scan (default: one per core; the kernel releases the GIL).
    """

    def __init__(self, dim: int, *, threads: int | None = None) -> None:
        if not 0 < dim <= MAX_DIM:
            raise ValueError(f"the template dimension must be between 1 and {MAX_DIM}")
        self.dim = dim
        self.threads = max(1, threads if threads is not None else os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._subjects = SubjectTable()
        self._n = 0
        self._dead = 0
        self._max_norm = 0.0  # largest squared norm of any row (the exact scan's rounding bound)
        self._alloc(0)
        self._publish()

    # -- buffers ------------------------------------------------------------------------------------
    def _alloc(self, capacity: int, keep: np.ndarray | None = None) -> None:
        """Fresh buffers of ``capacity`` rows holding the current rows (only those in ``keep``, if given)."""
        d = self.dim
        codes = np.empty((capacity, d), dtype=np.int8)
        per_row = [np.empty(capacity, dtype=np.float32) for _ in range(4)]
        owners = np.empty(capacity, dtype=np.int32)
        rows = np.empty((capacity, d), dtype=np.float32)
        n = self._n
        if n:
            old = (self._codes, *self._per_row, self._owners, self._rows)
            new = (codes, *per_row, owners, rows)
            for src, dst in zip(old, new, strict=True):
                part = src[:n] if keep is None else src[:n][keep]
                dst[: len(part)] = part
        self._codes, self._per_row, self._owners, self._rows = codes, per_row, owners, rows

    def _publish(self) -> None:
        n = self._n
        scales, norms, errors, code_norms = (a[:n] for a in self._per_row)
        rows = self._rows[:n]
        self._snapshot = _Snapshot(
            n=n, matrix=rows, norms=norms, owners=self._owners[:n], exact=rows, live=n - self._dead,
            per_subject=self._subjects.most_rows, max_norm=self._max_norm, quant_error=0.0,
            gallery=Quantised(self._codes[:n], scales, norms, errors, code_norms),
        )

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of every buffer (allocated capacity): codes, per-row floats, owners, float32 rows."""
        return self.scan_nbytes + self._owners.nbytes + self._rows.nbytes

    @property
    def scan_nbytes(self) -> int:
        """Bytes a scan reads (allocated capacity): the int8 codes and the four float32 per row."""
        return self._codes.nbytes + sum(a.nbytes for a in self._per_row)

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` templates in all (appends up to there allocate nothing)."""
        with self._lock:
            if rows > len(self._codes):
                self._alloc(rows)

    # -- writes -------------------------------------------------------------------------------------
    def add(self, subject_id: str, templates: np.ndarray) -> None:
        """Append one template (D,) or several (M, D) for ``subject_id`` (visible together)."""
        rows = as_templates(templates, self.dim)
        if len(rows):
            self._append([subject_id] * len(rows), rows)

    def add_many(self, subject_ids: Sequence[str], templates: np.ndarray) -> None:
        """Bulk append: row ``i`` of ``templates`` (M, D) belongs to ``subject_ids[i]``; all visible together."""
        rows = as_templates(templates, self.dim)
        if len(subject_ids) != len(rows):
            raise ValueError(f"{len(subject_ids)} subject ids for {len(rows)} templates")
        if len(rows):
            self._append(list(subject_ids), rows)

    def _append(self, subject_ids: list[str], rows: np.ndarray) -> None:
        quantised = quantise(rows)
        if not np.isfinite(quantised.norms).all():
            raise ValueError("templates are too large (their squared norm overflows float32)")
        m = len(rows)
        with self._lock:
            n = self._n
            if n + m > len(self._codes):
                self._alloc(max(n + m, int(len(self._codes) * 1.5) + 1024))
            self._codes[n : n + m] = quantised.codes
            for dst, src in zip(
                self._per_row, (quantised.scales, quantised.norms, quantised.errors, quantised.code_norms), strict=True
            ):
                dst[n : n + m] = src
            self._rows[n : n + m] = rows
            self._owners[n : n + m] = self._subjects.append(subject_ids, n)
            self._max_norm = max(self._max_norm, float(quantised.norms.max()))
            self._n = n + m
            self._publish()

    def remove(self, subject_id: str) -> int:
        """Remove every template of ``subject_id``; returns how many were removed."""
        with self._lock:
            removed = self._subjects.remove(subject_id)
            if not removed:
                return 0
            norms = self._per_row[1].copy()  # copy-on-write: snapshots in use keep the old vector
            norms[removed] = np.inf
            self._per_row[1] = norms
            self._dead += len(removed)
            if self._dead * 4 > self._n:
                keep = np.isfinite(norms[: self._n])
                new_row = np.cumsum(keep) - 1
                live = int(keep.sum())
                self._alloc(max(int(live * 1.5) + 1024, 1024), keep)
                self._subjects.remap(new_row)
                self._n, self._dead = live, 0
            self._publish()
            return len(removed)

    # -- reads --------------------------------------------------------------------------------------
    def search(self, probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """For each probe, up to ``k`` (subject_id, distance) pairs, nearest first, one per subject.

        ``probes`` is one template (D,) or a batch (M, D). Distances are exact euclidean distances (float64
        arithmetic on the stored float32 rows), equal to :meth:`compare`'s and to ``TemplateIndex``'s.
        """
        q = as_probes(probes, self.dim)
        snap = self._snapshot
        if snap.live == 0 or k <= 0:
            return [[] for _ in range(len(q))]
        if len(q) >= EXACT_BATCH_MIN_PROBES:  # a batch: the float32 GEMM over the rows kept for the re-rank
            name = self._subjects.name
            return [[(name(code), dist) for code, dist in found] for found in search_snapshot(snap, q, k)]
        keep = k * max(snap.per_subject, 1)
        found = shortlist(snap.gallery, q, keep, threads=self.threads)
        return [
            [(self._subjects.name(code), dist) for code, dist in rerank(snap.exact, snap.owners, q[i], rows, k)]
            for i, rows in enumerate(found)
        ]
