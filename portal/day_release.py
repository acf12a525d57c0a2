"""The master table of one local day: every count the portal publishes about a day, protected once.

A day's decisions are one table: per station, per local hour and direction, with the totals of each hour,
of each direction over the station's day, of the station's day, and the day's total over all stations. Its
relations form two hierarchies (hours within a station's day within all stations' day; a station's
directions on their own, or within its month: :func:`day_arcs`), a flow network, so the suppression check
is exact (:mod:`portal.suppression`). The overview (every station's day), a station's hour-by-hour page and
its download are read from this one protected table, never protected again on their own; a month's
arrivals are protected once with its days' tables fixed as they were released (:mod:`portal.month_release`).

The release also holds what is published beside the counts: processing-time percentiles where the count they come
from is shown and large enough, the lanes open in an hour whose counts are all shown (lanes are counted per
direction: beside a hidden count they would bound it, one lane saying one direction had nobody), and the share of
decisions within the service target. :class:`DayRelease` keeps what is published (a hidden count has no value in it)
and each station's true number of arrivals (for the month's totals), and is written to the portal's state directory
as it is (:mod:`portal.table_log`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from biometrics.events import ARRIVAL, DIRECTIONS, HourlyRow
from portal import histogram
from portal.disclosure import MIN_COUNT, Published, percentile_allowed, shown
from portal.suppression import Key, Network, Node, suppress

HOURS = range(24)
#: The root node of every master table's network.
ROOT = "root"
Percentiles = dict[int, float | None]


def day_arcs(day: date, stations: Sequence[str], month_node: Callable[[str], Node] | None = None
             ) -> dict[Key, tuple[Node, Node]]:
    """A day's master table over ``stations`` as a flow network (:mod:`portal.suppression`).

    Hours within a station's day within the day (cell -> hour -> station -> day -> root), and each direction
    of a station's day fed from the root, or, for arrivals, from ``month_node(station)`` (the station's
    month, when the day is part of a month's network: :mod:`portal.month_release`). Entries are keyed
    ``(day, kind, ...)``: ``cell`` (station, hour, direction), ``hour`` (station, hour), ``direction``
    (station, direction), ``station`` (station), ``total``.
    """
    arcs: dict[Key, tuple[Node, Node]] = {}
    for s in stations:
        for h in HOURS:
            for d in DIRECTIONS:
                arcs[(day, "cell", s, h, d)] = (("b", day, s, d), ("h", day, s, h))
            arcs[(day, "hour", s, h)] = (("h", day, s, h), ("s", day, s))
        arcs[(day, "station", s)] = (("s", day, s), ("d", day))
        for d in DIRECTIONS:
            parent = month_node(s) if month_node is not None and d == ARRIVAL else ROOT
            arcs[(day, "direction", s, d)] = (parent, ("b", day, s, d))
    arcs[(day, "total")] = (("d", day), ROOT)
    return arcs


def day_lines(day: date, stations: Sequence[str]) -> tuple[tuple[Key, tuple[Key, ...]], ...]:
    """The lines of a day's master table, each a total and the entries it adds up: an hour and its two
    directions, a station's direction and its 24 hours, a station's day and its hours and directions, the day
    and every station's day. A line whose total is hidden is hidden whole (:func:`portal.suppression.suppress`)."""
    lines: list[tuple[Key, tuple[Key, ...]]] = []
    for s in stations:
        for h in HOURS:
            lines.append(((day, "hour", s, h), tuple((day, "cell", s, h, d) for d in DIRECTIONS)))
        for d in DIRECTIONS:
            lines.append(((day, "direction", s, d), tuple((day, "cell", s, h, d) for h in HOURS)))
        lines.append(((day, "station", s), (*((day, "hour", s, h) for h in HOURS),
                                            *((day, "direction", s, d) for d in DIRECTIONS))))
    lines.append(((day, "total"), tuple((day, "station", s) for s in stations)))
    return tuple(lines)


def day_network(day: date, stations: Sequence[str]) -> Network:
    """A day's master table on its own (see :func:`day_arcs`), with its lines (:func:`day_lines`)."""
    arcs = day_arcs(day, stations)
    return Network(arcs, frozenset(k for k in arcs if k[1] != "cell"), day_lines(day, stations))


@dataclass
class Tally:
    """Hourly rows summed: decisions per direction, the processing-time histogram, lanes, decisions in target."""

    counts: list[int] = field(default_factory=lambda: [0] * len(DIRECTIONS))
    hist: list[int] = field(default_factory=histogram.empty)
    lanes: int = 0
    within: int = 0

    def add(self, row: HourlyRow) -> None:
        """Count ``row`` in."""
        self.counts[DIRECTIONS.index(row.direction)] += row.count
        self.hist = histogram.merge([self.hist, row.histogram])
        self.lanes += row.lanes_active
        self.within += row.within_target


def tallies(rows: Iterable[tuple[datetime, HourlyRow]], stations: Sequence[str]) -> dict[str, list[Tally]]:
    """The rows of one local day (each with its local hour) summed per station and local hour."""
    out = {s: [Tally() for _ in HOURS] for s in stations}
    for local, row in rows:
        if row.station in out:
            out[row.station][local.hour].add(row)
    return out


def _values(day: date, tallied: Mapping[str, list[Tally]]) -> dict[Key, int]:
    values: dict[Key, int] = {}
    for s, hours in tallied.items():
        for h, t in enumerate(hours):
            for k, d in enumerate(DIRECTIONS):
                values[(day, "cell", s, h, d)] = t.counts[k]
            values[(day, "hour", s, h)] = sum(t.counts)
        for k, d in enumerate(DIRECTIONS):
            values[(day, "direction", s, d)] = sum(t.counts[k] for t in hours)
        values[(day, "station", s)] = sum(values[(day, "direction", s, d)] for d in DIRECTIONS)
    values[(day, "total")] = sum(values[(day, "station", s)] for s in tallied)
    return values


def _percentiles(hist: Sequence[int], count: Published, public: bool) -> Percentiles:
    """The percentiles of ``hist`` as published: from a shown count large enough for each
    (:func:`~portal.disclosure.percentile_allowed`; any count for the auditors)."""
    if count.suppressed or count.value is None:
        return dict.fromkeys(histogram.PERCENTILES)
    return {q: histogram.percentile(hist, q) if percentile_allowed(count.value, q) or not public else None
            for q in histogram.PERCENTILES}


@dataclass(frozen=True)
class StationDay:
    """One station's day as published."""

    cells: list[list[Published]]  # [hour][direction]
    hours: list[Published]  # per hour, both directions
    directions: list[Published]  # the day per direction
    total: Published
    hour_percentiles: list[Percentiles]
    day_percentiles: Percentiles
    lanes: list[int | None]  # lanes that recorded a decision, per hour
    within_share: float | None  # share of the day's decisions within the service target

    def to_json(self) -> dict[str, Any]:
        """The record kept in the state directory (hidden counts as null)."""
        return {"cells": [[c.public for c in hour] for hour in self.cells], "hours": [c.public for c in self.hours],
                "directions": [c.public for c in self.directions], "total": self.total.public,
                "hour_percentiles": [_pct_json(p) for p in self.hour_percentiles],
                "day_percentiles": _pct_json(self.day_percentiles), "lanes": self.lanes,
                "within_share": self.within_share}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StationDay:
        """A record read back."""
        return cls([[shown(v) for v in hour] for hour in doc["cells"]], [shown(v) for v in doc["hours"]],
                   [shown(v) for v in doc["directions"]], shown(doc["total"]),
                   [_pct_from(p) for p in doc["hour_percentiles"]], _pct_from(doc["day_percentiles"]),
                   list(doc["lanes"]), doc["within_share"])


def _pct_json(p: Percentiles) -> list[float | None]:
    return [p[q] for q in histogram.PERCENTILES]


def _pct_from(values: Sequence[float | None]) -> Percentiles:
    return {q: None if v is None else float(v) for q, v in zip(histogram.PERCENTILES, values, strict=True)}


@dataclass(frozen=True)
class DayRelease:
    """A local day's master table as published (or, for the auditors, unsuppressed).

    ``arrivals`` holds each station's true number of arrivals of the day, hidden or not: the one figure kept
    that is not published, so that the month's arrivals (:mod:`portal.month_release`) are the sums of the
    days as they were released, whatever reaches the store later.
    """

    day: date
    stations: dict[str, StationDay]
    total: Published  # all stations
    arrivals: dict[str, int]

    def station(self, name: str) -> StationDay | None:
        """``name``'s day, or None for a station the release does not list (the store did not know it at the
        release: its day is not published, which is not the same as nobody passing)."""
        return self.stations.get(name)

    def entries(self) -> dict[Key, Published]:
        """Every entry of the day's network (:func:`day_arcs`) as published."""
        out: dict[Key, Published] = {(self.day, "total"): self.total}
        for s, sd in self.stations.items():
            for h in HOURS:
                for k, d in enumerate(DIRECTIONS):
                    out[(self.day, "cell", s, h, d)] = sd.cells[h][k]
                out[(self.day, "hour", s, h)] = sd.hours[h]
            for k, d in enumerate(DIRECTIONS):
                out[(self.day, "direction", s, d)] = sd.directions[k]
            out[(self.day, "station", s)] = sd.total
        return out

    def to_json(self) -> dict[str, Any]:
        """The record kept in the state directory."""
        return {"stations": {s: sd.to_json() for s, sd in self.stations.items()}, "total": self.total.public,
                "arrivals": self.arrivals}

    @classmethod
    def from_json(cls, day: date, doc: Mapping[str, Any]) -> DayRelease:
        """A record read back."""
        return cls(day, {s: StationDay.from_json(v) for s, v in doc["stations"].items()}, shown(doc["total"]),
                   {s: int(v) for s, v in doc["arrivals"].items()})


def _within_share(within: int, n: int, shown_day: bool, threshold: int) -> float | None:
    """The share of a station's ``n`` decisions of the day within the service target, or None (not published).

    Beside the day's total, shown exactly, the share gives back both counts it divides (to 0.1%, exactly for a day
    of under about 500 decisions): it is published only when the decisions within the target and those outside it
    are each none or at least ``threshold``, as a shown count must be."""
    outside = n - within
    if not shown_day or not n or any(0 < c < threshold for c in (within, outside)):
        return None
    return within / n


def release_day(day: date, rows: Iterable[tuple[datetime, HourlyRow]], stations: Sequence[str],
                public: bool = True, threshold: int = MIN_COUNT) -> DayRelease:
    """The master table of local day ``day`` from its hourly rows (each with its local hour), protected once
    (``public``), or unsuppressed for the auditors."""
    tallied = tallies(rows, stations)
    values = _values(day, tallied)
    hidden = suppress(values, day_network(day, list(stations)), threshold)[1] if public else set()

    def entry(*key: Any) -> Published:
        return shown(None if (day, *key) in hidden else values[(day, *key)])

    out = {}
    for s, hours in tallied.items():
        hour_totals = [entry("hour", s, h) for h in HOURS]
        total = entry("station", s)
        day_pct = _percentiles(histogram.merge(t.hist for t in hours), total, public)
        n = values[(day, "station", s)]
        out[s] = StationDay(
            [[entry("cell", s, h, d) for d in DIRECTIONS] for h in HOURS], hour_totals,
            [entry("direction", s, d) for d in DIRECTIONS], total,
            [_percentiles(t.hist, hour_totals[h], public) for h, t in enumerate(hours)], day_pct,
            # lanes only beside an hour whose every count is shown: lanes are counted per direction, so beside
            # hidden direction counts they bound them (one lane: one direction had nobody)
            [None if hour_totals[h].suppressed or any(entry("cell", s, h, d).suppressed for d in DIRECTIONS)
             else t.lanes for h, t in enumerate(hours)],
            _within_share(sum(t.within for t in hours), n, day_pct[50] is not None, threshold if public else 0))
    return DayRelease(day, out, entry("total"), {s: values[(day, "direction", s, ARRIVAL)] for s in tallied})
