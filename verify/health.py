"""The gRPC health service (grpc.health.v1) tied to what the server needs to answer: SERVING only while every
check passes (the face worker pool is up, ...), NOT_SERVING otherwise, re-checked every ``interval`` seconds.

A load balancer or a kiosk that asks Health before calling thus hears NOT_SERVING while the face workers are
still loading their models, while one is being replaced after a crash or a hang, and for good once the pool is
broken, instead of SERVING from the moment the port opens. Nothing here needs a running server: the watcher
only calls ``health_servicer.set``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)

HealthCheck = Callable[[], bool]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def passing(checks: Sequence[HealthCheck]) -> bool:
    """Whether every check passes; a check that raises fails (and is logged), it never stops the watcher."""
    for check in checks:
        try:
            if not check():
                return False
        except Exception:
            log.exception("health check %r failed", check)
            return False
    return True


def _apply(health_servicer: health.HealthServicer, services: Sequence[str], serving: bool) -> None:
    status = SERVING if serving else NOT_SERVING
    for service in services:
        health_servicer.set(service, status)


def watch_health(
    health_servicer: health.HealthServicer,
    services: Sequence[str],
    checks: Sequence[HealthCheck],
    stop: threading.Event,
    interval: float = 0.5,
) -> None:
    """Until ``stop`` is set: each of ``services`` SERVING while every check passes, NOT_SERVING otherwise.

    The first status is set at once, then re-checked every ``interval`` seconds; each change is logged.
    ``services`` usually holds ``""`` (the whole server) and the full name of each service. Run it in a daemon
    thread (:func:`start_health_watch`). After ``stop`` the statuses are left as they are (the server's
    shutdown sets them NOT_SERVING with ``enter_graceful_shutdown``).
    """
    last: bool | None = None
    while True:
        serving = passing(checks)
        if serving != last:
            _apply(health_servicer, services, serving)
            if last is not None or not serving:
                log.info("health: %s", "SERVING" if serving else "NOT_SERVING")
            last = serving
        if stop.wait(interval):
            return


def start_health_watch(
    health_servicer: health.HealthServicer,
    services: Sequence[str],
    checks: Sequence[HealthCheck],
    stop: threading.Event,
    interval: float = 0.5,
) -> threading.Thread:
    """Set the statuses now from the checks (so no service says SERVING before they pass), then keep them
    up to date in a daemon thread running :func:`watch_health`; returns the thread (it ends once ``stop`` is
    set)."""
    _apply(health_servicer, services, passing(checks))
    thread = threading.Thread(target=watch_health, args=(health_servicer, services, checks, stop, interval),
                              name="health-watch", daemon=True)
    thread.start()
    return thread
