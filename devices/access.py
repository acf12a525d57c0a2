"""Serialised access to one device: one capture at a time, a clear busy error when waiting is too long.

A caller that finds the device busy waits for it (up to its own timeout), but only :data:`MAX_WAITING` callers
wait at once: each waiter holds a server thread, and a queue of captures behind one traveller would take them
all. One more is told at once that the device is busy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from devices.errors import CaptureCancelled, DeviceBusy
from devices.timeouts import MAX_CAPTURE_TIMEOUT_S

#: Callers that may wait for a busy device at once (beside the one holding it).
MAX_WAITING = 1
# How often a caller waiting for the device checks whether its call has ended.
_CANCEL_CHECK_S = 0.05


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

    def _acquire(self, wait_s: float, cancel: threading.Event | None) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        with self._count:
            if self._waiting >= self.max_waiting:
                raise DeviceBusy(f"{self.name} is busy with another capture, and another caller waits for it; "
                                 "try again")
            self._waiting += 1
        try:
            return self._wait(wait_s, cancel)
        finally:
            with self._count:
                self._waiting -= 1

    def _wait(self, wait_s: float, cancel: threading.Event | None) -> bool:
        """Wait up to ``wait_s`` for the device; :class:`CaptureCancelled` as soon as ``cancel`` is set."""
        if cancel is None:
            return self._lock.acquire(timeout=wait_s) if wait_s > 0 else False
        deadline = time.monotonic() + wait_s
        while not cancel.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._lock.acquire(timeout=min(left, _CANCEL_CHECK_S)):
                return True
        raise CaptureCancelled(f"The call ended while it waited for {self.name}: nothing was captured.")

    @contextmanager
    def hold(self, wait_s: float, cancel: threading.Event | None = None) -> Iterator[None]:
        """Hold the device for the duration of the block (waiting at most the capture bound; NaN: not at all).

        ``cancel``: the wait stops (:class:`CaptureCancelled`) once it is set (the caller's call has ended).
        """
        wait = min(wait_s, MAX_CAPTURE_TIMEOUT_S) if wait_s > 0 else 0.0
        if not self._acquire(wait, cancel):
            raise DeviceBusy(f"{self.name} is busy with another capture; try again")
        try:
            yield
        finally:
            self._lock.release()
