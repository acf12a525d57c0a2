"""Every query parameter the portal accepts, checked: a bad one raises :class:`BadParameter` (a 400 page).

The message is a catalogue key with its values, so the 400 page says what was wrong in the page's language.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

from portal.i18n import DEFAULT_LANGUAGE, LANGUAGES

EARLIEST = date(2000, 1, 1)
FORMATS = ("csv", "json")


class BadParameter(ValueError):
    """A query parameter the page cannot use: ``key`` and ``values`` name the message."""

    def __init__(self, key: str, **values: object):
        super().__init__(f"{key}: {values}")
        self.key = key
        self.values = values


def _digits(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also takes "²" (which ``int`` refuses) and "２０２６" (which it reads)."""
    return text.isascii() and text.isdigit()


def check_known(params: Mapping[str, str], allowed: Sequence[str]) -> None:
    """Refuse a parameter the page does not use (a typo should not be silently ignored)."""
    for name in params:
        if name not in allowed:
            raise BadParameter("bad_unknown", name=name[:40])


def language(params: Mapping[str, str]) -> str:
    """``lang``: id (default) or en."""
    value = params.get("lang", DEFAULT_LANGUAGE)
    if value not in LANGUAGES:
        raise BadParameter("bad_lang", value=value[:20])
    return value


def language_or_default(params: Mapping[str, str]) -> str:
    """The requested language if valid, else the default (for error pages)."""
    value = params.get("lang", DEFAULT_LANGUAGE)
    return value if value in LANGUAGES else DEFAULT_LANGUAGE


def day(params: Mapping[str, str], name: str, default: date, high: date) -> date:
    """A ``YYYY-MM-DD`` parameter between 2000-01-01 and ``high``."""
    value = params.get(name)
    if value is None:
        return default
    try:
        if not (len(value) == 10 and value[4] == value[7] == "-" and _digits(value[:4] + value[5:7] + value[8:])):
            raise ValueError  # only YYYY-MM-DD: fromisoformat also takes week dates (2026-W48-1)
        parsed = date.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or not EARLIEST <= parsed <= high:
        raise BadParameter("bad_date", name=name, value=value[:20], low=EARLIEST.isoformat(), high=high.isoformat())
    return parsed


def month(params: Mapping[str, str], name: str, default: date, high: date) -> date:
    """A ``YYYY-MM`` parameter (returned as the month's first day) between 2000-01 and ``high``'s month."""
    value = params.get(name)
    if value is None:
        return default
    parsed = None
    if len(value) == 7 and value[4] == "-" and _digits(value[:4] + value[5:]):
        try:
            parsed = date(int(value[:4]), int(value[5:]), 1)
        except ValueError:
            parsed = None
    if parsed is None or not EARLIEST <= parsed <= high.replace(day=1):
        raise BadParameter("bad_month", name=name, value=value[:20], low=EARLIEST.strftime("%Y-%m"),
                           high=high.strftime("%Y-%m"))
    return parsed


def month_span(first: date, last: date, limit: int = 36) -> None:
    """``first`` .. ``last`` must be a non-empty period of at most ``limit`` months."""
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    if months < 1 or months > limit:
        raise BadParameter("bad_range", start=first.strftime("%Y-%m"), end=last.strftime("%Y-%m"),
                           limit=f"{limit} months")


def station(params: Mapping[str, str], known: Sequence[str], required: bool = False) -> str | None:
    """``station``: one of the stations the store knows (absent: all, or the first if ``required``)."""
    value = params.get("station")
    if value is None or (value == "" and not required):
        return (known[0] if known else None) if required else None
    if value not in known:
        raise BadParameter("bad_station", value=value[:40], known=", ".join(known) or "-")
    return value


def output_format(params: Mapping[str, str]) -> str:
    """``format``: csv (default) or json."""
    value = params.get("format", "csv")
    if value not in FORMATS:
        raise BadParameter("bad_format", value=value[:20])
    return value


def integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter between ``low`` and ``high``."""
    value = params.get(name)
    if value is None:
        return default
    # at most 9 characters before int(): a string of over 4,300 digits (leading zeros included) makes int()
    # raise ValueError, a 500 page instead of this 400 (no integer parameter needs more than 9 digits)
    if not (_digits(value) and len(value) <= 9 and low <= int(value) <= high):
        raise BadParameter("bad_number", name=name, value=value[:20], low=low, high=high)
    return int(value)


def choice(params: Mapping[str, str], name: str, options: Sequence[str], default: str) -> str:
    """A parameter among ``options``."""
    value = params.get(name, default)
    if value not in options:
        raise BadParameter("bad_choice", name=name, value=value[:20], options=", ".join(options))
    return value
