"""Calling the gRPC servicer's handlers in this process, with a call a test can end when it likes."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc


class Aborted(Exception):
    """What :meth:`Call.abort` raises (gRPC's own context raises an exception of its own as well)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Call:
    """What the servicer needs of a ``grpc.ServicerContext``, for one call that the test ends by :meth:`cancel`
    (the kiosk cancels) or :meth:`expire` (its deadline passes), as gRPC does: the call is no longer active and
    its callbacks run."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.deadline = time.monotonic() + seconds
        self.cancelled = False
        self.callbacks: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if not self.is_active():
            return False
        self.callbacks.append(callback)
        return True

    def is_active(self) -> bool:
        return not self.cancelled and self.time_remaining() > 0

    def time_remaining(self) -> float:
        return self.deadline - time.monotonic()

    def cancel(self) -> None:
        self.cancelled = True
        self._ended()

    def expire(self) -> None:
        self.deadline = time.monotonic()
        self._ended()

    def end(self, how: str) -> None:
        """``cancel`` or ``expire``."""
        getattr(self, how)()

    def _ended(self) -> None:
        for callback in self.callbacks:
            callback()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)
