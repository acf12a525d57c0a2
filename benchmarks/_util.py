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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
