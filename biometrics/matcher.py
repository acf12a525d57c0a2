"""Exact 1:N search over a gallery of fixed-length templates by euclidean distance.

The gallery is one contiguous (N, D) float32 matrix with each row's squared norm precomputed, so a
search is one matrix-vector product: ``|g - q|^2 = |g|^2 + |q|^2 - 2 g.q``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from biometrics.errors import SubjectNotFound


class TemplateIndex:
    """Templates grouped by subject, searched exhaustively; a subject's score is its best template.

    Thread-safe: searches run against a consistent snapshot while templates are added or removed.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._norms = np.zeros(0, dtype=np.float32)
        self._owners: list[str] = []
        self._rows: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._owners)

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._rows

    @property
    def subject_count(self) -> int:
        """Number of subjects with at least one template."""
        return len(self._rows)

    def add(self, subject_id: str, templates: np.ndarray) -> None:
        """Append one template (D,) or several (M, D) for ``subject_id``."""
        rows = np.atleast_2d(np.asarray(templates, dtype=np.float32))
        if rows.shape[1] != self.dim:
            raise ValueError(f"templates have {rows.shape[1]} dimensions, the index {self.dim}")
        with self._lock:
            start = len(self._owners)
            self._matrix = np.concatenate([self._matrix, rows])
            self._norms = np.concatenate([self._norms, np.einsum("ij,ij->i", rows, rows)])
            self._owners.extend([subject_id] * len(rows))
            self._rows.setdefault(subject_id, []).extend(range(start, start + len(rows)))

    def remove(self, subject_id: str) -> int:
        """Remove every template of ``subject_id``; returns how many were removed."""
        with self._lock:
            rows = self._rows.pop(subject_id, None)
            if not rows:
                return 0
            keep = np.ones(len(self._owners), dtype=bool)
            keep[rows] = False
            self._matrix = self._matrix[keep]
            self._norms = self._norms[keep]
            self._owners = [o for o, k in zip(self._owners, keep, strict=True) if k]
            self._rows = {}
            for i, owner in enumerate(self._owners):
                self._rows.setdefault(owner, []).append(i)
            return len(rows)

    def search(self, probes: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """For each probe, up to ``k`` (subject_id, distance) pairs, nearest first, one per subject."""
        q = np.atleast_2d(np.asarray(probes, dtype=np.float32))
        with self._lock:
            matrix, norms, owners = self._matrix, self._norms, self._owners
        if not owners or k <= 0:
            return [[] for _ in range(len(q))]
        d2 = norms[None, :] - 2.0 * (q @ matrix.T) + np.einsum("ij,ij->i", q, q)[:, None]
        results = []
        for row in d2:
            best: dict[str, float] = {}
            for i in np.argsort(row, kind="stable"):
                owner = owners[i]
                if owner not in best:
                    best[owner] = float(np.sqrt(max(row[i], 0.0)))
                    if len(best) == k:
                        break
            results.append(list(best.items()))
        return results

    def compare(self, probe: np.ndarray, subject_id: str) -> float:
        """Smallest distance between ``probe`` and the templates of ``subject_id`` (1:1)."""
        with self._lock:
            rows = self._rows.get(subject_id)
            if not rows:
                raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
            refs = self._matrix[rows]
        diff = refs - np.asarray(probe, dtype=np.float32)[None, :]
        return float(np.sqrt(np.min(np.einsum("ij,ij->i", diff, diff))))

    def templates_of(self, subject_id: str) -> np.ndarray:
        """A copy of the templates of ``subject_id``, (M, D)."""
        with self._lock:
            rows: Sequence[int] = self._rows.get(subject_id, [])
            return self._matrix[list(rows)].copy()
