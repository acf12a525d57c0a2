"""Disclosure control: small counts, secondary suppression that totals cannot undo, OpenDP releases."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from portal.disclosure import (
    MIN_COUNT,
    NationalityRelease,
    ReleasePolicy,
    percentile_allowed,
    protect,
    round_to,
    small_count,
)


def published_grid(cells: list[list[int]]) -> list[list[str]]:
    """What the public sees: the table with its row totals, column totals and grand total, as text."""
    t = protect(cells)
    grid = [[c.text() for c in row] + [t.row_totals[i].text()] for i, row in enumerate(t.cells)]
    grid.append([c.text() for c in t.col_totals] + [t.grand.text()])
    return grid


def attacker_range(grid: list[list[str]], target: tuple[int, int]) -> tuple[float, float]:
    """The least and greatest value of a hidden entry consistent with everything published.

    Unknowns: every entry shown as ``<10`` (1..9) or ``x`` (>= 0). Equations: each row of cells adds up to
    its row total, each column (the total column included) to its column total.
    """
    unknown = [(i, j) for i, r in enumerate(grid) for j, v in enumerate(r) if not v.isdigit()]
    pos = {cell: k for k, cell in enumerate(unknown)}
    n_r, n_c = len(grid), len(grid[0])
    equations: list[tuple[list[tuple[int, int]], tuple[int, int]]] = []
    equations += [([(i, j) for j in range(n_c - 1)], (i, n_c - 1)) for i in range(n_r)]
    equations += [([(i, j) for i in range(n_r - 1)], (n_r - 1, j)) for j in range(n_c)]
    a_eq, b_eq = [], []
    for parts, total in equations:
        coef = np.zeros(len(unknown))
        known = 0.0
        for cell in parts:
            if cell in pos:
                coef[pos[cell]] += 1
            else:
                known += int(grid[cell[0]][cell[1]])
        if total in pos:
            coef[pos[total]] -= 1
            rhs = -known
        else:
            rhs = int(grid[total[0]][total[1]]) - known
        a_eq.append(coef)
        b_eq.append(rhs)
    bounds = [(1, MIN_COUNT - 1) if grid[i][j].startswith("<") else (0, None) for i, j in unknown]
    c = np.zeros(len(unknown))
    c[pos[target]] = 1
    low = linprog(c, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    high = linprog(-c, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    assert low.status == 0, "the published table must be consistent with its true values"
    return low.fun, (np.inf if high.status == 3 else -high.fun)


def test_small_counts_and_percentiles() -> None:
    assert small_count(0).text() == "0"
    assert small_count(1).text() == "<10"
    assert small_count(9).text() == "<10"
    assert small_count(10).text() == "10"
    assert not percentile_allowed(9)
    assert percentile_allowed(10)
    assert [round_to(v) for v in (10, 12, 13, 17, 18)] == [10, 10, 15, 15, 20]


def test_one_small_cell_gets_complements_in_its_row_and_column() -> None:
    t = protect([[5, 20, 30], [40, 50, 60]])
    assert t.cells[0][0].text() == "<10"
    assert t.cells[0][1].text() == "x"  # the next-smallest in row 0
    assert t.cells[1][0].text() == "x"  # the next-smallest in column 0
    assert t.cells[1][1].text() == "x"  # closes the rectangle
    assert t.cells[0][2].text() == "30" and t.cells[1][2].text() == "60"
    assert [c.text() for c in t.row_totals] == ["55", "150"]
    assert t.grand.text() == "205"
    assert t.cells[0][0].value == 5  # the auditors still see the value


def test_a_table_without_small_counts_is_published_whole() -> None:
    t = protect([[10, 0, 30], [40, 50, 60]])
    assert t.suppressed_count == 0
    assert t.cells[0][1].text() == "0"


def test_small_total_is_suppressed_too() -> None:
    t = protect([[3, 4], [20, 30]])
    assert t.row_totals[0].text() == "<10"  # 7 is itself a small count


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Found by this test in CI: entry (0, 1) = 1 pinned by the totals while its row and column were suppressed whole.
@example(cells=[[0, 1, 0, 0, 10], [10, 1, 0, 0, 0], [0, 10, 0, 0, 0]])
@example(cells=[[14, 11, 3], [3, 0, 0], [10, 1, 1], [14, 1, 3]])  # and a zero pinned the same way
@given(st.integers(1, 6).flatmap(lambda rows: st.integers(1, 6).flatmap(
    lambda cols: st.lists(st.lists(st.sampled_from([0, 0, 1, 2, 3, 5, 8, 9, 10, 11, 14, 25, 60, 300]),
                                   min_size=cols, max_size=cols), min_size=rows, max_size=rows))))
def test_no_suppressed_entry_can_be_recovered_from_the_published_totals(cells: list[list[int]]) -> None:
    grid = published_grid(cells)
    truth = [[*r, sum(r)] for r in cells]
    truth.append([sum(r[j] for r in truth) for j in range(len(truth[0]))])
    for i, row in enumerate(grid):
        for j, text in enumerate(row):
            if text.isdigit():
                assert int(text) == truth[i][j]
                continue
            low, high = attacker_range(grid, (i, j))
            assert low <= truth[i][j] <= high
            assert high - low >= 1, f"entry {(i, j)} = {truth[i][j]} is recoverable from {grid}"


def test_opendp_release_is_cached_per_month_and_thresholded() -> None:
    release = NationalityRelease(ReleasePolicy(method="opendp", epsilon=1.0, delta=1e-6))
    counts = {("rokot", "AUS"): 5000, ("rokot", "ITA"): 1, ("tuapejat", "USA"): 800}
    first = release.release(date(2026, 5, 1), counts)
    again = release.release(date(2026, 5, 1), counts)
    assert first == again  # a reload does not draw new noise
    threshold = release.threshold()
    assert threshold is not None and threshold > MIN_COUNT  # delta 1e-6 at epsilon 1 needs a high threshold
    assert ("rokot", "ITA") not in first  # one arrival is released with probability <= delta
    assert abs(first[("rokot", "AUS")] - 5000) < 60  # discrete Laplace, scale 1: |noise| >= 60 has p ~ 1e-26
    assert all(v >= threshold for v in first.values())
    assert release.cached_months() == [date(2026, 5, 1)]


def test_round5_release() -> None:
    release = NationalityRelease(ReleasePolicy(method="round5"))
    out = release.release(date(2026, 6, 1), {("siberut", "BRA"): 7, ("siberut", "AUS"): 13})
    assert out == {("siberut", "AUS"): 15}
    with pytest.raises(ValueError):
        ReleasePolicy(method="shuffle")  # type: ignore[arg-type]
