"""Small helpers shared by the benchmarks: a timestamped progress line, a free local port."""

from __future__ import annotations

import socket
import sys
import time


def log(message: str) -> None:
    """``message`` on stderr after the wall-clock time (progress of a long run)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


def free_ports(count: int, avoid: set[int] | None = None) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1, none of ``avoid``: the sockets are held open together
    while chosen (one at a time, the system may hand the same port out twice in a row)."""
    avoid = set() if avoid is None else avoid
    held: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            s = socket.socket()
            held.append(s)
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port not in avoid and port not in ports:
                ports.append(port)
        return ports
    finally:
        for s in held:
            s.close()
