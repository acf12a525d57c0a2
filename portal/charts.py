"""Charts as inline SVG, drawn in Python (no script, no external file): grouped bars and lines.

Each chart is an ``<svg role="img">`` labelled by its own ``<title>`` and ``<desc>`` (``aria-labelledby``);
every bar and point carries a ``<title>`` with its value; the page puts the same figures in a table beside
the chart. A missing value (``None``: suppressed or not published) leaves a gap, never a zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 80, 16, 16, 64
#: Colour-blind-safe palette (Okabe-Ito), dark enough on white for the lines.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "", "6 3", "2 3", "8 3 2 3")

Series = tuple[str, Sequence[float | None]]


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= value:
            return m * exp
    return 10 * exp


def _frame(chart_id: str, title: str, desc: str, categories: Sequence[str], y_max: float, y_label: str) -> list[str]:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" id="{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
        '<g class="axes" aria-hidden="true" font-size="11" fill="#333">',
    ]
    for k in range(5):
        v = y_max * k / 4
        y = TOP + plot_h - plot_h * k / 4
        label = f"{v:,.0f}" if (y_max / 4).is_integer() else f"{v:,.2f}".rstrip("0").rstrip(".")
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>')
    step = max(1, math.ceil(len(categories) / 24))
    slot = plot_w / max(1, len(categories))
    for i, c in enumerate(categories):
        if i % step:
            continue
        x = LEFT + slot * (i + 0.5)
        parts.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">{escape(c)}</text>')
    parts.append(f'<text x="14" y="{TOP + plot_h / 2:.1f}" transform="rotate(-90 14 {TOP + plot_h / 2:.1f})" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    parts.append("</g>")
    return parts


def _legend(series: Sequence[Series], lines: bool) -> list[str]:
    parts = ['<g class="legend" font-size="12" fill="#111">']
    widths = [40 + 8 * len(name) for name, _ in series]
    two_rows = sum(widths) > WIDTH - LEFT - RIGHT
    x = LEFT
    y = HEIGHT - (30 if two_rows else 18)
    for k, (name, _values) in enumerate(series):
        if two_rows and x + widths[k] > WIDTH - RIGHT and x > LEFT:
            x, y = LEFT, y + 18
        colour = PALETTE[k % len(PALETTE)]
        if lines:
            parts.append(f'<line x1="{x}" x2="{x + 18}" y1="{y - 4}" y2="{y - 4}" stroke="{colour}" '
                         f'stroke-width="3" stroke-dasharray="{DASHES[k % len(DASHES)]}"/>')
        else:
            parts.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 22}" y="{y}">{escape(name)}</text>')
        x += widths[k]
    parts.append("</g>")
    return parts


def _y_max(series: Sequence[Series]) -> float:
    values = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)]
    return nice_max(max(values, default=0.0))


def bar_chart(chart_id: str, title: str, desc: str, categories: Sequence[str], series: Sequence[Series],
              y_label: str) -> Markup:
    """Grouped bars: one group per category, one bar per series."""
    y_max = _y_max(series)
    parts = _frame(chart_id, title, desc, categories, y_max, y_label)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(categories))
    bar_w = slot * 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        parts.append(f'<g class="series" fill="{colour}">')
        for i, v in enumerate(values):
            if v is None:
                continue
            h = plot_h * min(v, y_max) / y_max
            x = LEFT + slot * i + slot * 0.1 + bar_w * k
            parts.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                         f'<title>{escape(f"{name}, {categories[i]}: {v:,.0f}")}</title></rect>')
        parts.append("</g>")
    parts += _legend(series, lines=False)
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(chart_id: str, title: str, desc: str, categories: Sequence[str], series: Sequence[Series],
               y_label: str, decimals: int = 0) -> Markup:
    """One line per series over the categories; a ``None`` breaks the line."""
    y_max = _y_max(series)
    parts = _frame(chart_id, title, desc, categories, y_max, y_label)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(categories))
    for k, (name, values) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        points = []
        runs: list[list[str]] = [[]]
        for i, v in enumerate(values):
            if v is None or not math.isfinite(v):
                runs.append([])
                continue
            x = LEFT + slot * (i + 0.5)
            y = TOP + plot_h - plot_h * min(v, y_max) / y_max
            runs[-1].append(f"{x:.1f},{y:.1f}")
            points.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3"><title>'
                          f'{escape(f"{name}, {categories[i]}: {v:,.{decimals}f}")}</title></circle>')
        parts.append(f'<g class="series" stroke="{colour}" fill="{colour}">')
        for run in runs:
            if len(run) > 1:
                parts.append(f'<polyline fill="none" stroke-width="2.5" stroke-dasharray="{DASHES[k % len(DASHES)]}" '
                             f'points="{" ".join(run)}"/>')
        parts += points
        parts.append("</g>")
    parts += _legend(series, lines=True)
    parts.append("</svg>")
    return Markup("".join(parts))
