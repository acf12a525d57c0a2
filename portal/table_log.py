"""The released master tables in the portal's state directory: each period written once, never redrawn.

A released day's counts (and a released month's arrivals and ratings) are final: publishing them again
from other data (a restart after a station shipped late, a reopened store) would put two suppression
patterns of overlapping counts side by side, and their differences would give hidden counts back.
:class:`TableLog` keeps them in ``tables/YYYY-MM.json``, one file per local month: ``{"format", "month",
"days": {"YYYY-MM-DD": day record}, "arrivals": the month's arrivals, "satisfaction": the month's
ratings}``. A file is replaced whole (temporary file, ``fsync``, ``rename``) under the state directory's
lock whenever a period of its month is released; a period already in it is never changed
(:meth:`TableLog.adding` refuses). The records hold what is published (a hidden count is ``null``) and,
for each day, each station's true number of arrivals (the month's totals add them up).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from portal.releases import StateDirError, atomic_write, state_lock

SUBDIR = "tables"
FORMAT = 1


class TableLog:
    """The released tables in ``state_dir`` (created 0700 if missing; :class:`StateDirError` if it cannot be)."""

    def __init__(self, state_dir: Path | str):
        self.state_dir = Path(state_dir).expanduser()
        self.dir = self.state_dir / SUBDIR
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateDirError(f"cannot create {self.dir} ({exc.strerror or exc})") from exc

    def _path(self, month: date) -> Path:
        return self.dir / f"{month:%Y-%m}.json"

    def read(self, month: date) -> dict[str, Any]:
        """The month's file (an empty record when there is none)."""
        path = self._path(month)
        if not path.exists():
            return {"format": FORMAT, "month": f"{month:%Y-%m}", "days": {}}
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT or doc.get("month") != f"{month:%Y-%m}" or not isinstance(doc["days"], dict):
                raise ValueError("not a release file of this month")
            return doc
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateDirError(f"the release file {path} cannot be read ({exc}): it is never redrawn; restore it "
                                "from a backup") from exc

    @contextlib.contextmanager
    def adding(self, month: date) -> Iterator[dict[str, Any]]:
        """Under the state directory's lock: the month's record as on disk, to which the caller adds periods
        that are not in it yet; written back whole if it grew. Changing a period already in it raises."""
        with state_lock(self.state_dir):
            doc = self.read(month)
            before = _released(doc)
            yield doc
            after = _released(doc)
            if any(after.get(k) != v for k, v in before.items()):
                raise ValueError(f"{self._path(month)}: a released period is never changed")
            if after != before:
                atomic_write(self._path(month), json.dumps(doc, ensure_ascii=False, allow_nan=True).encode())


def _released(doc: dict[str, Any]) -> dict[str, str]:
    """Every released period of a month's record (its days, its ratings, its arrivals), as JSON text."""
    out = {f"day {k}": json.dumps(v, sort_keys=True) for k, v in doc["days"].items()}
    out.update({k: json.dumps(doc[k], sort_keys=True) for k in ("satisfaction", "arrivals") if k in doc})
    return out
