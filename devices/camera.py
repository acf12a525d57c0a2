"""A station camera over ``cv2.VideoCapture``: a device index, a stream URL, or a video file.

A video file plays as a camera that never runs dry: it loops when it ends. Frames come back RGB uint8
HxWx3; a frame that is not 8-bit grey, BGR or BGRA (16-bit, float) is refused as corrupt data, not converted
(a 16-bit frame may hold 10, 12 or 16 significant bits: no one scaling is right for all).
:meth:`Camera.capture` takes a short burst and returns its best frame. What "best" means for a
face is not this module's business: the caller injects a ``frame_scorer`` (RGB frame -> score, higher
is better, ``None`` = unusable, e.g. no face or several); without one, frames are ranked by sharpness
(variance of the Laplacian) alone.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from devices.access import DeviceLock
from devices.errors import (
    CaptureCancelled,
    DeviceBusy,
    DeviceCorruptData,
    DeviceDisconnected,
    DeviceError,
    DevicePortMissing,
    DeviceSilent,
    DeviceTimeout,
    DeviceUnavailable,
)
from devices.timeouts import CAMERA_DEFAULT_TIMEOUT_S, bounded_timeout, check_default_timeout

FrameScorer = Callable[[np.ndarray], float | None]
CaptureFactory = Callable[[str | int], Any]  # returns an object with cv2.VideoCapture's read/isOpened/release

DEFAULT_TIMEOUT_S = CAMERA_DEFAULT_TIMEOUT_S
DEFAULT_BURST = 5
SCORE_POLL_S = 0.05  # while a frame is scored, how often the capture looks at its deadline and its cancel
# In a burst, each frame is given at least this long before the camera is called silent, even when the
# burst's deadline is nearer: a burst that runs out of time ends as a timeout, not as a device fault.
MIN_DEVICE_CALL_S = 1.0


def sharpness(frame: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper; 0 for a flat (blank) frame."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def parse_source(source: str | int) -> tuple[str | int, str]:
    """``source`` as ``cv2.VideoCapture`` takes it, and its kind: "device", "stream" or "file"."""
    if isinstance(source, int):
        return source, "device"
    text = source.strip()
    if not text:
        raise ValueError("empty camera source")
    if text.isdigit():
        return int(text), "device"
    if "://" in text:
        return text, "stream"
    return text, "file"


class Camera:
    """One camera. Thread-safe: one grab or capture at a time (a second caller waits, then gets busy)."""

    def __init__(
        self,
        source: str | int,
        *,
        name: str = "camera0",
        frame_scorer: FrameScorer | None = None,
        burst_size: int = DEFAULT_BURST,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        capture_factory: CaptureFactory = cv2.VideoCapture,
    ) -> None:
        if burst_size < 1:
            raise ValueError("burst_size must be at least 1")
        self.source, self.kind = parse_source(source)
        self.name = name
        self.frame_scorer = frame_scorer
        self.burst_size = burst_size
        self.default_timeout_s = check_default_timeout(default_timeout_s)
        self.lock = DeviceLock(name)
        self.last_error: DeviceError | None = None
        self.opens = 0  # how many times the source was opened (first open and reopens)
        self._factory = capture_factory
        self._capture: Any = None
        self._info: dict[str, str] = {}
        self._worker = self._new_worker()
        # frames are scored here, so that a capture can stop waiting for a score (its deadline, its cancel) and
        # free the camera while a slow scorer (a frame queued behind extractions in the worker pool) finishes
        self._scoring = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-score")

    # -- opening -------------------------------------------------------------------------------

    def _new_worker(self) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)

    @property
    def is_open(self) -> bool:
        """Whether the source is open now."""
        return self._capture is not None

    def _fault(self, kind: type[DeviceError], message: str) -> DeviceError:
        self.last_error = kind(f"camera {self.name} {message}")
        self.last_error.device = "camera"
        return self.last_error

    def _open(self, timeout_s: float) -> None:
        if self._capture is not None:
            return
        if self.kind == "file" and not Path(self.source).is_file():
            raise self._fault(DevicePortMissing, f"video file {self.source} not found")
        capture = self._on_worker(lambda: self._factory(self.source), timeout_s, "opening")
        if not capture.isOpened():
            capture.release()
            what = {"device": "no camera at index", "stream": "cannot open stream", "file": "cannot play"}
            raise self._fault(DeviceUnavailable, f"{what[self.kind]} {self.source}")
        self._info = self._on_worker(lambda: _describe(capture, self.kind), 2.0, "describing")
        self._capture = capture
        self.opens += 1

    def open(self, timeout_s: float = 0.0, lock_wait_s: float | None = None) -> None:
        """Open the source (no-op when open); ``lock_wait_s``: how long to wait for a capture holding the camera
        (default: ``timeout_s``; 0, a status check: not at all, so it never takes a traveller's waiting place)."""
        with self.lock.hold(self._timeout(timeout_s) if lock_wait_s is None else lock_wait_s):
            self._open(self._timeout(timeout_s))

    def close(self) -> None:
        """Release the source and the reader thread. Idempotent; the camera reopens on the next grab."""
        capture, self._capture = self._capture, None
        if capture is not None:
            self._worker.submit(capture.release)
        self._worker.shutdown(wait=False)
        self._worker = self._new_worker()

    def _timeout(self, timeout_s: float) -> float:
        """The wait to use: the default for 0 (or NaN, or a negative), never over the capture bound."""
        return bounded_timeout(timeout_s, self.default_timeout_s)

    def _on_worker(self, call: Callable[[], Any], timeout_s: float, action: str) -> Any:
        """Run a blocking OpenCV call on the reader thread, giving up after ``timeout_s``.

        A call that hangs (a stalled stream) is abandoned with its capture object, which is released
        when the call returns; the next grab opens the source afresh.
        """
        future = self._worker.submit(call)
        try:
            return future.result(timeout=max(timeout_s, 0.001))
        except concurrent.futures.TimeoutError:
            stuck, self._capture = self._capture, None
            if stuck is not None:
                future.add_done_callback(lambda _: stuck.release())
            self._worker.shutdown(wait=False)
            self._worker = self._new_worker()
            raise self._fault(DeviceSilent, f"gave no answer within {timeout_s:.3g} s ({action})") from None

    # -- frames --------------------------------------------------------------------------------

    def _read(self, deadline: float) -> np.ndarray | None:
        self._open(deadline - time.monotonic())
        capture = self._capture
        ok, frame = self._on_worker(lambda: _read_frame(capture), deadline - time.monotonic(), "reading a frame")
        return frame if ok and frame is not None and frame.size else None

    def _grab(self, deadline: float) -> np.ndarray:
        frame = self._read(deadline)
        if frame is None and self.kind == "file":  # the end of the video: loop
            self._on_worker(lambda: self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0), 1.0, "rewinding")
            frame = self._read(deadline)
        if frame is None:  # a failed read: reopen once
            self._release()
            frame = self._read(deadline)
        if frame is None:
            self._release()
            if self.kind == "file":
                raise self._fault(DeviceCorruptData, f"cannot decode a frame of {self.source}")
            raise self._fault(DeviceDisconnected, f"stopped delivering frames from {self.source}")
        if frame.dtype != np.uint8 or not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))):
            shape = "x".join(str(n) for n in frame.shape)
            raise self._fault(DeviceCorruptData, f"delivered a {frame.dtype} frame of shape {shape} from "
                              f"{self.source}, not 8-bit grey, BGR or BGRA: set it to an 8-bit format")
        self.last_error = None
        return _to_rgb(frame)

    def _release(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            self._on_worker(capture.release, 2.0, "closing")

    def grab(self, timeout_s: float = 0.0) -> np.ndarray:
        """One frame, RGB uint8 HxWx3, within ``timeout_s`` (0: the default); reopens after a failure."""
        timeout = self._timeout(timeout_s)
        deadline = time.monotonic() + timeout
        with self.lock.hold(timeout):
            return self._grab(deadline)

    def score(self, frame: np.ndarray, deadline: float | None = None,
              cancel: threading.Event | None = None) -> tuple[float, float] | None:
        """Rank key of an RGB frame: (scorer score, sharpness), or None when the frame is unusable.

        With ``deadline`` (``time.monotonic()``), a frame not scored by then is unusable; ``cancel`` set while
        waiting for its score raises :class:`CaptureCancelled`. Either way the scorer's work is left to finish
        on its own: the capture, and the camera, do not wait for it."""
        sharp = sharpness(frame)
        if sharp <= 0.0:
            return None
        if self.frame_scorer is None:
            return (0.0, sharp)
        if deadline is None and cancel is None:
            value = self.frame_scorer(frame)
        else:
            future = self._scoring.submit(self.frame_scorer, frame)
            while True:
                try:
                    value = future.result(timeout=SCORE_POLL_S)
                    break
                except concurrent.futures.TimeoutError:
                    if cancel is not None and cancel.is_set():
                        raise CaptureCancelled(f"The call ended during the capture on {self.name}: nothing was "
                                               "captured.") from None
                    if deadline is not None and time.monotonic() >= deadline:
                        return None
        return None if value is None else (float(value), sharp)

    def capture(self, timeout_s: float = 0.0, cancel: threading.Event | None = None) -> np.ndarray:
        """The best frame of a burst of ``burst_size`` frames, RGB uint8 HxWx3.

        Bursts are taken until one holds a usable frame; :class:`DeviceTimeout` when none did before
        ``timeout_s`` (0: the default) ran out; :class:`CaptureCancelled` once ``cancel`` is set.
        """
        return self.capture_frames(1, timeout_s, cancel)[0]

    def capture_frames(self, count: int, timeout_s: float = 0.0,
                       cancel: threading.Event | None = None) -> list[np.ndarray]:
        """The ``count`` best usable frames of a burst of at least ``count`` frames, best first.

        Several frames of one traveller let the matcher combine them (:mod:`biometrics.multiframe`). Bursts
        are taken until ``count`` usable frames are held; :class:`DeviceTimeout` when fewer were seen before
        ``timeout_s`` (0: the default) ran out, or :class:`DeviceBusy` when the wait for another capture to free the
        camera took the whole timeout, or more of it than was left to look for the traveller (the scanner's rule:
        the traveller was not the one who took too long). ``cancel``: the capture stops between two frames once it
        is set (the call that asked for it has ended), with :class:`CaptureCancelled`.
        """
        if count < 1:
            raise ValueError("a capture takes at least one frame")
        timeout = self._timeout(timeout_s)
        started = time.monotonic()
        deadline = started + timeout
        with self.lock.hold(timeout, cancel):
            waited = time.monotonic() - started
            if waited >= timeout:  # the wait for the camera took the whole timeout (as the scanner's capture)
                raise DeviceBusy(f"{self.name} was busy with another capture for the whole {timeout:g} s; try again")
            usable: list[tuple[tuple[float, float], int, np.ndarray]] = []
            while True:
                for _ in range(max(self.burst_size, count)):
                    if cancel is not None and cancel.is_set():
                        raise CaptureCancelled(f"The call ended during the capture on {self.name}: nothing was "
                                               "captured.")
                    if time.monotonic() >= deadline:
                        break
                    frame = self._grab(max(deadline, time.monotonic() + MIN_DEVICE_CALL_S))
                    key = self.score(frame, deadline, cancel)
                    if key is not None:
                        usable.append((key, -len(usable), frame))  # equal keys: the earlier frame first
                if len(usable) >= count:
                    usable.sort(key=lambda item: (item[0], item[1]), reverse=True)
                    return [frame for _, _, frame in usable[:count]]
                if time.monotonic() >= deadline:
                    if waited > timeout - waited:  # the traveller was looked for less time than the camera was busy
                        raise DeviceBusy(f"{self.name} was busy with another capture for {waited:.2g} s of the "
                                         f"{timeout:g} s, and the {timeout - waited:.2g} s left were too short; "
                                         "try again")
                    what = "usable face" if self.frame_scorer is not None else "usable frame"
                    seen = f"only {len(usable)} {what}s of the {count} asked" if usable else f"no {what}"
                    raise self._fault(DeviceTimeout, f"saw {seen} within {timeout:g} s")

    # -- status --------------------------------------------------------------------------------

    def parameters(self) -> dict[str, str]:
        """What the camera reports: source, kind, and once opened its frame size, rate and backend."""
        params = {"source": str(self.source), "kind": self.kind, "burst_size": str(self.burst_size)}
        params.update(self._info)
        params["scorer"] = "injected" if self.frame_scorer is not None else "sharpness"
        return params


def _describe(capture: Any, kind: str) -> dict[str, str]:
    """Frame size, rate (and length of a file) and backend of an open capture, as text."""
    props = {"width": cv2.CAP_PROP_FRAME_WIDTH, "height": cv2.CAP_PROP_FRAME_HEIGHT, "fps": cv2.CAP_PROP_FPS}
    if kind == "file":
        props["frame_count"] = cv2.CAP_PROP_FRAME_COUNT
    info: dict[str, str] = {}
    for key, prop in props.items():
        value = float(capture.get(prop))
        if value > 0:
            info[key] = f"{value:g}"
    with contextlib.suppress(AttributeError, cv2.error):
        info["backend"] = str(capture.getBackendName())
    return info


def _read_frame(capture: Any) -> tuple[bool, np.ndarray | None]:
    """``capture.read()``; an OpenCV error (a device gone in the middle of a read) is a failed read, as a false
    ``ok`` is: the camera reopens, then reports the device disconnected (before: an internal error, and the
    capture kept)."""
    try:
        return capture.read()
    except cv2.error:
        return False, None


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """An 8-bit grey, BGR or BGRA frame (``Camera._grab`` refuses any other) as RGB uint8 HxWx3."""
    if frame.ndim == 2 or frame.shape[2] == 1:
        rgb = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    elif frame.shape[2] == 4:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    else:
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb, dtype=np.uint8)
