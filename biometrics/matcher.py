"""Exact 1:N search over a gallery of fixed-length templates by euclidean distance.

The gallery is one contiguous (capacity, D) matrix with each row's squared norm precomputed, so a scan is
one matrix product: ``|g - q|^2 = |g|^2 - 2 g.q + |q|^2`` (the last term does not change the ranking).
A search streams the matrix once, in row blocks (numpy's BLAS spreads each block's product over the
cores; optionally several Python threads share the blocks too). Each block is reduced to its best
candidate rows per probe with a running threshold (no full sort: one ``min`` reduction per block and probe
decides whether the block holds a candidate at all), the blocks'
candidates are merged, re-scored exactly (float64 differences of the float32 rows) and reduced to one
result per subject (a subject's score is its best template).

Concurrency: searches never lock. Every write publishes a new immutable :class:`ScanSnapshot`; a search
uses the snapshot it started with from start to end. Appends go into spare capacity beyond the rows
any snapshot can see (capacity grows by 1.5x, amortised); removals mark rows dead in a copy of the norm
vector (``+inf``, never selected) instead of moving rows, and the matrix is compacted once a quarter of
its rows are dead. Writers serialise on one lock; readers holding an old snapshot keep its arrays alive.

Compact mode (``compact=True``) scans a float16 copy of the matrix (half the memory) and keeps the
float32 rows in an unlinked memory-mapped temporary file (page cache: the kernel may evict them under
memory pressure and read back only the candidate rows a search re-scores). Candidates are re-scored
exactly in float32/float64 and the candidate set is widened until a bound on the float16 error proves
no other row can enter the top k, so results equal the exact search. It is SLOWER than the float32
scan on this hardware (numpy has no fast float16 product; each block is converted to float32 first):
see docs/performance.md. Use it only for galleries that would not fit in memory otherwise.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biometrics.errors import SubjectNotFound
from biometrics.subject_table import SubjectTable
from biometrics.threadpool import LazyThreadPool

# Below this many rows a search runs in the calling thread only.
PARALLEL_MIN_ROWS = 65_536
# A block's product (probes x rows) holds about this many float32 values (4 MB: 16,384 rows for 64 probes).
BLOCK_VALUES = 1 << 20
# Rows per block when scanning for a single probe (a matrix-vector product per block).
SINGLE_BLOCK_ROWS = 131_072
# Largest candidate set taken in one pass before widening (only when subjects own many templates).
MAX_FIRST_CANDIDATES = 4096

_pool = LazyThreadPool("matcher")


def as_templates(templates: np.ndarray, dim: int) -> np.ndarray:
    """Templates as a float32 (M, dim) array: one (dim,) or several; ValueError if the shape is wrong or a value is
    not finite (every gallery index checks what it stores the same way)."""
    rows = np.atleast_2d(np.asarray(templates, dtype=np.float32))
    if rows.ndim != 2 or rows.shape[1] != dim:
        raise ValueError(f"templates have shape {rows.shape}, the index takes (M, {dim})")
    if not np.isfinite(rows).all():
        raise ValueError("templates must be finite numbers")
    return rows


def as_probes(probes: np.ndarray, dim: int) -> np.ndarray:
    """Probes as a C-contiguous float32 (M, dim) array; ValueError as :func:`as_templates`."""
    q = np.atleast_2d(np.asarray(probes, dtype=np.float32))
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"probes have shape {q.shape}, the index takes (M, {dim})")
    if not np.isfinite(q).all():
        raise ValueError("probes must be finite numbers")
    return np.ascontiguousarray(q)


@dataclass(frozen=True)
class ScanSnapshot:
    """An immutable view of the gallery: rows ``[0, n)`` of the buffers at publication time."""

    n: int
    matrix: np.ndarray  # (n, D) float32, or float16 in compact mode: what the scan reads
    norms: np.ndarray  # (n,) float32 squared norms of ``matrix`` rows; +inf for removed rows
    owners: np.ndarray  # (n,) int32 subject codes
    exact: np.ndarray  # (n, D) float32 rows (the matrix itself, or the memory-mapped copy)
    live: int  # rows not removed
    per_subject: int  # most templates any subject has
    max_norm: float  # largest squared norm of any row (for the rounding bound)
    quant_error: float  # compact mode: max ||row - float16(row)||; 0 otherwise


class SnapshotReads:
    """The reads an index answers from its published :class:`ScanSnapshot` and its subject table: size,
    membership, 1:1 comparison and a subject's templates (float64 distances over the float32 ``exact`` rows).

    Shared by :class:`TemplateIndex` and :class:`biometrics.compact.CompactIndex`, which set ``dim``, ``_lock``
    (held while a write changes the subject table and publishes), ``_subjects`` and ``_snapshot``.
    """

    dim: int
    _lock: threading.Lock
    _subjects: SubjectTable
    _snapshot: ScanSnapshot

    def __len__(self) -> int:
        return self._snapshot.live

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._subjects

    @property
    def subject_count(self) -> int:
        """Number of subjects with at least one template."""
        return len(self._subjects)

    def compare(self, probe: np.ndarray, subject_id: str) -> float:
        """Smallest distance between ``probe`` and the templates of ``subject_id`` (1:1)."""
        q = as_probes(probe, self.dim)[0].astype(np.float64)
        with self._lock:
            rows, snap = self._subjects.rows_of(subject_id), self._snapshot
        if not rows:
            raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
        diff = snap.exact[rows].astype(np.float64) - q[None, :]
        return float(np.sqrt(np.min(np.einsum("ij,ij->i", diff, diff))))

    def templates_of(self, subject_id: str) -> np.ndarray:
        """A copy of the templates of ``subject_id``, (M, D) float32 ((0, D) if unknown)."""
        with self._lock:
            rows, snap = self._subjects.rows_of(subject_id), self._snapshot
        return np.array(snap.exact[rows], dtype=np.float32).reshape(len(rows), self.dim)


class TemplateIndex(SnapshotReads):
    """Templates grouped by subject, searched exhaustively; a subject's score is its best template.

    Thread-safe: searches run lock-free against a consistent snapshot while templates are added or
    removed (a subject's templates added in one call become visible together).

    ``threads``: how many Python threads share a large scan (default 1: one thread, numpy's BLAS
    parallelises each block's product over the cores; on the 2-core reference machine this beats splitting
    the rows over threads whose BLAS calls then compete, see docs/performance.md). ``compact``: float16
    scan with exact float32 re-scoring (see the module docstring); ``store_dir``: where compact mode's
    float32 file lives (default: the system temporary directory).
    """

    def __init__(
        self, dim: int, *, compact: bool = False, threads: int = 1, store_dir: str | None = None
    ) -> None:
        if dim <= 0:
            raise ValueError("the template dimension must be positive")
        self.dim = dim
        self.compact = compact
        self.threads = max(1, threads)
        self._store_dir = store_dir
        self._lock = threading.Lock()
        self._subjects = SubjectTable()  # subject id <-> code (the owners' values), and each subject's rows
        self._n = 0
        self._dead = 0
        self._max_norm = 0.0
        self._quant_error = 0.0
        self._alloc(0)
        self._publish()

    # -- buffers ------------------------------------------------------------------------------------
    def _alloc(self, capacity: int) -> None:
        """Fresh buffers of ``capacity`` rows holding the current first ``self._n`` rows (if any)."""
        old = getattr(self, "_matrix", None)
        n = self._n
        matrix = np.empty((capacity, self.dim), dtype=np.float16 if self.compact else np.float32)
        norms = np.empty(capacity, dtype=np.float32)
        owners = np.empty(capacity, dtype=np.int32)
        if old is not None and n:
            matrix[:n] = self._matrix[:n]
            norms[:n] = self._norms[:n]
            owners[:n] = self._owners[:n]
        if self.compact:
            exact = self._mapped_rows(capacity)
            if old is not None and n:
                exact[:n] = self._exact[:n]
        else:
            exact = matrix
        self._matrix, self._norms, self._owners, self._exact = matrix, norms, owners, exact

    def _mapped_rows(self, capacity: int) -> np.ndarray:
        """A (capacity, D) float32 array backed by an unlinked temporary file."""
        fd, path = tempfile.mkstemp(prefix="templates-", suffix=".f32", dir=self._store_dir)
        try:
            os.ftruncate(fd, max(capacity, 1) * self.dim * 4)
            rows = np.memmap(path, dtype=np.float32, mode="r+", shape=(max(capacity, 1), self.dim))
        finally:
            os.close(fd)
            os.unlink(path)
        return rows[:capacity]

    def _publish(self) -> None:
        n = self._n
        self._snapshot = ScanSnapshot(
            n=n,
            matrix=self._matrix[:n],
            norms=self._norms[:n],
            owners=self._owners[:n],
            exact=self._exact[:n],
            live=n - self._dead,
            per_subject=self._subjects.most_rows,
            max_norm=self._max_norm,
            quant_error=self._quant_error,
        )

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of memory the scanned matrix and its per-row arrays use (allocated capacity)."""
        return self._matrix.nbytes + self._norms.nbytes + self._owners.nbytes

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` templates in all, so that appends up to there allocate nothing (a bulk load
        in pages then holds the gallery once, not up to 2.5 times while its buffers grow)."""
        with self._lock:
            if rows > len(self._matrix):
                self._alloc(rows)

    # -- writes -------------------------------------------------------------------------------------
    def add(self, subject_id: str, templates: np.ndarray) -> None:
        """Append one template (D,) or several (M, D) for ``subject_id`` (visible together)."""
        rows = as_templates(templates, self.dim)
        if len(rows):
            self._append([subject_id] * len(rows), rows)

    def add_many(self, subject_ids: Sequence[str], templates: np.ndarray) -> None:
        """Bulk append: row ``i`` of ``templates`` (M, D) belongs to ``subject_ids[i]``; all visible together.

        Equivalent to ``add(subject_ids[i], templates[i])`` for each ``i`` in order (same rows, same subject
        order), but one vectorised pass and one snapshot: loading a gallery of a million templates this way
        takes seconds instead of a minute.
        """
        rows = as_templates(templates, self.dim)
        if len(subject_ids) != len(rows):
            raise ValueError(f"{len(subject_ids)} subject ids for {len(rows)} templates")
        if len(rows):
            self._append(list(subject_ids), rows)

    def _append(self, subject_ids: list[str], rows: np.ndarray) -> None:
        """Append ``rows`` (M, D) owned by ``subject_ids`` (M,) and publish one snapshot."""
        m = len(rows)
        if self.compact:
            scanned = rows.astype(np.float16)
            approx = scanned.astype(np.float32)
            err = float(np.sqrt(np.einsum("ij,ij->i", rows - approx, rows - approx, dtype=np.float64).max()))
            norms = np.einsum("ij,ij->i", approx, approx)
        else:
            scanned = rows
            err = 0.0
            norms = np.einsum("ij,ij->i", rows, rows)
        with self._lock:
            n = self._n
            if n + m > len(self._matrix):
                self._alloc(max(n + m, int(len(self._matrix) * 1.5) + 1024))
            self._matrix[n : n + m] = scanned
            self._norms[n : n + m] = norms
            if self.compact:
                self._exact[n : n + m] = rows
            self._owners[n : n + m] = self._subjects.append(subject_ids, n)
            self._n = n + m
            self._max_norm = max(self._max_norm, float(norms.max()))
            self._quant_error = max(self._quant_error, err)
            self._publish()

    def remove(self, subject_id: str) -> int:
        """Remove every template of ``subject_id``; returns how many were removed."""
        with self._lock:
            rows = self._subjects.remove(subject_id)
            if not rows:
                return 0
            # Copy-on-write: snapshots in use keep the old norm vector.
            norms = np.empty_like(self._norms)
            norms[: self._n] = self._norms[: self._n]
            norms[rows] = np.inf
            self._norms = norms
            self._dead += len(rows)
            if self._dead * 4 > self._n:
                self._compact_rows()
            self._publish()
            return len(rows)

    def _compact_rows(self) -> None:
        """Rebuild the buffers without dead rows (amortised: runs after n/4 removals)."""
        keep = np.isfinite(self._norms[: self._n])
        new_row = np.cumsum(keep) - 1
        live = int(keep.sum())
        capacity = max(int(live * 1.5) + 1024, 1024)
        matrix = np.empty((capacity, self.dim), dtype=self._matrix.dtype)
        norms = np.empty(capacity, dtype=np.float32)
        owners = np.empty(capacity, dtype=np.int32)
        matrix[:live] = self._matrix[: self._n][keep]
        norms[:live] = self._norms[: self._n][keep]
        owners[:live] = self._owners[: self._n][keep]
        if self.compact:
            exact = self._mapped_rows(capacity)
            exact[:live] = self._exact[: self._n][keep]
        else:
            exact = matrix
        self._subjects.remap(new_row)
        self._matrix, self._norms, self._owners, self._exact = matrix, norms, owners, exact
        self._n, self._dead = live, 0

    # -- reads --------------------------------------------------------------------------------------
    def search(self, probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """For each probe, up to ``k`` (subject_id, distance) pairs, nearest first, one per subject.

        ``probes`` is one template (D,) or a batch (M, D). Distances are exact euclidean distances
        (float64 arithmetic on the stored float32 rows), equal to :meth:`compare`'s.
        """
        q = as_probes(probes, self.dim)
        name = self._subjects.name
        return [[(name(code), dist) for code, dist in found]
                for found in search_snapshot(self._snapshot, q, k, threads=self.threads)]


def search_snapshot(snap: ScanSnapshot, q: np.ndarray, k: int, *, threads: int = 1) -> list[list[tuple[int, float]]]:
    """The exact search of :meth:`TemplateIndex.search` over one snapshot: per probe (rows of the float32 C-contiguous
    ``q``), up to ``k`` (owner code, distance) pairs, nearest first, one per owner. Any index holding float32 rows,
    their squared norms (+inf: removed) and owner codes can build a snapshot and search it this way."""
    if snap.live == 0 or k <= 0:
        return [[] for _ in range(len(q))]
    widen = 8 if snap.matrix.dtype != np.float32 else 0
    first = max(min(k * max(snap.per_subject, 1) + 8 + widen, MAX_FIRST_CANDIDATES), k)
    candidates = _scan(snap, q, first, threads)
    results = []
    for i, (rows, approx) in enumerate(candidates):
        c = first
        while True:
            found = _finish(snap, q[i], rows, approx, k, c)
            if found is not None:
                break
            c *= 4
            rows, approx = _scan(snap, q[i : i + 1], c, threads)[0]
        results.append(found)
    return results


def _finish(
    snap: ScanSnapshot, probe: np.ndarray, rows: np.ndarray, approx: np.ndarray, k: int, c: int
) -> list[tuple[int, float]] | None:
    """Exact re-scoring of one probe's candidates; None if they cannot prove the top k."""
    complete = len(rows) < c  # every live row was a candidate
    boundary = float(approx.max()) if len(approx) else np.inf
    alive = np.isfinite(snap.norms[rows])
    rows = rows[alive]
    diff = snap.exact[rows].astype(np.float64) - probe.astype(np.float64)
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    order = np.lexsort((rows, dist))
    owners = snap.owners[rows[order]]
    _, first = np.unique(owners, return_index=True)
    best = order[np.sort(first)][:k]
    if not complete:
        if len(best) < k:
            return None
        # Any row left out has approx score >= the boundary; bound its true distance from below.
        q2 = float(probe.astype(np.float64) @ probe.astype(np.float64))
        rounding = 1e-5 * (q2 + snap.max_norm) + 1e-12
        floor = np.sqrt(max(boundary + q2 - rounding, 0.0)) - snap.quant_error
        if dist[best[-1]] > floor:
            return None
    return [(int(snap.owners[rows[j]]), float(dist[j])) for j in best]


def _scan(snap: ScanSnapshot, q: np.ndarray, c: int, threads: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per probe, the ``c`` rows of smallest ``|g|^2 - 2 g.q`` (all live rows if fewer), unsorted."""
    n = snap.n
    parts = threads if n >= PARALLEL_MIN_ROWS else 1
    bounds = [n * i // parts for i in range(parts + 1)]
    q2 = -2.0 * q
    if parts == 1:
        found = [_scan_range(snap, q2, c, 0, n)]
    else:
        futures = [
            _pool().submit(_scan_range, snap, q2, c, a, b) for a, b in itertools.pairwise(bounds)
        ]
        found = [f.result() for f in futures]
    m = len(q)
    if len(found) == 1:
        p, r, d = found[0]
    else:
        p, r, d, _ = _keep_best(*(np.concatenate(x) for x in zip(*found, strict=True)), m, c)
    starts = np.searchsorted(p, np.arange(m + 1))
    return [(r[starts[i] : starts[i + 1]], d[starts[i] : starts[i + 1]]) for i in range(m)]


def _keep_best(
    p: np.ndarray, r: np.ndarray, d: np.ndarray, m: int, c: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keep each probe's ``c`` smallest scores; returns them sorted by probe, and per-probe thresholds."""
    order = np.lexsort((d, p))
    p, r, d = p[order], r[order], d[order]
    starts = np.searchsorted(p, np.arange(m))
    rank = np.arange(len(p)) - starts[p]
    keep = rank < c
    p, r, d = p[keep], r[keep], d[keep]
    counts = np.bincount(p, minlength=m)
    threshold = np.full(m, np.inf, dtype=np.float32)
    full = np.flatnonzero(counts >= c)
    if len(full):
        ends = np.searchsorted(p, full, side="right") - 1
        threshold[full] = d[ends]
    return p, r, d, threshold


def _scan_range(
    snap: ScanSnapshot, q2: np.ndarray, c: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan rows ``[start, stop)`` block by block; (probe, row, score) of each probe's best ``c``."""
    m, dim = q2.shape
    block = max(1024, BLOCK_VALUES // m) if m > 1 else SINGLE_BLOCK_ROWS
    out = np.empty(m * block, dtype=np.float32)
    convert = np.empty((block, dim), dtype=np.float32) if snap.matrix.dtype != np.float32 else None
    threshold = np.full(m, np.inf, dtype=np.float32)
    kept: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending_size = 0
    probe_ids = np.arange(m)
    for a in range(start, stop, block):
        b = min(a + block, stop)
        width = b - a
        rows = snap.matrix[a:b]
        if convert is not None:
            np.copyto(convert[:width], rows)
            rows = convert[:width]
        scores = out[: m * width].reshape(m, width)
        if m == 1:
            np.dot(rows, q2[0], out=scores[0])
        else:
            np.matmul(q2, rows.T, out=scores)
        scores += snap.norms[a:b]
        if kept is None and width > c:
            cols = np.argpartition(scores, c - 1, axis=1)[:, :c]
            p = np.repeat(probe_ids, c)
            j = cols.ravel()
        else:
            # One fast reduction per block; only probes with a row under their threshold look further.
            hit = np.flatnonzero(scores.min(axis=1) < threshold)
            if not len(hit):
                p = j = np.empty(0, dtype=np.intp)
            elif m == 1:
                j = np.flatnonzero(scores[0] < threshold[0])
                p = np.zeros(len(j), dtype=np.intp)
            else:  # row by row: a 2-D nonzero over every hit row costs more than the product itself
                found = [np.flatnonzero(scores[i] < threshold[i]) for i in hit]
                p = np.repeat(hit, [len(f) for f in found])
                j = np.concatenate(found)
        if len(p):
            pending.append((p, j + a, scores[p, j]))
            pending_size += len(p)
        if pending and (kept is None or pending_size > m * c or b == stop):
            if kept is not None:
                pending.append(kept)
            pp, rr, dd = (np.concatenate(x) for x in zip(*pending, strict=True))
            *kept_parts, threshold = _keep_best(pp, rr, dd, m, c)
            kept = (kept_parts[0], kept_parts[1], kept_parts[2])
            pending, pending_size = [], 0
    if kept is None:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    return kept
