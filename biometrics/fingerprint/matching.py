"""1:1 and 1:N comparison of fingerprint templates (numba kernels over packed arrays).

A reference may be one template or several impressions of the same finger (a sequence of templates):
its score is then the best over its impressions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from biometrics.fingerprint.similarity import MIN_MATCHABLE_BITS
from biometrics.fingerprint.template import FingerprintTemplate

Reference = FingerprintTemplate | Sequence[FingerprintTemplate]

# numba's parallel kernels are not safe to launch from several threads at once under every threading
# layer (the default "workqueue" one is not); a search already uses every core, so searches take turns.
_PARALLEL_LOCK = threading.Lock()


def _arrays(t: FingerprintTemplate) -> tuple[np.ndarray, ...]:
    x, y, a = t.cylinder_geometry()
    return x, y, a, np.ascontiguousarray(t.bits), np.ascontiguousarray(t.valid)


class PackedGallery:
    """Templates concatenated into contiguous arrays, ready for ``gallery_scores``.

    ``owner[k]`` is the index of the reference (as passed in) that template ``k`` belongs to.
    """

    def __init__(self, references: Sequence[Reference]) -> None:
        templates: list[FingerprintTemplate] = []
        owner: list[int] = []
        for index, ref in enumerate(references):
            group = [ref] if isinstance(ref, FingerprintTemplate) else list(ref)
            for t in group:
                if not isinstance(t, FingerprintTemplate):
                    raise TypeError("a fingerprint reference is a FingerprintTemplate or a sequence of them")
                templates.append(t)
                owner.append(index)
        self.n_references = len(references)
        self.owner = np.asarray(owner, dtype=np.int64)
        counts = np.array([t.cylinder_count for t in templates], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        parts = [_arrays(t) for t in templates]
        from biometrics.fingerprint.cylinders import N_WORDS

        def cat(i: int, dtype, shape_tail=()) -> np.ndarray:
            if not parts:
                return np.zeros((0, *shape_tail), dtype=dtype)
            return np.ascontiguousarray(np.concatenate([p[i] for p in parts]).astype(dtype))

        self.x = cat(0, np.float64)
        self.y = cat(1, np.float64)
        self.angle = cat(2, np.float64)
        self.bits = cat(3, np.uint64, (N_WORDS,))
        self.valid = cat(4, np.uint64, (N_WORDS,))

    def __len__(self) -> int:
        return self.n_references

    def scores(self, probe: FingerprintTemplate) -> np.ndarray:
        """Best score of ``probe`` against each reference, shape (n_references,)."""
        from biometrics.fingerprint.kernels import gallery_scores

        out = np.zeros(self.n_references)
        if len(self.owner) == 0:
            return out
        with _PARALLEL_LOCK:
            per_template = gallery_scores(*_arrays(probe), self.x, self.y, self.angle, self.bits, self.valid,
                                          self.offsets, float(MIN_MATCHABLE_BITS))
        np.maximum.at(out, self.owner, per_template)
        return out


def compare(probe: FingerprintTemplate, reference: Reference) -> float:
    """Raw similarity in [0, 1] of a probe and a reference (best over a reference's impressions)."""
    from biometrics.fingerprint.kernels import pair_score

    group = [reference] if isinstance(reference, FingerprintTemplate) else list(reference)
    best = 0.0
    pa = _arrays(probe)
    for t in group:
        best = max(best, pair_score(*pa, *_arrays(t), float(MIN_MATCHABLE_BITS)))
    return float(best)


def compare_gallery(probe: FingerprintTemplate, references: Sequence[Reference] | PackedGallery) -> np.ndarray:
    """Scores of a probe against many references (pack once with ``PackedGallery`` to search repeatedly)."""
    gallery = references if isinstance(references, PackedGallery) else PackedGallery(references)
    return gallery.scores(probe)
