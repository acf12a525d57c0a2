"""Open-data downloads: every published table as records, written as CSV or JSON, and the data dictionary.

A record's values are what the page shows: numbers, or the string ``[c]`` for a hidden count (a count from 1
to 9, or one hidden so that a total does not give such a count back: one symbol for both); a percentile or
share not published is empty (CSV) or ``null`` (JSON). Field meanings are catalogue keys (``field_<name>``),
so the dictionary exists in both languages.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import date
from typing import Any

from portal.disclosure import Published

#: Dataset -> its fields, in order, each with its type.
DATASETS: dict[str, tuple[tuple[str, str], ...]] = {
    "hourly": (("station", "text"), ("date", "date"), ("hour", "integer 0-23"), ("arrivals", "count"),
               ("departures", "count"), ("total", "count"), ("p50_ms", "number"), ("p90_ms", "number"),
               ("p95_ms", "number"), ("lanes_open", "integer")),
    "arrivals_port": (("month", "YYYY-MM"), ("station", "text"), ("port_code", "text"), ("arrivals", "count")),
    "arrivals_nationality": (("month", "YYYY-MM"), ("station", "text"), ("nationality", "ISO 3166 alpha-3"),
                             ("arrivals", "released count"), ("method", "text")),
    "seasonal": (("year", "integer"), ("month", "integer 1-12"), ("station", "text"), ("arrivals", "count")),
    "satisfaction": (("month", "YYYY-MM"), ("station", "text"), ("rating_1", "count"), ("rating_2", "count"),
                     ("rating_3", "count"), ("rating_4", "count"), ("ratings", "count"),
                     ("share_positive", "number 0-1")),
}


def value(v: Any) -> Any:
    """One value as published: a :class:`Published` as its number or ``[c]``; inf as ``>30000``."""
    if isinstance(v, Published):
        return v.value if not v.suppressed else v.text()
    if isinstance(v, float) and math.isinf(v):
        return ">30000"
    if isinstance(v, date):
        return v.isoformat()
    return v


def records(dataset: str, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows (in the dataset's field order) as records of published values."""
    fields = [f for f, _ in DATASETS[dataset]]
    return [dict(zip(fields, (value(v) for v in row), strict=True)) for row in rows]


def to_csv(dataset: str, recs: Sequence[dict[str, Any]]) -> str:
    """The records as CSV with a header row (empty cell for a value not published)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    fields = [f for f, _ in DATASETS[dataset]]
    writer.writerow(fields)
    for r in recs:
        writer.writerow(["" if r[f] is None else r[f] for f in fields])
    return out.getvalue()


def to_json(dataset: str, recs: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The records as a JSON document: ``{"dataset", "fields", "meta", "records"}``."""
    doc = {"dataset": dataset, "fields": [{"name": f, "type": t} for f, t in DATASETS[dataset]], "meta": meta,
           "records": list(recs)}
    return json.dumps(doc, ensure_ascii=False, indent=1)
