"""Traffic and processing-time statistics for auditors and the public portal: no personal data."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass

import numpy as np

from biometrics.storage import now

# Latency percentiles come from the most recent calls of each method.
WINDOW = 10_000


@dataclass(frozen=True)
class CallSummary:
    """Counts and latency percentiles of one method."""

    method: str
    count: int
    by_status: dict[str, int]
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


class TrafficStatistics:
    """Thread-safe counters of calls (by method and status), latencies and decision outcomes."""

    def __init__(self) -> None:
        self.since = now()
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = defaultdict(Counter)
        self._latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))
        self._decisions: Counter[str] = Counter()

    def record_call(self, method: str, status: str, seconds: float) -> None:
        """Count one finished call and its processing time."""
        with self._lock:
            self._counts[method][status] += 1
            self._latency[method].append(seconds * 1000.0)

    def record_decision(self, outcome: str) -> None:
        """Count one decision outcome (verify_match, identify_hit, enrol_duplicate...)."""
        with self._lock:
            self._decisions[outcome] += 1

    def calls(self) -> list[CallSummary]:
        """A summary per method, sorted by method name."""
        with self._lock:
            snapshot = {m: (dict(c), np.array(self._latency[m])) for m, c in self._counts.items()}
        out = []
        for method in sorted(snapshot):
            by_status, ms = snapshot[method]
            p50, p95, p99 = (np.percentile(ms, [50, 95, 99]) if ms.size else (0.0, 0.0, 0.0))
            out.append(CallSummary(method, sum(by_status.values()), by_status,
                                   float(ms.mean()) if ms.size else 0.0, float(p50), float(p95), float(p99)))
        return out

    def decisions(self) -> dict[str, int]:
        """Decision outcome counts."""
        with self._lock:
            return dict(self._decisions)
