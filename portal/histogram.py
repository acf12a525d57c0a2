"""Processing-time statistics read off the aggregate histograms of :mod:`biometrics.events`.

Every :class:`~biometrics.events.HourlyRow` carries counts per :data:`~biometrics.events.PROCESSING_BUCKETS_MS`
bucket (plus one open bucket past the last edge). Histograms of several hours or stations merge by adding
them; a percentile is the upper edge of the bucket that holds its rank (so a published p95 of 1,000 ms means
"95 % of decisions took at most 1,000 ms"); a rank in the open bucket is reported as the last edge, marked
open (``>30000``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from biometrics.events import PROCESSING_BUCKETS_MS, percentile_ms

N_BUCKETS = len(PROCESSING_BUCKETS_MS) + 1
PERCENTILES = (50, 90, 95)


def empty() -> list[int]:
    """A histogram with no decisions."""
    return [0] * N_BUCKETS


def merge(histograms: Iterable[Sequence[int]]) -> list[int]:
    """The sum of ``histograms`` (an empty histogram, ``()``, counts as zeros)."""
    total = empty()
    for h in histograms:
        for i, c in enumerate(h):
            total[i] += c
    return total


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q``-th percentile (0 < q <= 100) in ms: the upper edge of the bucket holding the rank.

    ``None`` for an empty histogram; ``math.inf`` when the rank falls in the open last bucket
    (:func:`biometrics.events.percentile_ms`, on the 0..100 scale the portal's pages use).
    """
    value = percentile_ms(histogram, q / 100)
    return None if value is None else float(value)


def mean_ms(histogram: Sequence[int]) -> float | None:
    """The mean processing time in ms, each decision at its bucket's midpoint.

    The first bucket's midpoint is half its edge; the open bucket counts at 1.5 x the last edge (a stated
    assumption: the histogram keeps nothing beyond it).
    """
    n = sum(histogram)
    if n == 0:
        return None
    edges = (0.0, *PROCESSING_BUCKETS_MS)
    total = 0.0
    for i, c in enumerate(histogram):
        if not c:
            continue
        mid = (edges[i] + edges[i + 1]) / 2 if i < len(PROCESSING_BUCKETS_MS) else 1.5 * PROCESSING_BUCKETS_MS[-1]
        total += c * mid
    return total / n
