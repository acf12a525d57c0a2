"""Statistical disclosure control for everything the public portal publishes (pure functions).

* **Small counts.** A count from 1 to 9 is hidden (primary suppression). Zero is shown (nobody is behind it),
  except in a line (a row, a column, the totals) whose total is hidden: that line is hidden whole, zeros
  included, so that its zeros do not say where its few people are (one rating in a station's month published
  as 0, ``[c]``, 0, 0 gave its value away; :mod:`portal.suppression`, rule 0).
* **One symbol for every hidden count.** A count hidden because it is small and one hidden so that a total
  does not give a small one back (secondary suppression) are both shown as :data:`HIDDEN` (``[c]``), so
  that a reader cannot tell them apart: all a reader knows of a hidden count is that it is an integer >= 0
  (a ``<10`` beside an ``x`` told more: an ``x`` is never 1 to 9, which pinned some ``<10`` cells).
* **Secondary suppression.** A table is published with its row totals, column totals and grand total;
  :func:`protect` hides complements until no hidden entry is determined by what is shown
  (:func:`portal.suppression.suppress`, whose check is exact for these tables).
* **Percentiles** are published only from at least :data:`MIN_COUNT` decisions, and only when they are not
  the slowest decision of them (p95 from 20 decisions: :func:`percentile_allowed`).
* **Monthly arrivals by nationality** are released through OpenDP's Laplace mechanism with a release
  threshold (:class:`NationalityRelease`, method ``opendp``: epsilon per month, delta, the threshold that
  delta implies), or rounded to a base of 5 after suppression (method ``round5``). Each month is released
  once and, in ``checkpoint-portal``, written to the state directory (:mod:`portal.releases`), so that a
  restart publishes the same values.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from portal.releases import MonthRelease, ReleaseLog, ReleaseParameters, now_text
from portal.shared_record import disagree
from portal.suppression import Key, Network, Node, suppress

#: Counts below this are not published (and percentiles need at least this many decisions).
MIN_COUNT = 10
#: How every hidden count is shown, whatever the reason it is hidden.
HIDDEN = "[c]"

Status = Literal["shown", "primary", "secondary", "hidden"]


@dataclass(frozen=True)
class Published:
    """One published figure: its value and how it is shown.

    A hidden entry keeps its value where :func:`protect` made it (the auditors' tests read it); one read
    back from a release, or summed from hidden entries, has ``value`` None and status ``hidden`` (the reason
    it is hidden is not kept: the public sees one symbol for all).
    """

    value: int | None
    status: Status = "shown"

    @property
    def suppressed(self) -> bool:
        """True when the public does not see the value."""
        return self.status != "shown"

    @property
    def public(self) -> int | None:
        """The value as the public sees it (None when suppressed)."""
        return None if self.suppressed else self.value

    def text(self) -> str:
        """:data:`HIDDEN` (primary and secondary alike) or the number."""
        return HIDDEN if self.suppressed else str(self.value)


#: A hidden figure whose value the portal does not keep.
HIDDEN_ENTRY = Published(None, "hidden")


@functools.lru_cache(maxsize=4096)
def shown(value: int | None) -> Published:
    """A figure as kept in a release: its number, or :data:`HIDDEN_ENTRY` for None."""
    return HIDDEN_ENTRY if value is None else Published(value)


def summed(figures: Iterable[Published]) -> Published:
    """The sum of published figures: shown only when every one of them is (it then adds nothing a reader
    could not add up), else hidden."""
    total = 0
    for f in figures:
        if f.suppressed or f.value is None:
            return HIDDEN_ENTRY
        total += f.value
    return Published(total)


@dataclass(frozen=True)
class ProtectedTable:
    """A table of counts with its margins, each entry a :class:`Published`."""

    cells: list[list[Published]]
    row_totals: list[Published]
    col_totals: list[Published]
    grand: Published

    @property
    def suppressed_count(self) -> int:
        """How many entries (margins included) are hidden."""
        entries = [c for row in self.cells for c in row] + self.row_totals + self.col_totals + [self.grand]
        return sum(e.suppressed for e in entries)


def is_small(count: int, threshold: int = MIN_COUNT) -> bool:
    """True for a count that is hidden for its own sake (1 .. threshold-1)."""
    return 0 < count < threshold


def small_count(count: int, threshold: int = MIN_COUNT) -> Published:
    """A count on its own (no totals to protect): hidden when small, else the number."""
    return Published(count, "primary" if is_small(count, threshold) else "shown")


def percentile_allowed(count: int, q: float = 50, threshold: int = MIN_COUNT) -> bool:
    """Whether the ``q``-th percentile of ``count`` decisions is published: from at least ``threshold``
    decisions, and only when its rank (``ceil(q/100 * count)``) is not the last, so that it is never the
    single slowest decision (p95 needs 20 decisions, p90 and p50 need 10)."""
    return count >= threshold and math.ceil(q / 100 * count) < count


def round_to(count: int, base: int = 5) -> int:
    """``count`` rounded to the nearest multiple of ``base`` (halves up)."""
    return math.floor(count / base + 0.5) * base


def _extended(cells: Sequence[Sequence[int]]) -> list[list[int]]:
    rows = [[*r, sum(r)] for r in cells]
    n_cols = len(rows[0]) if rows else 1
    rows.append([sum(r[j] for r in rows) for j in range(n_cols)])
    return rows


def _network(n_rows: int, n_cols: int) -> Network:
    """The extended table as a flow network: a cell runs from its column to its row, a row total from its row
    to the root of the rows, the grand total from there to the root of the columns, a column total on to
    its column."""
    arcs: dict[Key, tuple[Node, Node]] = {}
    for i in range(n_rows - 1):
        for j in range(n_cols - 1):
            arcs[(i, j)] = (("col", j), ("row", i))
        arcs[(i, n_cols - 1)] = (("row", i), "rows")
    for j in range(n_cols - 1):
        arcs[(n_rows - 1, j)] = ("cols", ("col", j))
    arcs[(n_rows - 1, n_cols - 1)] = ("rows", "cols")
    r, c = n_rows - 1, n_cols - 1  # the index of the totals
    lines = [((i, c), tuple((i, j) for j in range(c))) for i in range(r)]  # a row total and its cells
    lines += [((r, j), tuple((i, j) for i in range(r))) for j in range(c)]  # a column total and its cells
    lines.append(((r, c), tuple([*((i, c) for i in range(r)), *((r, j) for j in range(c))])))  # the grand total
    return Network(arcs, frozenset(k for k in arcs if k[0] == r or k[1] == c), tuple(lines))


def protect(cells: Sequence[Sequence[int]], threshold: int = MIN_COUNT) -> ProtectedTable:
    """Primary and secondary suppression of a table of counts published with its totals.

    ``cells`` is a rectangular table (rows of non-negative counts). Returns every cell, row total, column
    total and the grand total as a :class:`Published`; no hidden entry is determined by what is shown and
    the relations of the table (:func:`portal.suppression.suppress`).
    """
    if not cells or not cells[0]:
        return ProtectedTable([], [], [], Published(0))
    if any(len(r) != len(cells[0]) for r in cells) or any(v < 0 for r in cells for v in r):
        raise ValueError("protect() takes a rectangular table of non-negative counts")
    ext = _extended(cells)
    n_rows, n_cols = len(ext), len(ext[0])
    values = {(i, j): ext[i][j] for i in range(n_rows) for j in range(n_cols)}
    primary, hidden = suppress(values, _network(n_rows, n_cols), threshold)

    def published(i: int, j: int) -> Published:
        status: Status = "primary" if (i, j) in primary else "secondary" if (i, j) in hidden else "shown"
        return Published(ext[i][j], status)

    return ProtectedTable(
        cells=[[published(i, j) for j in range(n_cols - 1)] for i in range(n_rows - 1)],
        row_totals=[published(i, n_cols - 1) for i in range(n_rows - 1)],
        col_totals=[published(n_rows - 1, j) for j in range(n_cols - 1)],
        grand=published(n_rows - 1, n_cols - 1),
    )


def unprotected(cells: Sequence[Sequence[int]]) -> ProtectedTable:
    """The same table with nothing hidden (the auditors' view)."""
    if not cells or not cells[0]:
        return ProtectedTable([], [], [], Published(0))
    ext = _extended(cells)
    return ProtectedTable(
        cells=[[Published(v) for v in r[:-1]] for r in ext[:-1]],
        row_totals=[Published(r[-1]) for r in ext[:-1]],
        col_totals=[Published(v) for v in ext[-1][:-1]],
        grand=Published(ext[-1][-1]),
    )


# --- monthly arrivals by nationality --------------------------------------------------------------------

Method = Literal["opendp", "round5"]


@dataclass(frozen=True)
class ReleasePolicy:
    """How monthly nationality counts are released, as the page states it."""

    method: Method = "opendp"
    epsilon: float = 1.0  # per month, over all stations and nationalities together
    delta: float = 1e-6  # the chance that a nationality seen once in a month is released at all
    base: int = 5  # rounding base of method round5

    def __post_init__(self) -> None:
        if self.method not in ("opendp", "round5"):
            raise ValueError(f"unknown release method {self.method!r}: opendp or round5")
        if not (self.epsilon > 0 and 0 < self.delta < 1 and self.base >= 1):
            raise ValueError("epsilon must be > 0, delta in (0, 1), base >= 1")

    @property
    def scale(self) -> float:
        """Laplace scale 1/epsilon: one arrival more or fewer changes one count by one (l1 sensitivity 1); a
        known arrival's nationality changed moves two counts (l1 = 2), protected with 2 epsilon."""
        return 1.0 / self.epsilon


@dataclass
class NationalityRelease:
    """Releases of monthly arrival counts keyed by (station, nationality): each month released once, for good.

    OpenDP draws its noise from the operating system's cryptographic generator and offers no seed, so a
    release cannot be made deterministic from a secret; instead each month is released once and kept, so that
    reloading a page (or another station's page of the same month) does not draw new noise that could be
    averaged away. With a :class:`~portal.releases.ReleaseLog` (``log``, as ``checkpoint-portal`` always
    gives) every release is written to the portal's state directory and read back at start, so a restart
    (or a second portal process on the same directory) publishes the same values and spends no new budget; a
    month released earlier with other parameters stays as it was published (:meth:`kept_releases`). Without
    a log (a library user's or a test's app) the releases live in memory only. Only completed months are
    released (a month still filling would need a new release at every update).
    """

    policy: ReleasePolicy = field(default_factory=ReleasePolicy)
    log: ReleaseLog | None = None
    _cache: dict[date, MonthRelease] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _measurement: object | None = None
    _threshold: int | None = None
    _from_disk: set[date] = field(default_factory=set)  # read from the state directory, not yet written back

    def __post_init__(self) -> None:
        if self.log is not None:
            self._cache.update(self.log.load())
            self._from_disk.update(self._cache)

    def threshold(self) -> int | None:
        """The smallest release threshold for which OpenDP's privacy map gives (epsilon, <= delta)."""
        if self.policy.method != "opendp":
            return None
        self._build()
        return self._threshold

    def parameters(self) -> ReleaseParameters:
        """The current policy as it is recorded with each release."""
        if self.policy.method == "opendp":
            return ReleaseParameters("opendp", self.policy.epsilon, self.policy.delta, self.threshold())
        return ReleaseParameters(self.policy.method, base=self.policy.base)

    def _build(self) -> None:
        if self._measurement is not None:
            return
        import opendp.prelude as dp

        dp.enable_features("contrib")
        domain = dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int))
        metric = dp.l01inf_distance(dp.absolute_distance(T=int))
        threshold = 2
        while True:
            measurement = dp.m.make_laplace_threshold(domain, metric, scale=self.policy.scale, threshold=threshold)
            _eps, delta = measurement.map((1, 1, 1))
            if delta <= self.policy.delta:
                break
            threshold += 1
        self._measurement, self._threshold = measurement, threshold

    def _draw(self, month: date, counts: Mapping[tuple[str, str], int]) -> MonthRelease:
        if self.policy.method == "opendp":
            self._build()
            data = {f"{s}\t{n}": int(c) for (s, n), c in counts.items() if c > 0}
            noisy = self._measurement(data) if data else {}  # type: ignore[operator]
            values = {tuple(k.split("\t", 1)): int(v) for k, v in noisy.items()}
        else:
            values = {k: round_to(c, self.policy.base) for k, c in counts.items() if c >= MIN_COUNT}
        suppressed = frozenset(k for k, c in counts.items() if c > 0 and k not in values)
        return MonthRelease(month, self.parameters(), values, suppressed, now_text())  # type: ignore[arg-type]

    def release(self, month: date, counts: Mapping[tuple[str, str], int],
                share: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None) -> dict[tuple[str, str], int]:
        """The released counts of one completed month: keys absent from the result were not released.

        With ``opendp``: noisy counts, only those at or above the threshold. With ``round5``: counts of at
        least :data:`MIN_COUNT` rounded to the base (smaller ones absent: not released). A month released
        before (in this process, or on disk) is returned as it was released, whatever ``counts`` say now. A
        month without any arrival is not released (nor kept): there is nothing to protect and nothing drawn.
        ``share`` (name, record -> the record to publish) records a new draw where every portal on the store
        finds it, and returns the first portal's (:mod:`portal.shared_record`): one draw per month, store-wide.
        """
        def drawn() -> MonthRelease:
            fresh = self._draw(month, counts)
            return fresh if share is None else MonthRelease.from_json(share(f"nationality/{month:%Y-%m}",
                                                                            fresh.to_json()))

        with self._lock:
            if month in self._cache:
                kept = self._cache[month]
                if share is not None and month in self._from_disk:  # once: a store restored from a backup
                    name, doc = f"nationality/{month:%Y-%m}", kept.to_json()
                    held = MonthRelease.from_json(share(name, doc))  # a store error: tried again next time
                    self._from_disk.discard(month)
                    disagree([name] if held != kept else [])
                return kept.values
            if not any(c > 0 for c in counts.values()):
                return {}  # nothing recorded (yet): no noise drawn, nothing kept, a later load is released then
            if self.log is None:
                self._cache[month] = drawn()
            else:
                with self.log.releasing(month) as existing:  # under the state directory's lock
                    if existing is None:
                        existing = drawn()
                        self.log.write(existing)
                    self._cache[month] = existing
            return self._cache[month].values

    def released_with(self, month: date) -> ReleaseParameters | None:
        """The method and parameters ``month`` was released with (None: not released yet)."""
        found = self._cache.get(month)
        return found.parameters if found else None

    def kept_releases(self) -> dict[ReleaseParameters, list[date]]:
        """Months released with other parameters than the current ones, kept as published (by parameters)."""
        current = self.parameters()
        with self._lock:
            releases = sorted(self._cache.items())
        out: dict[ReleaseParameters, list[date]] = {}
        for month, release in releases:
            if not release.parameters.same_policy(current):
                out.setdefault(release.parameters, []).append(month)
        return out

    def cached_months(self) -> list[date]:
        """Months released so far (for the page's statement of method)."""
        with self._lock:
            return sorted(self._cache)
