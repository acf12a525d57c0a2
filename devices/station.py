"""The station's devices as the server holds them: an optional camera and an optional fingerprint scanner.

Each device is optional and independent: with no camera, :meth:`Station.capture_face` says so
(:class:`DeviceNotConfigured`); a scanner that is gone does not stop the face path. Each device serves
one capture at a time; a second caller waits up to its own timeout, then gets :class:`DeviceBusy`.
A capture waits at most :data:`~devices.timeouts.MAX_CAPTURE_TIMEOUT_S` (60 s); a request for longer, or
for a timeout that is not a number, is refused before the device is touched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biometrics.redact import redact_url
from devices.camera import Camera
from devices.errors import (
    CaptureCancelled,
    DeviceBusy,
    DeviceCorruptData,
    DeviceError,
    DeviceNotConfigured,
    DeviceRefused,
    DeviceSilent,
    DeviceTimeout,
)
from devices.scanner import DEFAULT_BAUD_RATE, FingerprintScanner
from devices.timeouts import MAX_CAPTURE_TIMEOUT_S, bounded_timeout, check_capture_timeout
from devices.zfm_emulator import ZfmEmulator

log = logging.getLogger(__name__)

__all__ = ["MAX_CAPTURE_TIMEOUT_S", "DeviceSettingError", "DeviceStatus", "Station", "parse_scanner"]

EMULATOR_PREFIX = "emulator:"


class DeviceSettingError(ValueError):
    """A device flag of the server that can never work (:meth:`Station.configured`); its message names the flag."""


FrameScorer = Callable[[np.ndarray], float | None]


@dataclass(frozen=True)
class DeviceStatus:
    """One device as ListDevices reports it."""

    name: str
    modality: str  # "face" | "fingerprint"
    state: str  # "ready" | "busy" | "fault" | "disconnected"
    detail: str
    parameters: dict[str, str]
    is_default: bool


def parse_scanner(spec: str) -> tuple[str, int]:
    """A scanner spec "PORT" or "PORT:BAUD" as (port, baud rate)."""
    port, _, baud = spec.rpartition(":")
    if port and baud.isdigit():
        return port, int(baud)
    return spec, DEFAULT_BAUD_RATE


def _timeout_within(device: Camera | FingerprintScanner, timeout_s: float, within_s: float | None) -> float:
    """The capture timeout asked (checked already; 0: the device's default), cut to the caller's ``within_s``."""
    timeout = bounded_timeout(timeout_s, device.default_timeout_s)
    if within_s is None:
        return timeout
    if within_s <= 0:
        raise DeviceTimeout(f"The call's time ran out before {device.name} was asked for a capture.")
    return min(timeout, within_s)


def _state_of(error: DeviceError | None) -> str:
    """The state a device's last error leaves it in: a timeout (nobody presented) or a capture stopped because
    its call ended is no fault."""
    if error is None or isinstance(error, DeviceTimeout | DeviceBusy | CaptureCancelled):
        return "ready"
    if isinstance(error, DeviceSilent | DeviceCorruptData | DeviceRefused):
        return "fault"
    return "disconnected"


class Station:
    """A camera and a fingerprint scanner, each optional."""

    def __init__(
        self,
        camera: Camera | None = None,
        scanner: FingerprintScanner | None = None,
        emulator: ZfmEmulator | None = None,
    ) -> None:
        self.camera = camera
        self.scanner = scanner
        self.emulator = emulator  # the emulated sensor behind ``scanner``, when "emulator:DIR" was asked for

    @classmethod
    def from_config(
        cls,
        camera: str | None,
        scanner: str | None,
        frame_scorer: FrameScorer | None = None,
    ) -> Station:
        """A station from the server's flags (:meth:`configured`), each device checked now and its state logged
        (:meth:`log_devices`). A device that cannot be reached now is kept and retried at each use."""
        station = cls.configured(camera, scanner, frame_scorer)
        station.log_devices()
        return station

    @classmethod
    def configured(
        cls,
        camera: str | None,
        scanner: str | None,
        frame_scorer: FrameScorer | None = None,
    ) -> Station:
        """A station from the server's flags, no device opened or asked anything yet (an emulator is started).

        ``camera``: "0" (a device index), a stream URL, or a video file path. ``scanner``: a serial port
        ("/dev/ttyUSB0", optionally ":BAUD"), or "emulator:DIR" to start a ZFM emulator on a pty serving
        DIR's PNG/TIFF images in turn. A setting that can never work (an empty camera source, a baud rate the
        sensor has not, an emulator folder missing or without images) raises :class:`DeviceSettingError` naming
        the flag, and nothing is left open.
        """
        try:
            cam = Camera(camera, frame_scorer=frame_scorer) if camera else None
        except ValueError as exc:
            raise DeviceSettingError(f"--camera {redact_url(repr(camera))}: {exc}") from exc
        emulator = None
        scan = None
        if scanner:
            try:
                if scanner.startswith(EMULATOR_PREFIX):
                    folder = Path(scanner[len(EMULATOR_PREFIX) :]).expanduser()
                    emulator = ZfmEmulator(folder).start()
                    scan = FingerprintScanner(emulator.port)
                    log.info("emulated ZFM scanner on %s serving %d images from %s", emulator.port,
                             len(emulator.images), folder)
                else:
                    port, baud = parse_scanner(scanner)
                    scan = FingerprintScanner(port, baud)
            except (OSError, ValueError) as exc:
                if emulator is not None:
                    emulator.stop()
                if cam is not None:
                    cam.close()
                raise DeviceSettingError(f"--scanner {scanner}: {exc}") from exc
        return cls(cam, scan, emulator)

    def log_devices(self) -> None:
        """Check every device now (:meth:`list_devices`) and log its state."""
        for status in self.list_devices():
            log.info("device %s (%s): %s %s", status.name, status.modality, status.state, redact_url(status.detail))

    # -- captures ------------------------------------------------------------------------------

    def _pick(self, device: str, modality: str) -> Camera | FingerprintScanner:
        mine = self.camera if modality == "face" else self.scanner
        what = "camera" if modality == "face" else "fingerprint scanner"
        if mine is None:
            raise DeviceNotConfigured(f"This station has no {what}.")
        if device and device != mine.name:
            names = ", ".join(d.name for d in (self.camera, self.scanner) if d is not None)
            raise DeviceNotConfigured(f"This station has no {what} named {device!r} (its devices: {names}).")
        return mine

    def default_device(self, modality: str) -> str:
        """The name of the device that serves ``modality`` ("face" or "fingerprint") by default; "" if none."""
        mine = self.camera if modality == "face" else self.scanner if modality == "fingerprint" else None
        return mine.name if mine is not None else ""

    def capture_face(self, device: str = "", timeout_s: float = 0.0, *, within_s: float | None = None,
                     cancel: threading.Event | None = None) -> np.ndarray:
        """The best frame of a burst from the camera: RGB uint8 HxWx3. 0: the camera's default timeout.

        A timeout that is NaN, infinite, negative or over :data:`MAX_CAPTURE_TIMEOUT_S` is refused
        (:class:`InvalidCaptureRequest`) before the camera is touched. ``within_s``: the time the caller has
        left (a gRPC call's deadline); the capture waits no longer, and none is left is a :class:`DeviceTimeout`
        before the camera is touched. ``cancel``: set when the caller has gone; the capture stops
        (:class:`CaptureCancelled`).
        """
        return self.capture_face_frames(device, timeout_s, within_s=within_s, cancel=cancel)[0]

    def capture_face_frames(self, device: str = "", timeout_s: float = 0.0, frames: int = 1, *,
                            within_s: float | None = None, cancel: threading.Event | None = None) -> list[np.ndarray]:
        """The best ``frames`` frames of a burst from the camera, best first (timeout, ``within_s`` and
        ``cancel`` as in :meth:`capture_face`)."""
        timeout = check_capture_timeout(timeout_s)
        camera = self._pick(device, "face")
        assert isinstance(camera, Camera)
        return camera.capture_frames(max(1, frames), _timeout_within(camera, timeout, within_s), cancel)

    def capture_fingerprint(self, device: str = "", timeout_s: float = 0.0, *, within_s: float | None = None,
                            cancel: threading.Event | None = None) -> np.ndarray:
        """A finger from the scanner: grey uint8 (288, 256). 0: the scanner's default timeout.

        The timeout, ``within_s`` and ``cancel`` are as in :meth:`capture_face`, checked before the scanner is
        touched.
        """
        timeout = check_capture_timeout(timeout_s)
        scanner = self._pick(device, "fingerprint")
        assert isinstance(scanner, FingerprintScanner)
        return scanner.capture(_timeout_within(scanner, timeout, within_s), cancel)

    # -- status --------------------------------------------------------------------------------

    def list_devices(self) -> list[DeviceStatus]:
        """Every device with its state; a device not busy is checked now (opened, or asked its parameters)."""
        out = []
        if self.camera is not None:
            out.append(self._camera_status(self.camera))
        if self.scanner is not None:
            out.append(self._scanner_status(self.scanner))
        return out

    def _camera_status(self, camera: Camera) -> DeviceStatus:
        if camera.lock.busy:
            state, detail = "busy", "capturing"
        else:
            try:
                camera.open(timeout_s=5.0, lock_wait_s=0.0)  # a status check never waits for a capture
                state, detail = _state_of(camera.last_error), f"{camera.kind} {camera.source}"
            except DeviceBusy:
                state, detail = "busy", "capturing"
            except DeviceError as exc:
                state, detail = _state_of(exc), str(exc)
        return DeviceStatus(camera.name, "face", state, detail, camera.parameters(), True)

    def _scanner_status(self, scanner: FingerprintScanner) -> DeviceStatus:
        kind = "emulated ZFM sensor" if self.emulator is not None else "ZFM sensor"
        parameters = {"port": scanner.port, "baud_rate": str(scanner.baud_rate)}
        if scanner.lock.busy:
            return DeviceStatus(scanner.name, "fingerprint", "busy", "capturing", parameters, True)
        try:
            with scanner.lock.hold(0.0):
                parameters = scanner.parameters(refresh=True)
            state, detail = "ready", f"{kind} on {scanner.port}"
        except DeviceBusy:
            state, detail = "busy", "capturing"
        except DeviceError as exc:
            state, detail = _state_of(exc), str(exc)
        if self.emulator is not None:
            parameters["emulator_images"] = str(len(self.emulator.images))
        return DeviceStatus(scanner.name, "fingerprint", state, detail, parameters, True)

    def close(self) -> None:
        """Release every device (and stop the emulator). Idempotent."""
        if self.camera is not None:
            self.camera.close()
        if self.scanner is not None:
            self.scanner.close()
        if self.emulator is not None:
            self.emulator.stop()
