"""The portal's two languages: one message catalogue per language (``portal/messages/<lang>.json``).

Every string a page shows comes from the catalogue of the page's language (``?lang=id`` or ``?lang=en``;
Bahasa Indonesia by default), and so do month names and number formats.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"

_MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "id": ("Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus", "September", "Oktober",
           "November", "Desember"),
}
_SEPARATORS = {"en": (",", "."), "id": (".", ",")}  # thousands, decimal


@functools.cache
def catalogue(lang: str) -> dict[str, str]:
    """The messages of ``lang`` (one of :data:`LANGUAGES`)."""
    if lang not in LANGUAGES:
        raise KeyError(lang)
    text = resources.files("portal").joinpath("messages", f"{lang}.json").read_text(encoding="utf-8")
    return json.loads(text)


class Translator:
    """The strings and formats of one language."""

    def __init__(self, lang: str):
        self.lang = lang
        self.messages = catalogue(lang)

    def __call__(self, key: str, **values: object) -> str:
        """The message ``key`` with ``values`` filled in."""
        return self.messages[key].format(**values) if values else self.messages[key]

    def month_name(self, month: int, short: bool = False) -> str:
        """The name of month 1..12."""
        name = _MONTHS[self.lang][month - 1]
        return name[:3] if short else name

    def number(self, value: float | int | None, decimals: int = 0) -> str:
        """``value`` with this language's separators; an en dash for None."""
        if value is None:
            return "\u2013"
        thousands, point = _SEPARATORS[self.lang]
        text = f"{value:,.{decimals}f}"
        return text.replace(",", "\0").replace(".", point).replace("\0", thousands)

    def percent(self, share: float | None) -> str:
        """A share 0..1 as a percentage with one decimal."""
        return "\u2013" if share is None else self.number(100 * share, 1) + " %"
