"""Face extraction on every core: a pool of worker processes, each with its own dlib models.

dlib runs one thread per call and holds the GIL, so threads in one process extract one face at a time.
:class:`FaceWorkerPool` sends each sample to one of N worker processes instead; it is a
:class:`biometrics.service.FaceExtractor`, so ``CheckpointService(..., extractor=pool)`` uses it as it is.

- Workers start from the ``forkserver`` (or ``spawn``) context: a process that runs gRPC threads is never
  forked. Each worker is pinned to one thread (OpenMP, OpenBLAS, MKL, OpenCV) and loads the models once,
  in its initializer (:func:`biometrics.face.load_models`).
- Encoded bytes are sent to the worker (cheap to pickle), decoded there under the pool's
  :class:`~biometrics.imaging.ImageLimits`, as the in-process path does; decoded pixels (a camera frame)
  are sent as they are.
- A refusal raised in a worker (``NoFaceFound``, ``SampleTooLarge``... every ``BiometricError``) reaches
  the caller as the same class with the same message.
- A worker that dies (killed by the OOM killer, a crash in native code) breaks the whole executor and every
  call in flight on it. The pool is rebuilt and each of those calls is retried once, on the new workers;
  a call whose worker dies again raises :class:`WorkerLost` (the server answers UNAVAILABLE, "try again"),
  and the pool is rebuilt once more for the next calls. One retry, not more: a sample that kills its worker
  every time must not take every other call in flight down with it twice.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from biometrics.errors import BiometricError
from biometrics.face import FaceTemplate
from biometrics.imaging import DEFAULT_LIMITS, ImageLimits

log = logging.getLogger(__name__)

# Environment that keeps a worker's native libraries on one thread (each worker is one core's share).
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


class WorkerLost(RuntimeError):
    """The worker extracting a sample died twice (once is retried): the call cannot be completed now."""


# -- in the worker process -------------------------------------------------------------------------------

def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


def _init_worker() -> None:
    """Pin this worker to one thread and load the models once, before its first sample.

    The worker ignores SIGINT (a terminal's Ctrl-C reaches the whole process group: the server decides when
    its workers stop) and exits when its parent dies (killed with SIGKILL, it cannot close the pool).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    os.environ.update(SINGLE_THREAD_ENV)
    import cv2

    cv2.setNumThreads(1)
    with contextlib.suppress(ImportError):  # numpy's OpenBLAS, when it was loaded before the env was set
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    from biometrics.face import load_models

    load_models()


def _extract(image: bytes | np.ndarray, purpose: str, limits: ImageLimits) -> FaceTemplate:
    from biometrics.face import face_template_of

    return face_template_of(image, purpose, limits)  # type: ignore[arg-type]


def worker_info() -> dict[str, Any]:
    """The worker's pid and thread settings (the pool's :meth:`FaceWorkerPool.warm_up` returns these)."""
    import cv2

    return {"pid": os.getpid(), "cv2_threads": cv2.getNumThreads(),
            **{name: os.environ.get(name, "") for name in SINGLE_THREAD_ENV}}


# -- in the calling process ------------------------------------------------------------------------------

@contextlib.contextmanager
def _single_thread_env() -> Iterator[None]:
    """Set :data:`SINGLE_THREAD_ENV` while a process that workers inherit their environment from starts."""
    saved = {name: os.environ.get(name) for name in SINGLE_THREAD_ENV}
    os.environ.update(SINGLE_THREAD_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


Outcome = FaceTemplate | BiometricError | WorkerLost


class FaceWorkerPool:
    """Face templates extracted in ``workers`` processes (default: one per core).

    Thread-safe: any number of threads may call :meth:`extract_face` at once; calls beyond the worker
    count queue. ``warm=True`` starts every worker and loads its models in the background at once, so the
    first calls do not pay for it (:meth:`warm_up` waits for it). Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(
        self,
        workers: int | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
        *,
        start_method: str = "forkserver",
        warm: bool = True,
    ) -> None:
        if start_method not in ("forkserver", "spawn"):
            raise ValueError("start_method must be 'forkserver' or 'spawn' (never fork a process with threads)")
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        if self.workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.limits = limits
        self._context = multiprocessing.get_context(start_method)
        self._lock = threading.Lock()
        self._closed = False
        self._generation = 0
        self.rebuilds = 0
        self._warming: list[Future[dict[str, Any]]] = []
        self._executor = self._new_executor()
        if warm:
            self._start_warm_up()

    # -- pool life ---------------------------------------------------------------------------------------

    def _new_executor(self) -> ProcessPoolExecutor:
        if self._context.get_start_method() == "forkserver":
            # Workers are forked from the fork server and inherit its environment: start it pinned.
            from multiprocessing import forkserver

            with _single_thread_env():
                forkserver.ensure_running()
        return ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_init_worker)

    def _start_warm_up(self) -> None:
        # Workers are spawned on demand, one per submission that finds none idle: N submissions in a row
        # start all N, and each loads its models in its initializer before answering.
        with self._lock:
            executor = self._executor
        with contextlib.suppress(BrokenProcessPool, RuntimeError):
            self._warming = [executor.submit(worker_info) for _ in range(self.workers)]

    def warm_up(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Wait until every worker has started and loaded its models; returns what each worker reports.

        Starts the warm-up if the pool was built with ``warm=False``. ``timeout`` in seconds.
        """
        if not self._warming:
            self._start_warm_up()
        deadline = None if timeout is None else time.monotonic() + timeout
        ready: dict[int, dict[str, Any]] = {}
        # A worker that is up answers pings while another still loads its models: ask until all have answered.
        while True:
            for future in self._warming:
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                info = future.result(left)
                ready[info["pid"]] = info
            if len(ready) >= self.workers:
                return list(ready.values())
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{len(ready)} of {self.workers} face workers ready")
            time.sleep(0.05)
            with self._lock:
                executor = self._executor
            self._warming = [executor.submit(worker_info) for _ in range(self.workers)]

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (those started so far)."""
        with self._lock:
            processes = dict(getattr(self._executor, "_processes", None) or {})
        return sorted(pid for pid, p in processes.items() if p.is_alive())

    def _rebuild(self, generation: int) -> None:
        """Replace a broken executor, once per breakage however many calls saw it break."""
        with self._lock:
            if self._closed or generation != self._generation:
                return
            broken = self._executor
            self._executor = self._new_executor()
            self._generation += 1
            self.rebuilds += 1
        log.warning("a face extraction worker died: pool rebuilt (%d workers, rebuild %d)",
                    self.workers, self.rebuilds)
        broken.shutdown(wait=False, cancel_futures=True)
        self._start_warm_up()

    def close(self, wait: bool = True) -> None:
        """Stop the workers once the samples already submitted are done (``wait=False``: do not wait)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor = self._executor
        executor.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> FaceWorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Future[Any] | None, int]:
        """(future, generation), or (None, generation) when the executor is already broken."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the face worker pool is closed")
            executor, generation = self._executor, self._generation
        try:
            return executor.submit(fn, *args), generation
        except (BrokenProcessPool, RuntimeError):
            # Broken, or shut down by a rebuild since we read it: retried on the current executor.
            if self._closed:
                raise RuntimeError("the face worker pool is closed") from None
            return None, generation

    def _run_all(self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
        """Run ``calls`` on the workers: each one's result, or the exception it raised, in order.

        Calls lost to a dead worker are retried once on a rebuilt pool; lost again, they get WorkerLost.
        """
        outcomes: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(2):
            submitted = [(i, *self._submit(*calls[i])) for i in pending]
            lost: list[int] = []
            broken_generations: set[int] = set()
            for i, future, generation in submitted:
                try:
                    if future is None:
                        raise BrokenProcessPool("the pool was broken before the call was submitted")
                    outcomes[i] = future.result()
                except BrokenProcessPool:
                    lost.append(i)
                    broken_generations.add(generation)
                except Exception as exc:  # the worker's own exception, unpickled: same class, same message
                    outcomes[i] = exc
            for generation in broken_generations:
                self._rebuild(generation)
            if not lost:
                break
            pending = lost
            if attempt == 1:
                for i in lost:
                    outcomes[i] = WorkerLost(
                        "The face extraction worker stopped twice while processing this sample (out of memory, "
                        "or a crash); the worker pool was restarted. Please try again.")
        return outcomes

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        outcome = self._run_all([(fn, args)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _job(self, image: bytes | np.ndarray, purpose: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if isinstance(image, bytes | bytearray | memoryview):
            image = bytes(image)
        return _extract, (image, purpose, self.limits)

    def extract_face(self, image: bytes | np.ndarray, purpose: str = "probe") -> FaceTemplate:
        """The face template of ``image`` (JPEG/PNG bytes, or RGB uint8 pixels), extracted in a worker.

        Raises what in-process extraction raises (``NoFaceFound``, ``UnsupportedImage``, ``SampleTooLarge``...
        with the same message), or :class:`WorkerLost` when the worker died on the retry too.
        """
        return self._call(*self._job(image, purpose))

    def map_faces(self, images: Sequence[bytes | np.ndarray], purpose: str = "probe") -> list[Outcome]:
        """Templates of a batch, in the order of ``images``, extracted on all workers at once.

        Each item is the image's :class:`FaceTemplate`, or, in its place, the refusal it raised (a
        ``BiometricError``: no face, not an image...) or :class:`WorkerLost`: one bad image does not cost the
        batch. Test with ``isinstance(item, FaceTemplate)``. Anything else (a bug, such as pixels that are not
        RGB uint8) is raised, after the whole batch has run.
        """
        outcomes = self._run_all([self._job(image, purpose) for image in images])
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, BiometricError | WorkerLost):
                raise outcome
        return outcomes
