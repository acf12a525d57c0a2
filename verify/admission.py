"""How many calls the server takes at once, and how many of them may be long-lived health watches.

gRPC runs each call on a thread of a fixed pool. Without a bound, a call that finds every thread busy waits in
an unbounded queue and fails only at its caller's deadline (``DEADLINE_EXCEEDED``, after the kiosk has waited
it all), and a few long-lived calls (``grpc.health.v1.Health/Watch`` streams, captures waiting for a traveller)
can hold every thread. :class:`Admission` answers instead, at once:

- at most ``calls`` calls run at the same time (``--threads``); one more is refused ``RESOURCE_EXHAUSTED``
  with :data:`BUSY_MESSAGE`. The server's thread pool holds :data:`REFUSAL_THREADS` more threads than that,
  only ever busy saying so, and gRPC itself refuses a call beyond both (``maximum_concurrent_rpcs``: its own
  message, "Concurrent RPC limit exceeded!"), so a call never waits in a queue for a thread;
- at most ``watches`` long-lived streams (Health Watch, server reflection: each holds a thread for as long as
  its client likes) are open at once; one more is refused ``RESOURCE_EXHAUSTED`` with :data:`WATCH_MESSAGE`.
  ``watches`` is below ``calls``, so such streams never take every thread from the unary calls.

A slot is taken when the call's handler starts and given back when the handler's thread is done with it
(:meth:`Admission.enter` returns the release, which the handler calls in a ``finally``; a stream's when its
responses are exhausted or dropped), not when the call ends: gRPC tells a handler's callbacks that its call
ended (the client cancelled, its deadline passed) while the handler still runs on its thread, and a count of
calls still wanted would admit new calls on top of abandoned ones that hold every thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

#: Threads of the server's pool kept beyond ``--threads``: they only answer "busy" to calls over the limit.
REFUSAL_THREADS = 4
#: Health Watch streams open at once, by default (each holds a gRPC thread while it is open).
DEFAULT_WATCHES = 4
WATCH_METHOD = "/grpc.health.v1.Health/Watch"
#: The long-lived streams, counted against ``watches``.
STREAMS = frozenset({WATCH_METHOD, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                     "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"})
BUSY_MESSAGE = ("The server is answering as many calls as it can at once ({calls}). Please try again in a "
                "moment.")
WATCH_MESSAGE = ("{watches} long-lived streams (health watches, reflection) are open already, the most this server "
                 "keeps; use Health/Check, or close a stream.")


def check_limits(calls: int, watches: int) -> None:
    """Refuse (ValueError) limits that leave no thread for unary calls."""
    if calls < 2:
        raise ValueError(f"--threads must be at least 2, got {calls}")
    if not 0 <= watches < calls:
        raise ValueError(f"--max-watches must be from 0 to --threads - 1 ({calls - 1}), got {watches}")


class Admission:
    """The count of calls running and of Watch streams open, refusing beyond ``calls`` and ``watches``."""

    def __init__(self, calls: int, watches: int = DEFAULT_WATCHES) -> None:
        check_limits(calls, watches)
        self.calls = calls
        self.watches = watches
        self._lock = threading.Lock()
        self._running = 0
        self._watching = 0

    @property
    def running(self) -> int:
        """Calls admitted and not ended yet."""
        return self._running

    def enter(self, full_method: str, context: grpc.ServicerContext) -> Callable[[], None]:
        """Admit the call now, or abort it ``RESOURCE_EXHAUSTED``; returns the release of its slot (idempotent),
        which the handler calls when its thread is done with the call."""
        watch = full_method in STREAMS
        with self._lock:
            if watch and self._watching >= self.watches:
                refusal = WATCH_MESSAGE.format(watches=self.watches)
            elif self._running >= self.calls:
                refusal = BUSY_MESSAGE.format(calls=self.calls)
            else:
                refusal = ""
                self._running += 1
                self._watching += watch
        if refusal:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self._running -= 1
                self._watching -= watch

        return release
