"""The server's own count of a kiosk transaction's attempts, so that its false-match bound does not rest on
the kiosk.

A kiosk transaction of up to N Verify calls (``VerifyRequest.attempts``) keeps the FMR its threshold states
because every call's fused score is stated less ``log10(N)`` and the transaction is accepted when any call is
(union bound: at most N calls, each passing an impostor with a chance of at most ``10**-t / N``). That holds
only if the transaction really makes at most N calls, each corrected by the same N; a kiosk that declared
``attempts=1`` on every call, or simply called again, would get as many uncorrected tries as it liked.

So the station counts for itself. :class:`AttemptLedger` keeps, per document (the subject id a kiosk
verifies against, whichever kiosk calls), the transaction that is open: the N its first scored call
declared and the calls scored since. A scored call opens one when none is open; a later call within
``window_seconds`` of the last one is a call of the same transaction, takes its N (whatever it declares)
and is refused (:class:`AttemptsExhausted`) once N calls have been scored: the traveller sees an officer.
A call that is accepted (the traveller may proceed) ends the transaction; one that is not leaves it open
until the window passes. Only scored calls count: a refusal before a score (no face found, a poor print,
an unknown document) gives no chance of a false match. The ledger also remembers whether the transaction
has raised a watchlist alert, so that a watchlisted traveller asked to place the finger again raises one
alert, not one per call, and whether the transaction's end has been published (a decision event for the
transparency portal): a transaction is published once, by the call that ends it (an accepted call, its last
counted call, or a call the kiosk declares its last) or, failing that, by a later call that fails before a
score (a capture that failed, an abandoned call, a refusal for exhausted attempts): :meth:`AttemptLedger.claim_end`.

The ledger lives in the station's server process: a document tried at two stations at once is two
transactions (each within its own bound).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from biometrics.errors import BiometricError

#: How long after its last scored call a transaction stays open (the traveller places the finger again
#: within seconds; an officer sees the traveller long before this has passed).
DEFAULT_WINDOW_S = 120.0
#: Open transactions kept at most (the least recently called are forgotten first, their unpublished ends handed
#: out by :meth:`AttemptLedger.take_ended` as at expiry; at a kiosk's pace this is never reached).
MAX_OPEN = 100_000
EXHAUSTED = "This document has used every attempt at the kiosk; please see an officer."


class AttemptsExhausted(BiometricError):
    """The document's kiosk transaction has used every attempt it allowed: the traveller must see an officer."""


@dataclass
class Attempt:
    """One scored call of a transaction: its place in it (``call`` of ``attempts``) and what it raised."""

    key: str
    attempts: int
    call: int
    alerted: bool  # the transaction raised a watchlist alert before this call
    published: bool = False  # the transaction's end was published before this call


@dataclass
class _Open:
    attempts: int
    calls: int
    last: float
    alerted: bool = False
    published: bool = False
    unpublished: Any = None  # the end to publish if the window passes with none published (see end())


class AttemptLedger:
    """Open kiosk transactions by document; thread-safe."""

    def __init__(self, window_seconds: float = DEFAULT_WINDOW_S, *, clock: Callable[[], float] = time.monotonic,
                 max_open: int = MAX_OPEN) -> None:
        if not window_seconds > 0:
            raise ValueError("the transaction window must be positive")
        self.window_seconds = float(window_seconds)
        self._clock = clock
        self._max_open = max_open
        self._open: OrderedDict[str, _Open] = OrderedDict()  # least recently called first
        self._ended: list[Any] = []  # ends of expired transactions not handed out yet (take_ended)
        self._lock = threading.Lock()

    def begin(self, key: str, attempts: int) -> Attempt:
        """Count a call about to be scored for document ``key`` that declares ``attempts`` (1 or more).

        Returns the call's place in its transaction (``attempts``: the N its score is corrected by, the
        transaction's, not necessarily this call's); raises :class:`AttemptsExhausted` when the transaction
        open for ``key`` has already scored its N calls.
        """
        now = self._clock()
        with self._lock:
            entry = self._open_with_attempts_left(key, now)
            if entry is None:
                entry = self._open[key] = _Open(max(1, int(attempts)), 0, now)
            entry.calls += 1
            entry.last = now
            self._open.move_to_end(key)
            while len(self._open) > self._max_open:  # the least recently called goes, its end kept as at expiry
                self._queue_end(self._open.popitem(last=False)[1])
            return Attempt(key, entry.attempts, entry.calls, entry.alerted, entry.published)

    def check_open(self, key: str) -> None:
        """Raise :class:`AttemptsExhausted` when the transaction open for ``key`` has no attempt left, counting
        nothing: asked before a device capture, so that a traveller who will be refused is not asked to scan."""
        with self._lock:
            self._open_with_attempts_left(key, self._clock())

    def _open_with_attempts_left(self, key: str, now: float) -> _Open | None:
        """The transaction open for ``key`` at ``now`` (None: none), refused (:class:`AttemptsExhausted`) when it
        has scored its N calls: until the window after its last scored call passes. Under the lock."""
        self._expire(now)
        entry = self._open.get(key)
        if entry is not None and entry.calls >= entry.attempts:
            raise AttemptsExhausted(EXHAUSTED)
        return entry

    def end(self, attempt: Attempt, *, accepted: bool, alerted: bool = False, published: bool = False,
            unpublished: Any = None) -> None:
        """The outcome of a call ``begin`` counted: ``accepted`` ends its transaction; ``alerted`` (a watchlist
        alert raised) and ``published`` (its decision event published as the transaction's end) are remembered for
        its later calls. ``unpublished``: a call not accepted that published nothing (a step: the kiosk was to call
        again) leaves the end its transaction would publish; if the window passes with no later call publishing
        one (the traveller walked away to an officer), :meth:`take_ended` hands it out to be published."""
        with self._lock:
            entry = self._open.get(attempt.key)
            if entry is None:
                return
            if accepted:
                del self._open[attempt.key]
                return
            entry.alerted = entry.alerted or alerted
            entry.published = entry.published or published
            entry.unpublished = None if entry.published else (unpublished or entry.unpublished)

    def claim_end(self, key: str) -> bool:
        """Whether a call of document ``key`` that ends without a score (its capture failed, it was abandoned, or
        it was refused for exhausted attempts) is to be published as the end of the transaction open for it: True
        once per transaction, when it has scored a call and published no end yet (its calls were steps), and the
        end is then marked published; False when no transaction is open or its end was published already."""
        with self._lock:
            self._expire(self._clock())
            entry = self._open.get(key)
            if entry is None or entry.published or entry.calls == 0:
                return False
            entry.published, entry.unpublished = True, None
            return True

    def take_ended(self, *, all_open: bool = False) -> list[Any]:
        """The ends (``unpublished`` of :meth:`end`) of the transactions whose window has passed with none
        published, each once; with ``all_open`` (the station is stopping) those of every open transaction too,
        which are then forgotten."""
        with self._lock:
            self._expire(self._clock())
            if all_open:
                for entry in self._open.values():
                    self._queue_end(entry)
                self._open.clear()
            ended, self._ended = self._ended, []
            return ended

    def open_count(self) -> int:
        """Transactions open now (their window not passed)."""
        with self._lock:
            self._expire(self._clock())
            return len(self._open)

    def _expire(self, now: float) -> None:
        while self._open:
            key, entry = next(iter(self._open.items()))
            if now - entry.last < self.window_seconds:
                break
            del self._open[key]
            self._queue_end(entry)

    def _queue_end(self, entry: _Open) -> None:
        """Keep for :meth:`take_ended` the end of a transaction forgotten (its window passed, the ledger was full, or
        the station is stopping) with none published. Under the lock."""
        if entry.unpublished is not None and not entry.published:
            self._ended.append(entry.unpublished)
