"""Lanes to open per hour from measured arrivals and service times: the Erlang C (M/M/c) queue.

Assumptions, stated on the auditors' page: within an hour, travellers arrive as a Poisson process at the
measured rate (decisions in that hour per hour); each lane serves one traveller at a time with exponential
service times of the measured mean (the histogram's mean processing time plus a fixed handling time for
walking up, placing the document and looking at the camera, which the server does not see); one queue
feeds all open lanes, first come first served, nobody leaves the queue; each hour is in steady state
(arrival waves shorter than an hour are averaged, so the plan is a lower bound at the peak of a wave).

With ``c`` lanes, offered load ``a = lambda / mu`` (Erlangs) and ``c > a``, the probability of waiting at
all is Erlang's C formula, and the waiting time W satisfies ``P(W > t) = C(c, a) * exp(-(c*mu - lambda)*t)``.
The plan opens the smallest ``c`` whose ``P(W > target) <= 1 - 0.95``, i.e. whose p95 wait is within the
target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def erlang_b(c: int, a: float) -> float:
    """Erlang's B (loss) formula by the stable recursion B(0)=1, B(k) = a B(k-1) / (k + a B(k-1))."""
    if c < 0 or a < 0:
        raise ValueError("lanes and load must be non-negative")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """Erlang's C formula: the probability that an arrival waits, with ``c`` servers and load ``a`` Erlangs.

    1.0 when the queue is unstable (``a >= c``).
    """
    if c <= 0 or a >= c:
        return 1.0
    if a == 0:
        return 0.0
    b = erlang_b(c, a)
    return c * b / (c - a * (1 - b))


def wait_exceeds(c: int, arrivals_per_s: float, service_s: float, t_s: float) -> float:
    """P(W > t) for an M/M/c queue: C(c, a) exp(-(c mu - lambda) t); 1.0 when unstable."""
    if arrivals_per_s <= 0:
        return 0.0
    mu = 1.0 / service_s
    a = arrivals_per_s / mu
    if a >= c:
        return 1.0
    return erlang_c(c, a) * math.exp(-(c * mu - arrivals_per_s) * t_s)


def wait_percentile(c: int, arrivals_per_s: float, service_s: float, q: float = 0.95) -> float:
    """The ``q`` quantile of the wait (s): 0 when P(wait) <= 1 - q; inf when unstable."""
    if arrivals_per_s <= 0:
        return 0.0
    mu = 1.0 / service_s
    a = arrivals_per_s / mu
    if a >= c:
        return math.inf
    p_wait = erlang_c(c, a)
    if p_wait <= 1 - q:
        return 0.0
    return math.log(p_wait / (1 - q)) / (c * mu - arrivals_per_s)


def lanes_needed(arrivals_per_s: float, service_s: float, target_wait_s: float, q: float = 0.95,
                 max_lanes: int = 1000) -> int:
    """The smallest number of lanes whose ``q`` quantile of the wait is within ``target_wait_s``.

    0 when nobody arrives. Raises ``ValueError`` for a non-positive service time.
    """
    if service_s <= 0:
        raise ValueError("service time must be positive")
    if arrivals_per_s <= 0:
        return 0
    c = max(1, math.floor(arrivals_per_s * service_s) + 1)
    while c <= max_lanes:
        if wait_exceeds(c, arrivals_per_s, service_s, target_wait_s) <= 1 - q:
            return c
        c += 1
    raise ValueError(f"more than {max_lanes} lanes needed")


@dataclass(frozen=True)
class HourPlan:
    """One hour of the staffing plan."""

    hour: int  # local hour of day
    arrivals: int  # decisions in the hour
    service_s: float | None  # mean service time used (processing + handling)
    lanes_needed: int
    lanes_open: int  # lanes that recorded decisions in that hour
    p95_wait_open_s: float | None  # the model's p95 wait with the lanes that were open

    @property
    def verdict(self) -> str:
        """``short`` (fewer lanes than needed), ``over`` (more), ``ok`` or ``idle``."""
        if self.arrivals == 0:
            return "idle"
        if self.lanes_open < self.lanes_needed:
            return "short"
        if self.lanes_open > self.lanes_needed:
            return "over"
        return "ok"


def plan_hour(hour: int, arrivals: int, processing_mean_ms: float | None, lanes_open: int,
              handling_s: float, target_wait_s: float, q: float = 0.95) -> HourPlan:
    """The plan for one hour from its decision count, mean processing time and the lanes that were open."""
    if arrivals == 0 or processing_mean_ms is None:
        return HourPlan(hour, arrivals, None, 0, lanes_open, None)
    service_s = processing_mean_ms / 1000.0 + handling_s
    rate = arrivals / 3600.0
    needed = lanes_needed(rate, service_s, target_wait_s, q)
    p95_open = wait_percentile(lanes_open, rate, service_s, q) if lanes_open > 0 else math.inf
    return HourPlan(hour, arrivals, service_s, needed, lanes_open, p95_open)
