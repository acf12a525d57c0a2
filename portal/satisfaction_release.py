"""The master table of one month's kiosk ratings: every satisfaction figure of the month, protected once.

The month's ratings are one table: stations x the four ratings, with each station's number of ratings, the
all-stations count of each rating and the grand total (a two-way table with its margins: the suppression
check is exact). A station's row and the all-stations row of ``/satisfaction`` are rows of this one
protected table, so that the all-stations row minus the other stations' rows gives back nothing hidden.
The share of positive ratings is published for a row whose four counts and total are all shown, from at
least :data:`~portal.disclosure.MIN_COUNT` ratings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from biometrics.events import POSITIVE_RATINGS, RATINGS, SatisfactionRow
from portal.disclosure import MIN_COUNT, Published, protect, shown, unprotected

#: The key of the all-stations row.
ALL = ""


@dataclass(frozen=True)
class RatingsRow:
    """One row as published: the count of each rating, their total and the share positive."""

    counts: list[Published]
    total: Published
    share_positive: float | None

    @classmethod
    def of(cls, counts: list[Published], total: Published) -> RatingsRow:
        """The row with its share positive where every figure of it is shown."""
        whole = not total.suppressed and not any(c.suppressed for c in counts) and (total.value or 0) >= MIN_COUNT
        share = None
        if whole and total.value:
            share = sum(counts[r - 1].value or 0 for r in POSITIVE_RATINGS) / total.value
        return cls(counts, total, share)


@dataclass(frozen=True)
class SatisfactionRelease:
    """A month's ratings as published: one row per station and the all-stations row (key :data:`ALL`)."""

    month: date
    rows: dict[str, RatingsRow]

    def row(self, station: str | None) -> RatingsRow | None:
        """A station's row (``station`` None: all stations), or None for a row the release does not have (a
        station first seen after the month's release: not published)."""
        return self.rows.get(ALL if station is None else station)

    def to_json(self) -> dict[str, Any]:
        """The record kept in the state directory (hidden counts as null)."""
        return {s: [*(c.public for c in r.counts), r.total.public] for s, r in self.rows.items()}

    @classmethod
    def from_json(cls, month: date, doc: Mapping[str, Sequence[int | None]]) -> SatisfactionRelease:
        """A record read back."""
        return cls(month, {s: RatingsRow.of([shown(v) for v in values[:-1]], shown(values[-1]))
                           for s, values in doc.items()})


def release_month(month: date, rows: Iterable[SatisfactionRow], stations: Sequence[str],
                  public: bool = True) -> SatisfactionRelease:
    """The master table of ``month``'s ratings (the month's rows of the stations) over ``stations``, protected once
    (``public``) or unsuppressed for the auditors."""
    sums = {s: [0] * len(RATINGS) for s in stations}
    for row in rows:
        if row.station in sums:
            sums[row.station] = [a + b for a, b in zip(sums[row.station], row.counts, strict=True)]
    names = list(sums)
    if not names:
        return SatisfactionRelease(month, {})
    t = (protect if public else unprotected)([sums[s] for s in names])
    out = {s: RatingsRow.of(_kept(t.cells[i]), _kept([t.row_totals[i]])[0]) for i, s in enumerate(names)}
    out[ALL] = RatingsRow.of(_kept(t.col_totals), _kept([t.grand])[0])
    return SatisfactionRelease(month, out)


def _kept(figures: list[Published]) -> list[Published]:
    """The figures as a release keeps them: a hidden one without its value."""
    return [shown(f.public) for f in figures]
