"""Serialised access to one device: one capture at a time, a clear busy error when waiting is too long.

A caller that finds the device busy waits for it (up to its own timeout), but only :data:`MAX_WAITING` callers
wait at once: each waiter holds a server thread, and a queue of captures behind one traveller would take them
all. One more is told at once that the device is busy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from devices.errors import DeviceBusy
from devices.timeouts import MAX_CAPTURE_TIMEOUT_S

#: Callers that may wait for a busy device at once (beside the one holding it).
MAX_WAITING = 1


class DeviceLock:
    """A lock for one device; :meth:`hold` waits up to ``wait_s`` and then raises :class:`DeviceBusy`."""

    def __init__(self, name: str, max_waiting: int = MAX_WAITING) -> None:
        self.name = name
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self._waiting = 0

    @property
    def busy(self) -> bool:
        """Whether a capture holds the device now."""
        return self._lock.locked()

    @property
    def waiting(self) -> int:
        """Callers waiting for the device now."""
        return self._waiting

    def _acquire(self, wait_s: float) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        with self._count:
            if self._waiting >= self.max_waiting:
                raise DeviceBusy(f"{self.name} is busy with another capture, and another caller waits for it; "
                                 "try again")
            self._waiting += 1
        try:
            return self._lock.acquire(timeout=wait_s) if wait_s > 0 else False
        finally:
            with self._count:
                self._waiting -= 1

    @contextmanager
    def hold(self, wait_s: float) -> Iterator[None]:
        """Hold the device for the duration of the block (waiting at most the capture bound; NaN: not at all)."""
        wait = min(wait_s, MAX_CAPTURE_TIMEOUT_S) if wait_s > 0 else 0.0
        if not self._acquire(wait):
            raise DeviceBusy(f"{self.name} is busy with another capture; try again")
        try:
            yield
        finally:
            self._lock.release()
