"""A TCP proxy a benchmark controls, to cut a station's link to PostgreSQL for real (no mocked driver).

``with LinkProxy(("127.0.0.1", 5432), name="island-a") as link:`` listens on a free loopback port and forwards
every connection to the target; a station is given :meth:`LinkProxy.url` as its ``--store``. :meth:`LinkProxy.cut`
closes every open connection at once and refuses new ones (accepted, then closed: what a dropped link looks like
to the driver); :meth:`LinkProxy.restore` forwards again. Each cut and restore is timed (``time.monotonic()``)
and the proxy counts what it forwarded and refused, for the report.

The tests cut links with it too (tests/test_register.py, test_island.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class LinkProxy:
    """A loopback TCP forwarder whose link the benchmark cuts and restores."""

    def __init__(self, target: tuple[str, int], *, name: str = "link") -> None:
        self.target = target
        self.name = name
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"link-{name}", daemon=True)
        self.events: list[tuple[str, float]] = []  # ("cut" | "restore", time.monotonic())
        self.forwarded_connections = 0
        self.refused_connections = 0
        self.dropped_connections = 0
        self.bytes_forwarded = 0

    @classmethod
    def to_url(cls, url: str, *, name: str = "link") -> LinkProxy:
        """A proxy to the server of a ``postgresql://`` URL (not started: use it as a context manager)."""
        parts = urlsplit(url)
        return cls((parts.hostname or "127.0.0.1", parts.port or 5432), name=name)

    def __enter__(self) -> LinkProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def up(self) -> bool:
        """Whether the link forwards now."""
        return self._up.is_set()

    def url(self, url: str) -> str:
        """``url`` (a PostgreSQL URL of the target server) rewritten to go through this proxy."""
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        if parts.password:
            user = f"{parts.username}:{parts.password}@"
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def cut(self) -> float:
        """Drop every connection now and refuse new ones until :meth:`restore`; returns the time of the cut."""
        self._up.clear()
        at = time.monotonic()
        self.events.append(("cut", at))
        self.dropped_connections += self._drop_all()
        return at

    def restore(self) -> float:
        """Forward connections again; returns the time of the restore."""
        self._up.set()
        at = time.monotonic()
        self.events.append(("restore", at))
        return at

    def close(self) -> None:
        """Stop the proxy and drop its connections."""
        self._stop.set()
        self._up.clear()
        self._drop_all()
        with contextlib.suppress(OSError):
            self._server.close()

    def stats(self) -> dict[str, Any]:
        """What the proxy did: connections forwarded, refused while cut, dropped by a cut; bytes; cuts, restores."""
        return {"name": self.name, "port": self.port, "forwarded_connections": self.forwarded_connections,
                "refused_connections": self.refused_connections, "dropped_connections": self.dropped_connections,
                "bytes_forwarded": self.bytes_forwarded,
                "cuts": sum(1 for kind, _ in self.events if kind == "cut"),
                "restores": sum(1 for kind, _ in self.events if kind == "restore")}

    def _drop_all(self) -> int:
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        return len(sockets) // 2

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up.is_set():
                self.refused_connections += 1
                client.close()  # refused while the link is cut
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if not self._up.is_set():  # cut while we were connecting
                    for s in (client, upstream):
                        s.close()
                    self.refused_connections += 1
                    continue
                self._sockets.update((client, upstream))
                self.forwarded_connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), name=f"link-{self.name}-pipe", daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
                self.bytes_forwarded += len(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.close()
