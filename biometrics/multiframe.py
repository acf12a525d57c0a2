"""Several face samples of one traveller, one comparison: how the frames of a burst (or several photographs
sent in one call) are combined before they meet the gallery.

Three rules, all pure functions of the probes' templates and qualities:

- ``best``: every frame is compared and the nearest distance counts (the best frame wins);
- ``mean``: the frames' templates are averaged into one (rescaled to their mean length, so that averaging
  does not pull the template towards the origin of the embedding) and that template is compared;
- ``quality``: as ``mean``, each frame weighted by its quality (0..100).

The rule the service uses is :data:`DEFAULT_RULE`, chosen on a development split of LFW (docs/benchmarks.md,
"Several frames per traveller", gives the figures and the reason).

``best`` takes the minimum of k distances: for an impostor, that is up to k times as likely to fall under a
threshold as one distance, so its false-match score loses ``log10(k)``
(:func:`biometrics.fingerprint.fusion.best_of_k`). An averaged template is one comparison, but of a template
nearer the centre of the embedding's cloud: measured on LFW, its false matches at a single-comparison
threshold are about twice as many for two frames, so the service takes ``log10(k)`` off every combined score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RULES = ("best", "mean", "quality")
DEFAULT_RULE = "mean"
_MIN_WEIGHT = 1.0  # a frame of quality 0 still counts a little: the quality measure is not a match score
# An enrolment's face samples must agree: a pair scoring under this false-match score (FMR 10^-1.5, about 3%) is
# likelier two people than one. The figures (same-person pairs refused, different-person pairs caught, at 1.0, 1.5
# and 2.0 on lfw-dev's 1,000 pairs) and the command that gives them: docs/benchmarks.md, "Enrolment agreement".
MIN_ENROL_AGREEMENT = 1.5


def check_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`RULES`; ValueError otherwise."""
    if rule not in RULES:
        raise ValueError(f"unknown multi-frame rule {rule!r}: one of {', '.join(RULES)}")
    return rule


def _as_batch(templates: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    batch = np.asarray(templates, dtype=np.float64)
    if batch.ndim == 1:
        batch = batch[None, :]
    if batch.ndim != 2 or len(batch) == 0:
        raise ValueError("probe templates must be a non-empty (k, d) array")
    return batch


def weighted_mean_template(templates: Sequence[np.ndarray] | np.ndarray,
                           weights: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """The (weighted) mean of templates, rescaled to their (weighted) mean length."""
    batch = _as_batch(templates)
    w = np.ones(len(batch)) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != (len(batch),) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be one non-negative finite value per template, not all zero")
    w = w / w.sum()
    mean = w @ batch
    length = float(np.linalg.norm(mean))
    target = float(w @ np.linalg.norm(batch, axis=1))
    return mean * (target / length) if length > 0 else mean


def probe_templates(templates: Sequence[np.ndarray] | np.ndarray, qualities: Sequence[float] | None = None,
                    rule: str = DEFAULT_RULE) -> np.ndarray:
    """The templates to compare with the gallery for one traveller's frames, (m, d) float32.

    ``best``: all k frames (the caller keeps the nearest distance); ``mean``: their mean; ``quality``: their
    mean weighted by quality (``qualities`` one per frame, 0..100; a frame of quality 0 keeps a small weight).
    One frame is returned unchanged by every rule.
    """
    check_rule(rule)
    batch = _as_batch(templates)
    if len(batch) == 1 or rule == "best":
        return batch.astype(np.float32)
    if rule == "mean":
        return weighted_mean_template(batch)[None, :].astype(np.float32)
    if qualities is None or len(qualities) != len(batch):
        raise ValueError("the quality rule needs one quality per frame")
    weights = np.maximum(np.asarray(qualities, dtype=np.float64), _MIN_WEIGHT)
    return weighted_mean_template(batch, weights)[None, :].astype(np.float32)


def probe_distance(templates: Sequence[np.ndarray] | np.ndarray, qualities: Sequence[float] | None,
                   reference: np.ndarray, rule: str = DEFAULT_RULE) -> float:
    """The distance between one traveller's frames, combined by ``rule``, and one reference template."""
    probes = probe_templates(templates, qualities, rule).astype(np.float64)
    ref = np.asarray(reference, dtype=np.float64).ravel()
    return float(np.min(np.linalg.norm(probes - ref[None, :], axis=1)))


def disagreeing_pairs(templates: Sequence[np.ndarray] | np.ndarray,
                      score: Callable[[np.ndarray], np.ndarray], min_score: float = MIN_ENROL_AGREEMENT
                      ) -> list[tuple[int, int, float]]:
    """The pairs (i, j, s) of samples meant to be of one person whose false-match score ``s`` (``score`` of
    their distance) is under ``min_score``, i < j, worst first; empty when every pair agrees."""
    batch = _as_batch(templates)
    i, j = np.triu_indices(len(batch), k=1)
    scores = np.asarray(score(np.linalg.norm(batch[i] - batch[j], axis=1)), dtype=np.float64).reshape(-1)
    low = [(int(a), int(b), float(s)) for a, b, s in zip(i, j, scores, strict=True) if s < min_score]
    return sorted(low, key=lambda pair: pair[2])
