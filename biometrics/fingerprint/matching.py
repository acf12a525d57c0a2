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


def cylinder_arrays(t: FingerprintTemplate) -> tuple[np.ndarray, ...]:
    """(x, y, angle, bits, valid) of a template's cylinders, contiguous, as the kernels take them."""
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
        parts = [cylinder_arrays(t) for t in templates]
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
        out = np.zeros(self.n_references)
        if len(self.owner) == 0:
            return out
        per_template = template_scores(probe, self.x, self.y, self.angle, self.bits, self.valid, self.offsets)
        np.maximum.at(out, self.owner, per_template)
        return out


def template_scores(probe: FingerprintTemplate, x: np.ndarray, y: np.ndarray, angle: np.ndarray, bits: np.ndarray,
                    valid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Raw score of ``probe`` against each packed template (template ``t`` owns cylinder rows
    ``offsets[t]:offsets[t + 1]`` of the contiguous float64 ``x``, ``y``, ``angle`` and uint64 ``bits``,
    ``valid``), shape (len(offsets) - 1,). One parallel compiled pass; concurrent calls take turns."""
    from biometrics.fingerprint.kernels import gallery_scores

    with _PARALLEL_LOCK:
        return gallery_scores(*cylinder_arrays(probe), x, y, angle, bits, valid, offsets, float(MIN_MATCHABLE_BITS))


def compare(probe: FingerprintTemplate, reference: Reference) -> float:
    """Raw similarity in [0, 1] of a probe and a reference (best over a reference's impressions)."""
    from biometrics.fingerprint.kernels import pair_score

    group = [reference] if isinstance(reference, FingerprintTemplate) else list(reference)
    best = 0.0
    pa = cylinder_arrays(probe)
    for t in group:
        best = max(best, pair_score(*pa, *cylinder_arrays(t), float(MIN_MATCHABLE_BITS)))
    return float(best)


def compare_gallery(probe: FingerprintTemplate, references: Sequence[Reference] | PackedGallery) -> np.ndarray:
    """Scores of a probe against many references (pack once with ``PackedGallery`` to search repeatedly)."""
    gallery = references if isinstance(references, PackedGallery) else PackedGallery(references)
    return gallery.scores(probe)
