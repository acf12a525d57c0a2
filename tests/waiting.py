"""Waiting in tests without racing: poll the real condition until a deadline, never sleep a guessed time.

A bare ``time.sleep(0.3)`` before an assertion races: on a loaded machine the thing waited for has not
happened yet, and on a quiet one the test wastes its time. :func:`wait_until` checks the condition itself,
often, and fails with a message naming what never happened (and the last value seen) once the deadline passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition was still false at the deadline (an ``AssertionError``, so pytest reports a failure)."""


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.01,
               message: str = "condition") -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    ``timeout`` is the deadline in seconds (measured on the monotonic clock), ``interval`` the pause between
    two calls. The predicate is called at least once, and once more at the deadline, so that a condition that
    became true during the last pause is not reported as a timeout. An exception raised by the predicate
    propagates at once (a broken check is not a slow one).

    Raises :class:`WaitTimeout` naming ``message``, the timeout and the last value returned.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"timeout must be >= 0 and interval > 0 (got {timeout}, {interval})")
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"{message}: still not true after {timeout:g} s (last value {value!r})")
        time.sleep(min(interval, left))
