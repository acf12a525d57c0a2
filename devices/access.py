"""Serialised access to one device: one capture at a time, a clear busy error when waiting is too long."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from devices.errors import DeviceBusy
from devices.timeouts import MAX_CAPTURE_TIMEOUT_S


class DeviceLock:
    """A lock for one device; :meth:`hold` waits up to ``wait_s`` and then raises :class:`DeviceBusy`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether a capture holds the device now."""
        return self._lock.locked()

    @contextmanager
    def hold(self, wait_s: float) -> Iterator[None]:
        """Hold the device for the duration of the block (waiting at most the capture bound; NaN: not at all)."""
        wait = min(wait_s, MAX_CAPTURE_TIMEOUT_S) if wait_s > 0 else 0.0
        if not self._lock.acquire(timeout=wait):
            raise DeviceBusy(f"{self.name} is busy with another capture; try again")
        try:
            yield
        finally:
            self._lock.release()
