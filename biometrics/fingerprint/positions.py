"""Finger positions as ISO/IEC 19794-2 codes."""

from __future__ import annotations

from enum import IntEnum

from biometrics.errors import InvalidSample


class FingerPosition(IntEnum):
    """ISO/IEC 19794-2 finger position codes."""

    UNKNOWN = 0
    RIGHT_THUMB = 1
    RIGHT_INDEX = 2
    RIGHT_MIDDLE = 3
    RIGHT_RING = 4
    RIGHT_LITTLE = 5
    LEFT_THUMB = 6
    LEFT_INDEX = 7
    LEFT_MIDDLE = 8
    LEFT_RING = 9
    LEFT_LITTLE = 10

    @classmethod
    def parse(cls, value: int) -> FingerPosition:
        """The position of an ISO code; ``InvalidSample`` for a code outside 0..10."""
        try:
            return cls(int(value))
        except (ValueError, TypeError):
            raise InvalidSample(f"Unknown finger position code {value!r} (ISO/IEC 19794-2 codes are 0..10).") from None
