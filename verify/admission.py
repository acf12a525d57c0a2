"""How many calls the server takes at once, and how many of them may be long-lived health watches.

gRPC runs each call on a thread of a fixed pool. Without a bound, a call that finds every thread busy waits in
an unbounded queue and fails only at its caller's deadline (``DEADLINE_EXCEEDED``, after the kiosk has waited
it all), and a few long-lived calls (``grpc.health.v1.Health/Watch`` streams, captures waiting for a traveller)
can hold every thread. :class:`Admission` answers instead, at once:

Every refusal here is ``UNAVAILABLE`` (:data:`REFUSAL_CODE`), gRPC's status for "try again in a moment", which a
kiosk tells from the ``RESOURCE_EXHAUSTED`` of a request too large to be taken at all (:mod:`verify.status`):

- at most ``calls`` calls run at the same time (``--threads``); one more is refused ``UNAVAILABLE``
  with :data:`BUSY_MESSAGE`. The server's thread pool holds :data:`REFUSAL_THREADS` more threads than that,
  only ever busy saying so, and gRPC itself refuses a call beyond both (``maximum_concurrent_rpcs``: its own
  message, "Concurrent RPC limit exceeded!", ``RESOURCE_EXHAUSTED``), so a call never waits in a queue for a thread;
- at most ``watches`` long-lived streams (Health Watch, server reflection: each holds a thread for as long as
  its client likes) are open at once; one more is refused ``UNAVAILABLE`` with :data:`WATCH_MESSAGE`.
  ``watches`` is below ``calls``, so such streams never take every thread from the unary calls;
- at most ``calls_per_kiosk`` of them are one kiosk certificate's (``--max-calls-per-kiosk``, counted by the
  certificate's SHA-256 fingerprint); one more of that kiosk's is refused ``UNAVAILABLE`` with
  :data:`KIOSK_MESSAGE`, while other kiosks' calls are still admitted. One stolen or misbehaving kiosk sending
  many slow calls at once (a Verify of ten 800 x 800 fingerprints takes about 15 s) could otherwise hold every
  slot, and every other kiosk's traveller would hear that the server is busy. Only kiosks are held to it
  (:class:`verify.roles.RoleInterceptor` passes the caller only when its role is ``kiosk``): officers and
  auditors are a few staffed desks and monitors, a plaintext development server has one identity for every
  caller (an officer), and both still have ``calls``.

Each refusal is counted by its reason (:data:`REASONS`; ``checkpoint_admission_refused_total`` in the operator
metrics, through ``on_refused``), and a kiosk held to its limit is logged at WARNING at most once a minute
(:data:`KIOSK_WARNING_INTERVAL_S`) with the number of its calls refused since: a misbehaving kiosk retrying in a
loop must not flood the log.

A slot is taken when the call's handler starts and given back when the handler's thread is done with it
(:meth:`Admission.enter` returns the release, which the handler calls in a ``finally``; a stream's when its
responses are exhausted or dropped), not when the call ends: gRPC tells a handler's callbacks that its call
ended (the client cancelled, its deadline passed) while the handler still runs on its thread, and a count of
calls still wanted would admit new calls on top of abandoned ones that hold every thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from biometrics.types import Actor

log = logging.getLogger(__name__)

#: Threads of the server's pool kept beyond ``--threads``: they only answer "busy" to calls over the limit.
REFUSAL_THREADS = 4
#: Health Watch streams open at once, by default (each holds a gRPC thread while it is open).
DEFAULT_WATCHES = 4
#: Calls of one kiosk certificate at once, by default (at most ``calls - 1``): a kiosk serves one traveller at a
#: time, one call after the other (capture, Verify, rating), so 3 leaves room for a capture preview or a status
#: call beside the traveller's, and for a retry sent while the call it replaces is still finishing on the
#: server (an abandoned call holds its slot until its handler's thread is done with it, up to one sample's
#: extraction). One kiosk then holds at most 3 of the default 16 slots.
DEFAULT_CALLS_PER_KIOSK = 3
WATCH_METHOD = "/grpc.health.v1.Health/Watch"
#: The long-lived streams, counted against ``watches``.
STREAMS = frozenset({WATCH_METHOD, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                     "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"})
BUSY_MESSAGE = ("The server is answering as many calls as it can at once ({calls}). Please try again in a "
                "moment.")
KIOSK_MESSAGE = ("This kiosk already has as many checks running as one kiosk may have at once ({running}). Please "
                 "wait for them to finish, then try again.")
#: The status of every refusal: retry in a moment (never ``RESOURCE_EXHAUSTED``: a request too large, never retried).
REFUSAL_CODE = grpc.StatusCode.UNAVAILABLE
#: Why a call is refused: every slot busy, its kiosk at ``calls_per_kiosk``, the long-lived streams at ``watches``.
BUSY, KIOSK_LIMIT, WATCH_LIMIT = "busy", "kiosk_limit", "watch_limit"
REASONS = (BUSY, KIOSK_LIMIT, WATCH_LIMIT)
#: A kiosk held to its limit is logged at most this often (seconds), with how many of its calls were refused.
KIOSK_WARNING_INTERVAL_S = 60.0
WATCH_MESSAGE = ("{watches} long-lived streams (health watches, reflection) are open already, the most this server "
                 "keeps; use Health/Check, or close a stream.")


def default_calls_per_kiosk(calls: int) -> int:
    """The calls one kiosk may have at once when the operator sets none: :data:`DEFAULT_CALLS_PER_KIOSK`, or
    ``calls - 1`` if that is fewer (so that one kiosk never holds every slot)."""
    return max(1, min(DEFAULT_CALLS_PER_KIOSK, calls - 1))


def check_limits(calls: int, watches: int, calls_per_kiosk: int | None = None) -> None:
    """Refuse (ValueError) limits that leave no thread for unary calls, or let one kiosk take every thread
    (``calls_per_kiosk`` None: the default, :func:`default_calls_per_kiosk`)."""
    if calls < 2:
        raise ValueError(f"--threads must be at least 2, got {calls}")
    if not 0 <= watches < calls:
        raise ValueError(f"--max-watches must be from 0 to --threads - 1 ({calls - 1}), got {watches}")
    if calls_per_kiosk is not None and not 1 <= calls_per_kiosk < calls:
        raise ValueError(f"--max-calls-per-kiosk must be from 1 to --threads - 1 ({calls - 1}), got "
                         f"{calls_per_kiosk}: at --threads or above one kiosk could hold every slot")


class Admission:
    """The count of calls running, of Watch streams open and of each kiosk's calls, refusing beyond ``calls``,
    ``watches`` and ``calls_per_kiosk`` (None: :func:`default_calls_per_kiosk`)."""

    def __init__(self, calls: int, watches: int = DEFAULT_WATCHES, calls_per_kiosk: int | None = None, *,
                 on_refused: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        check_limits(calls, watches, calls_per_kiosk)
        self.on_refused = on_refused  # told each refusal's reason (one of REASONS): the operator metrics
        self._clock = clock
        self._kiosk_warned: dict[str, tuple[float, int]] = {}  # kiosk key -> (last warning, refusals since)
        self.calls = calls
        self.watches = watches
        self.calls_per_kiosk = default_calls_per_kiosk(calls) if calls_per_kiosk is None else calls_per_kiosk
        self._lock = threading.Lock()
        self._running = 0
        self._watching = 0
        self._by_kiosk: dict[str, int] = {}  # a kiosk's key -> its calls running; no entry at zero

    @property
    def running(self) -> int:
        """Calls admitted and not ended yet."""
        return self._running

    def running_for(self, kiosk: Actor) -> int:
        """Calls of ``kiosk`` admitted and not ended yet."""
        return self._by_kiosk.get(kiosk_key(kiosk), 0)

    def enter(self, full_method: str, context: grpc.ServicerContext, kiosk: Actor | None = None) -> Callable[[], None]:
        """Admit the call now, or abort it ``UNAVAILABLE`` (:data:`REFUSAL_CODE`); returns the release of its slot
        (idempotent), which the handler calls when its thread is done with the call.

        ``kiosk``: the calling kiosk, whose calls running at once are held to ``calls_per_kiosk``; None for a
        caller not so limited (officers, auditors, the plaintext development caller).
        """
        watch = full_method in STREAMS
        key = kiosk_key(kiosk) if kiosk is not None else None
        with self._lock:
            mine = self._by_kiosk.get(key, 0) if key is not None else 0
            if watch and self._watching >= self.watches:
                reason, refusal = WATCH_LIMIT, WATCH_MESSAGE.format(watches=self.watches)
            elif key is not None and mine >= self.calls_per_kiosk:
                reason, refusal = KIOSK_LIMIT, KIOSK_MESSAGE.format(running=mine)
            elif self._running >= self.calls:
                reason, refusal = BUSY, BUSY_MESSAGE.format(calls=self.calls)
            else:
                reason = refusal = ""
                self._running += 1
                self._watching += watch
                if key is not None:
                    self._by_kiosk[key] = mine + 1
        if refusal:
            if self.on_refused is not None:
                self.on_refused(reason)
            if reason == KIOSK_LIMIT:
                self._warn_kiosk(kiosk, key, mine)  # type: ignore[arg-type]
            context.abort(REFUSAL_CODE, refusal)
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if released.is_set():
                    return
                released.set()
                self._running -= 1
                self._watching -= watch
                if key is not None:
                    left = self._by_kiosk[key] - 1
                    if left:
                        self._by_kiosk[key] = left
                    else:
                        del self._by_kiosk[key]

        return release

    def _warn_kiosk(self, kiosk: Actor, key: str, running: int) -> None:
        """Log a kiosk held to its limit, at most once every :data:`KIOSK_WARNING_INTERVAL_S` per kiosk."""
        now = self._clock()
        with self._lock:
            last, refused = self._kiosk_warned.get(key, (None, 0))
            refused += 1
            if last is not None and now - last < KIOSK_WARNING_INTERVAL_S:
                self._kiosk_warned[key] = (last, refused)
                return
            self._kiosk_warned[key] = (now, 0)
            if len(self._kiosk_warned) > 10_000:  # many certificates over a long run: forget the quiet ones
                self._kiosk_warned = {k: v for k, v in self._kiosk_warned.items()
                                      if now - v[0] < KIOSK_WARNING_INTERVAL_S}
        what = "a call" if last is None else f"{refused} calls"
        since = "" if last is None else f" in the last {now - last:.0f} s"
        log.warning("refused %s of kiosk %s%s: %d of its calls running (--max-calls-per-kiosk; said at most once a "
                    "minute per kiosk)", what, kiosk.identity, since, running)


def kiosk_key(kiosk: Actor) -> str:
    """What one kiosk's calls are counted by: its certificate's SHA-256 fingerprint (a certificate re-issued
    under the same name is another kiosk, so a stolen old one never takes the new one's calls), or its
    identity when the actor has none."""
    return kiosk.extra.get("fingerprint_sha256") or f"identity:{kiosk.identity}"
