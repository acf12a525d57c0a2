"""Face extraction on every core: a pool of worker processes, each with its own dlib models.

dlib runs one thread per call and holds the GIL, so threads in one process extract one face at a time.
:class:`FaceWorkerPool` sends each sample to one of N worker processes instead; it is a
:class:`biometrics.service.FaceExtractor`, so ``CheckpointService(..., extractor=pool)`` uses it as it is.

- Workers start from the ``forkserver`` (or ``spawn``) context: a process that runs gRPC threads is never
  forked. Each worker is pinned to one thread (OpenMP, OpenBLAS, MKL, OpenCV) and loads the models once,
  before its first sample (:func:`biometrics.face.load_models`).
- Encoded bytes are sent to the worker (cheap to pickle), decoded there under the pool's
  :class:`~biometrics.imaging.ImageLimits`, as the in-process path does; decoded pixels (a camera frame)
  are sent as they are.
- A refusal raised in a worker (``NoFaceFound``, ``SampleTooLarge``... every ``BiometricError``) reaches
  the caller as the same class with the same message.

Isolation. Each worker has its own pipe and runs one sample at a time, so a worker that dies (the OOM
killer, a crash in native code) loses only the sample it was running: the calls queued or running on the
other workers never see it. That sample is retried once, alone, on a fresh process that replaces the dead
one (a worker killed for reasons of its own, such as memory pressure, costs its caller nothing); if it kills
that one too it is a poison sample, answered :class:`WorkerLost` (UNAVAILABLE), and the worker is replaced
again for the next calls.

Timeouts. A sample may run at most ``call_timeout`` seconds (default :data:`DEFAULT_CALL_TIMEOUT_S`): a
worker still busy then is killed and replaced, and its caller gets :class:`WorkerTimeout` (not retried: a
sample that hangs would hang again). A call therefore waits at most for the samples queued before it, each
bounded, and its own; it never holds its thread forever.

Health. :meth:`FaceWorkerPool.ready` is True only while every worker is up with its models loaded: False
before warm-up completes, while a worker is being replaced, and for good once the pool is closed or broken
(workers that fail to start :data:`MAX_START_FAILURES` times in a row: every call is then answered
:class:`WorkerLost` at once, and the server's health says NOT_SERVING; see :mod:`verify.health`).
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
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from biometrics.errors import BiometricError
from biometrics.face import FaceTemplate, frame_quality
from biometrics.imaging import DEFAULT_LIMITS, ImageLimits

log = logging.getLogger(__name__)

# Environment that keeps a worker's native libraries on one thread (each worker is one core's share).
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
#: Longest one sample may run on a worker, in seconds (a face takes well under a second on one core).
DEFAULT_CALL_TIMEOUT_S = 30.0
#: Longest a worker may take to start and load its models, in seconds.
DEFAULT_START_TIMEOUT_S = 120.0
#: Workers of one slot that fail to start in a row before the pool is declared broken.
MAX_START_FAILURES = 3
# How often an idle slot checks that its worker is alive (a worker killed while idle is replaced at once).
_IDLE_CHECK_S = 0.5


class WorkerFault(RuntimeError):
    """The pool could not complete a call (no fault of the request's fields): transient, try again."""


class WorkerLost(WorkerFault):
    """The worker extracting a sample died twice (once is retried), or the pool cannot start workers."""


class WorkerTimeout(WorkerFault):
    """A sample ran longer than the pool's per-call timeout: its worker was killed and replaced."""


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


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """A worker's life: load the models, say ``("ready", info)``, then run each ``(fn, args)`` sent, one at a
    time, answering ``("ok", result)`` or ``("raised", exception)``, until told to stop (None) or orphaned."""
    try:
        _init_worker()
        conn.send(("ready", worker_info()))
    except BaseException as exc:  # the parent reports it and counts a failed start
        with contextlib.suppress(Exception):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        fn, args = message
        try:
            outcome: tuple[str, Any] = ("ok", fn(*args))
        except Exception as exc:  # the caller gets it: same class, same message
            outcome = ("raised", exc)
        try:
            conn.send(outcome)  # pickled before anything is written: a failure leaves the pipe clean
        except Exception as exc:
            conn.send(("raised", RuntimeError(f"the worker could not send its answer: {type(exc).__name__}: {exc}")))


# -- in the calling process ------------------------------------------------------------------------------

_ENV_LOCK = threading.Lock()  # os.environ is one per process: one pool thread at a time pins it


@contextlib.contextmanager
def _single_thread_env() -> Iterator[None]:
    """Set :data:`SINGLE_THREAD_ENV` while a process that workers inherit their environment from starts."""
    with _ENV_LOCK:
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


Outcome = FaceTemplate | BiometricError | WorkerFault


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any]
    attempts: int = 0


@dataclass
class _Worker:
    process: Any  # multiprocessing.Process of the pool's context
    conn: multiprocessing.connection.Connection
    info: dict[str, Any]


class _StartFailed(Exception):
    """A worker did not come up (exited, raised while loading its models, or too slow)."""


class _Stopping(Exception):
    """The pool is closing without waiting: a worker being started is abandoned."""


class FaceWorkerPool:
    """Face templates extracted in ``workers`` processes (default: one per core).

    Thread-safe: any number of threads may call :meth:`extract_face` at once; calls beyond the worker
    count queue. ``warm=True`` starts every worker and loads its models in the background at once, so the
    first calls do not pay for it (:meth:`warm_up` waits for it); with ``warm=False`` the first call (or
    :meth:`warm_up`) starts them. ``call_timeout``: longest one sample may run (see the module). Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        workers: int | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
        *,
        start_method: str = "forkserver",
        warm: bool = True,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
        start_timeout: float = DEFAULT_START_TIMEOUT_S,
    ) -> None:
        if start_method not in ("forkserver", "spawn"):
            raise ValueError("start_method must be 'forkserver' or 'spawn' (never fork a process with threads)")
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        if self.workers < 1:
            raise ValueError("a pool needs at least one worker")
        if not (0 < call_timeout < float("inf")) or not (0 < start_timeout < float("inf")):
            raise ValueError("call_timeout and start_timeout must be positive numbers of seconds")
        self.limits = limits
        self.call_timeout = float(call_timeout)
        self.start_timeout = float(start_timeout)
        self._context = multiprocessing.get_context(start_method)
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._slots: list[_Worker | None] = [None] * self.workers  # a worker up with its models loaded
        self._wanted = warm  # keep every slot's worker running (set by warm-up or the first call)
        self._closed = False  # no new calls
        self._stopping = False  # the drivers finish the queue and stop their workers
        self._abandon = False  # close(wait=False): no worker is started any more
        self._broken: str | None = None
        self.restarts = 0  # workers replaced after a death or a timeout
        self._drivers = [threading.Thread(target=self._drive, args=(slot,), name=f"face-worker-{slot}", daemon=True)
                         for slot in range(self.workers)]
        for driver in self._drivers:
            driver.start()

    # -- health ------------------------------------------------------------------------------------------

    def queue_depth(self) -> int:
        """Samples submitted and not yet taken by a worker (those running are not counted)."""
        with self._cond:
            return len(self._jobs)

    def ready(self) -> bool:
        """Whether every worker is up with its models loaded and the pool takes calls.

        False before warm-up completes, while a dead or hung worker is being replaced, and for good after
        :meth:`close` or once the pool is broken (its workers cannot start).
        """
        with self._cond:
            return not self._closed and self._broken is None and all(w is not None for w in self._slots)

    @property
    def broken(self) -> str | None:
        """Why the pool is broken beyond repair (its workers cannot start), or None."""
        return self._broken

    def warm_up(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Wait until every worker has started and loaded its models; returns what each worker reports.

        Starts the workers if the pool was built with ``warm=False``. ``timeout`` in seconds (TimeoutError);
        RuntimeError if the pool is closed or broken.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._wanted = True
            self._cond.notify_all()
            while True:
                if self._closed:
                    raise RuntimeError("the face worker pool is closed")
                if self._broken is not None:
                    raise RuntimeError(self._broken)
                up = [w for w in self._slots if w is not None]
                if len(up) == self.workers:
                    return [w.info for w in up]
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{len(up)} of {self.workers} face workers ready")
                self._cond.wait(left)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (those started so far)."""
        with self._cond:
            workers = [w for w in self._slots if w is not None]
        return sorted(w.process.pid for w in workers if w.process.is_alive())

    def close(self, wait: bool = True) -> None:
        """Refuse new calls and stop the workers once the samples already submitted are done.

        ``wait=False``: do not wait; the samples still queued are cancelled (their callers get RuntimeError),
        those running finish. Idempotent.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = self._stopping = True
            if not wait:
                self._abandon = True
                while self._jobs:
                    self._jobs.popleft().future.set_exception(RuntimeError("the face worker pool was closed"))
            self._cond.notify_all()
        if wait:
            for driver in self._drivers:
                if driver is not threading.current_thread():
                    driver.join()

    def __enter__(self) -> FaceWorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one slot: its worker's life and the samples it runs ---------------------------------------------

    def _drive(self, slot: int) -> None:
        """The parent's side of one worker slot: start the worker, run queued samples on it, replace it."""
        worker: _Worker | None = None
        job: _Job | None = None
        try:
            while True:
                with self._cond:
                    while True:
                        if self._broken or (self._stopping and not self._jobs):
                            return
                        if worker is not None and not worker.process.is_alive():
                            break  # died while idle: replaced now, not when a sample finds it dead
                        if worker is not None and self._jobs:
                            job = self._jobs.popleft()
                            break
                        if worker is None and (self._jobs or self._wanted):
                            self._wanted = True  # the first call starts every worker
                            break
                        self._cond.wait(_IDLE_CHECK_S if worker is not None else None)
                if worker is None:
                    worker = self._start(slot)
                elif job is None:
                    log.warning("idle face worker %d died (exit code %s): replaced", worker.process.pid,
                                worker.process.exitcode)
                    self._replaced(slot, worker)
                    worker = None
                else:
                    worker = self._run(slot, worker, job)
                    job = None
        except _Stopping:
            pass
        except Exception as exc:  # a bug here must not leave callers waiting forever
            log.exception("face worker slot %d stopped", slot)
            if job is not None and not job.future.done():
                job.future.set_exception(WorkerLost("Face extraction failed on the server. Please try again."))
            self._break(f"a face worker slot failed: {exc!r}")
        finally:
            self._set_slot(slot, None)
            if worker is not None:
                self._stop_worker(worker)

    def _run(self, slot: int, worker: _Worker, job: _Job) -> _Worker | None:
        """Run ``job`` on ``worker``; returns the worker to go on with (a fresh one after a death), or None."""
        while True:
            kind, value = self._attempt(worker, job)
            if kind in ("ok", "raised"):
                if kind == "ok":
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)
                return worker
            self._replaced(slot, worker)
            job.attempts += 1
            if kind == "timeout":
                log.warning("a face extraction ran over %.3g s: worker %d killed, replaced",
                            self.call_timeout, worker.process.pid)
                job.future.set_exception(WorkerTimeout(
                    f"Face extraction took longer than {self.call_timeout:g} s and was stopped. "
                    "Please try again, with another photograph if it happens again."))
                return None  # the slot starts a new worker before its next sample
            log.warning("face worker %d died (exit code %s) during a sample: replaced%s", worker.process.pid,
                        worker.process.exitcode, ", the sample retried alone" if job.attempts < 2 else "")
            if job.attempts >= 2:
                job.future.set_exception(WorkerLost(
                    "The face extraction worker stopped twice while processing this sample (out of memory, "
                    "or a crash); it was restarted. Please try again, with another photograph if it happens "
                    "again."))
                return None
            try:
                worker = self._start(slot)  # a fresh process: the retry runs alone on it
            except _Stopping:
                job.future.set_exception(RuntimeError("the face worker pool was closed"))
                raise
            if worker is None:
                job.future.set_exception(WorkerLost(
                    "The face extraction worker stopped while processing this sample and could not be "
                    "restarted. Please try again."))
                return None

    def _attempt(self, worker: _Worker, job: _Job) -> tuple[str, Any]:
        """("ok", result), ("raised", exception), ("died", None) or ("timeout", None)."""
        try:
            worker.conn.send((job.fn, job.args))
        except (BrokenPipeError, ConnectionError, EOFError, OSError):
            return "died", None
        ready = multiprocessing.connection.wait([worker.conn, worker.process.sentinel], self.call_timeout)
        if worker.conn in ready:
            try:
                return worker.conn.recv()
            except (EOFError, OSError):
                return "died", None
            except Exception as exc:  # the answer arrived whole but cannot be unpickled here
                return "raised", RuntimeError(f"the worker's answer could not be read: {exc!r}")
        if ready:
            return "died", None
        return "timeout", None

    def _start(self, slot: int) -> _Worker | None:
        """A new worker for ``slot``, up with its models; None after a failed start (broken after too many)."""
        failures = 0
        while True:
            try:
                worker = self._spawn(slot)
            except _StartFailed as exc:
                failures += 1
                log.warning("face worker %d failed to start (%d of %d): %s", slot, failures, MAX_START_FAILURES, exc)
                if failures >= MAX_START_FAILURES:
                    self._break(f"Face extraction is unavailable: its worker processes cannot start ({exc}).")
                    return None
                with self._cond:
                    if self._cond.wait_for(lambda: self._abandon, timeout=min(2.0**failures, 30.0)):
                        raise _Stopping from None
                continue
            self._set_slot(slot, worker)
            return worker

    def _spawn(self, slot: int) -> _Worker:
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_serve, args=(child_conn,), name=f"face-worker-{slot}", daemon=True)
        with _single_thread_env():  # a forkserver's children, or a spawned worker, inherit it
            if self._context.get_start_method() == "forkserver":
                from multiprocessing import forkserver

                forkserver.ensure_running()
            process.start()
        child_conn.close()
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                if self._abandon:
                    raise _Stopping
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _StartFailed(f"no models loaded within {self.start_timeout:g} s")
                ready = multiprocessing.connection.wait([parent_conn, process.sentinel], min(left, 0.25))
                if parent_conn in ready:
                    try:
                        kind, value = parent_conn.recv()
                    except (EOFError, OSError):
                        raise _StartFailed(f"exited while loading its models (exit code {process.exitcode})") from None
                    if kind != "ready":
                        raise _StartFailed(str(value))
                    return _Worker(process, parent_conn, value)
                if ready:
                    raise _StartFailed(f"exited while loading its models (exit code {process.exitcode})")
        except BaseException:
            self._discard(_Worker(process, parent_conn, {}))
            raise

    def _replaced(self, slot: int, worker: _Worker) -> None:
        """Take a dead or hung worker out of its slot (the slot starts another) and count it."""
        self._set_slot(slot, None)
        self._discard(worker)
        with self._cond:
            self.restarts += 1

    def _set_slot(self, slot: int, worker: _Worker | None) -> None:
        with self._cond:
            self._slots[slot] = worker
            self._cond.notify_all()

    def _break(self, reason: str) -> None:
        """Declare the pool broken: every queued and future call is answered WorkerLost at once."""
        with self._cond:
            if self._broken is None:
                self._broken = reason
                log.error("face worker pool broken: %s", reason)
            while self._jobs:
                self._jobs.popleft().future.set_exception(WorkerLost(reason))
            self._cond.notify_all()

    @staticmethod
    def _discard(worker: _Worker) -> None:
        """Kill a worker that died, hung or never came up, and reap it."""
        with contextlib.suppress(Exception):
            worker.process.kill()
        worker.process.join(5)
        worker.conn.close()

    @staticmethod
    def _stop_worker(worker: _Worker) -> None:
        """Ask a worker to exit (it finishes nothing more), then make sure it has."""
        with contextlib.suppress(Exception):
            worker.conn.send(None)
        worker.process.join(5)
        FaceWorkerPool._discard(worker)

    # -- calls ---------------------------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the face worker pool is closed")
            if self._broken is not None:
                future.set_exception(WorkerLost(self._broken))
                return future
            self._jobs.append(_Job(fn, args, future))
            self._cond.notify_all()
        return future

    def _run_all(self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
        """Run ``calls`` on the workers: each one's result, or the exception it raised, in order."""
        futures = [self._submit(fn, args) for fn, args in calls]
        return [future.exception() or future.result() for future in futures]

    def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """``fn(*args)`` in a worker (``fn`` importable by name), with the pool's isolation and timeout."""
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
        with the same message), :class:`WorkerLost` when the worker died on the retry too (or the pool is
        broken), :class:`WorkerTimeout` when the sample ran over ``call_timeout``.
        """
        return self._call(*self._job(image, purpose))

    def frame_quality(self, rgb: np.ndarray) -> float | None:
        """:func:`biometrics.face.frame_quality` of one camera frame (RGB uint8), computed in a worker: the
        camera's frame scorer (``Camera(frame_scorer=pool.frame_quality)``).

        dlib's face detection holds the GIL for its whole run, and on a frame with no face the cascade falls
        back to the CNN detector (hundreds of milliseconds a frame): scored in the server process, every other
        call's thread stalls meanwhile. In a worker it runs beside them, bounded by ``call_timeout``
        (:class:`WorkerTimeout`), and a crash in it costs one frame (:class:`WorkerLost`).
        """
        return self._call(frame_quality, (np.ascontiguousarray(rgb),))

    def map_faces(self, images: Sequence[bytes | np.ndarray], purpose: str = "probe") -> list[Outcome]:
        """Templates of a batch, in the order of ``images``, extracted on all workers at once.

        Each item is the image's :class:`FaceTemplate`, or, in its place, the refusal it raised (a
        ``BiometricError``: no face, not an image...) or a :class:`WorkerFault` (lost, timed out): one bad
        image does not cost the batch. Test with ``isinstance(item, FaceTemplate)``. Anything else (a bug,
        such as pixels that are not RGB uint8) is raised, after the whole batch has run.
        """
        outcomes = self._run_all([self._job(image, purpose) for image in images])
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, BiometricError | WorkerFault):
                raise outcome
        return outcomes
