"""A month's arrivals per station and over all stations, protected once against its days' released tables.

A month's arrivals at a station are the sum of its days' arrivals, which the day pages publish (or hide):
published on its own, a month total would give back the sum of the hidden days, and a single hidden day
exactly. So a month is protected together with its days: one flow network (:mod:`portal.suppression`) of
every day's master table (:func:`portal.day_release.day_arcs`, each station's arrivals fed from its month)
and the month's totals (each station's month fed from the all-stations month, fed from the root). The
days' tables are fixed as they were released; only the month's totals are chosen: a total that the days'
shown entries add up to anyway is shown, and of the others each is shown (largest first) when, with it and
those shown so far, no hidden entry of any day or of the month is determined; a total from 1 to 9 is
hidden. The values are the sums of the days' arrivals as they were released (:attr:`DayRelease.arrivals`),
so that late data does not make the month disagree with its days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from portal.day_release import ROOT, DayRelease, day_arcs
from portal.disclosure import MIN_COUNT, Published, shown
from portal.suppression import Key, Network, Node, determined, feasible_flow


@dataclass(frozen=True)
class MonthArrivals:
    """A month's arrivals as published: per station, and over all stations."""

    month: date
    stations: dict[str, Published]
    total: Published

    def station(self, name: str | None) -> Published | None:
        """A station's month (``name`` None: all stations), or None for a station the release does not list
        (first seen after the month's release: not published)."""
        return self.total if name is None else self.stations.get(name)

    def to_json(self) -> dict[str, Any]:
        """The record kept in the state directory (hidden counts as null)."""
        return {"stations": {s: p.public for s, p in self.stations.items()}, "total": self.total.public}

    @classmethod
    def from_json(cls, month: date, doc: Mapping[str, Any]) -> MonthArrivals:
        """A record read back."""
        return cls(month, {s: shown(v) for s, v in doc["stations"].items()}, shown(doc["total"]))


def month_network(month: date, days: Sequence[DayRelease], stations: Sequence[str]) -> Network:
    """The month's days and its arrival totals as one flow network (see the module doc)."""
    arcs: dict[Key, tuple[Node, Node]] = {}
    for d in days:
        arcs.update(day_arcs(d.day, stations, month_node=lambda s: ("m", month, s)))
    for s in stations:
        arcs[(month, "month_station", s)] = (("m", month), ("m", month, s))
    arcs[(month, "month_total")] = (ROOT, ("m", month))
    return Network(arcs)


def release_month_arrivals(month: date, days: Sequence[DayRelease], threshold: int = MIN_COUNT) -> MonthArrivals:
    """The month's arrival totals, chosen against its days' released tables (``days``: every day of it)."""
    stations = sorted({s for d in days for s in d.stations})
    network = month_network(month, days, stations)
    truth = {(month, "month_station", s): sum(d.arrivals.get(s, 0) for d in days) for s in stations}
    truth[(month, "month_total")] = sum(truth.values())
    known: dict[Key, int] = dict(truth)
    fixed: set[Key] = set()  # the days' hidden entries
    for d in days:
        for key, figure in d.entries().items():
            if figure.suppressed or figure.value is None:
                fixed.add(key)
            else:
                known[key] = figure.value
    for key in network.arcs:  # a station that a day's release does not list recorded nothing that day
        if key not in known and key not in fixed:
            known[key] = 0
    flow = feasible_flow(network, known, fixed)
    totals = set(truth)
    hidden = set(totals)
    hidden -= set(determined(network, flow, fixed | hidden))  # sums of shown entries: shown, they add nothing
    for key in sorted(hidden, key=lambda k: (k[1] != "month_total", -truth[k], repr(k))):
        if 0 < truth[key] < threshold:
            continue
        if not determined(network, flow, fixed | (hidden - {key})):
            hidden.discard(key)
    assert not determined(network, flow, fixed | hidden), "a month's release must determine nothing hidden"

    def entry(key: Key) -> Published:
        return shown(None if key in hidden else truth[key])

    return MonthArrivals(month, {s: entry((month, "month_station", s)) for s in stations},
                         entry((month, "month_total")))
