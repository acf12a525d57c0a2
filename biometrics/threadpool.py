"""A module's own thread pool: one thread per core, created on first use."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


class LazyThreadPool:
    """Calling it returns its :class:`ThreadPoolExecutor` (``os.cpu_count()`` threads named ``prefix``), which the
    first call creates (thread-safe); every call after returns that same pool. One instance per module that wants
    a pool of its own."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix=self.prefix)
            return self._executor
