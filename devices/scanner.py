"""A ZhianTec ZFM fingerprint sensor (ZFM-20, R30x, R50x, AS608) on a serial port, via ``pyfingerprint``.

``pyfingerprint`` raises bare ``Exception``s and waits 2 s per silent byte (12 bytes a packet); this driver
gives it a per-byte timeout and turns every fault into one of the errors of :mod:`devices.errors`:
a missing port (:class:`DevicePortMissing`), a silent sensor (:class:`DeviceSilent`), a refused password
(:class:`DeviceWrongPassword`), no finger before the timeout (:class:`DeviceTimeout`), the last capture's finger
never lifted before the timeout (:class:`FingerNotLifted`), a damaged packet
(:class:`DeviceCorruptData`), a cable pulled mid-conversation (:class:`DeviceDisconnected`).
After any fault except the timeout the connection is dropped and the next call reconnects. The image is read
into memory by :mod:`devices.zfm_upload`, never written to a file (pyfingerprint's ``downloadImage`` writes one).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import serial
from pyfingerprint.pyfingerprint import PyFingerprint

from devices import zfm_protocol as zfm
from devices.access import DeviceLock
from devices.errors import (
    CaptureCancelled,
    DeviceBusy,
    DeviceCorruptData,
    DeviceDisconnected,
    DeviceError,
    DevicePortMissing,
    DeviceRefused,
    DeviceSilent,
    DeviceTimeout,
    DeviceUnavailable,
    DeviceWrongPassword,
    FingerNotLifted,
)
from devices.timeouts import SCANNER_DEFAULT_TIMEOUT_S, bounded_timeout, check_default_timeout
from devices.zfm_upload import CorruptUpload, upload_image

log = logging.getLogger(__name__)

DEFAULT_BAUD_RATE = 57600
DEFAULT_TIMEOUT_S = SCANNER_DEFAULT_TIMEOUT_S
# Messages of pyfingerprint's exceptions that mean the bytes on the line were damaged.
_CORRUPT_MARKERS = ("checksum", "valid header", "no ack packet", "no data packet")


class _SilentSensor(Exception):
    """Raised inside pyfingerprint when a byte does not arrive within the byte timeout."""


class _SilenceDetectingSerial:
    """Wraps pyfingerprint's ``serial.Serial``: an empty read (timeout) raises instead of being framed."""

    def __init__(self, port: serial.Serial) -> None:
        self._port = port

    def read(self, size: int = 1) -> bytes:
        data = self._port.read(size)
        if not data:
            raise _SilentSensor
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)


class FingerprintScanner:
    """One ZFM sensor on ``port``. Thread-safe: one capture at a time."""

    def __init__(
        self,
        port: str,
        baud_rate: int = DEFAULT_BAUD_RATE,
        address: int = zfm.DEFAULT_ADDRESS,
        password: int = 0x00000000,
        *,
        name: str = "scanner0",
        byte_timeout_s: float = 2.0,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        poll_interval_s: float = 0.05,
    ) -> None:
        if baud_rate < 9600 or baud_rate > 115200 or baud_rate % 9600:
            raise ValueError(f"baud rate must be a multiple of 9600 from 9600 to 115200, got {baud_rate}")
        if not 0 <= address <= 0xFFFFFFFF or not 0 <= password <= 0xFFFFFFFF:
            raise ValueError("sensor address and password are 32-bit unsigned integers")
        self.port = port
        self.baud_rate = baud_rate
        self.address = address
        self.password = password
        self.name = name
        self.byte_timeout_s = byte_timeout_s
        self.default_timeout_s = check_default_timeout(default_timeout_s)
        self.poll_interval_s = poll_interval_s
        self.lock = DeviceLock(name)
        self.last_error: DeviceError | None = None
        self._sensor: PyFingerprint | None = None
        self._parameters: dict[str, str] = {}
        self._io = threading.RLock()
        #: Whether the finger of the last capture may still be on the sensor (no "no finger" answer since).
        self.finger_down = False

    # -- connection ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a verified connection to the sensor is open."""
        return self._sensor is not None

    def connect(self) -> None:
        """Open the port, verify the password and read the sensor's parameters (no-op when connected)."""
        with self._io:
            if self._sensor is not None:
                return
            try:
                sensor = PyFingerprint(self.port, self.baud_rate, self.address, self.password)
            except (serial.SerialException, OSError) as exc:
                if not os.path.exists(self.port):
                    raise self._fault(DevicePortMissing, f"port {self.port} not found") from exc
                raise self._fault(DeviceUnavailable, f"cannot open port {self.port}: {exc}") from exc
            port = getattr(sensor, "_PyFingerprint__serial", None)
            if not isinstance(port, serial.Serial):
                raise RuntimeError("pyfingerprint moved its serial port; update devices.scanner")
            port.timeout = self.byte_timeout_s
            port.reset_input_buffer()
            sensor._PyFingerprint__serial = _SilenceDetectingSerial(port)
            self._sensor = sensor
            with self._talking("password check"):
                accepted = sensor.verifyPassword()
            if not accepted:
                self._drop()
                raise self._fault(DeviceWrongPassword, f"on {self.port} refused the password")
            self._read_parameters()
            self.last_error = None

    def close(self) -> None:
        """Close the port. Idempotent."""
        with self._io:
            self._drop()

    def _drop(self) -> None:
        sensor, self._sensor = self._sensor, None
        if sensor is not None:
            with suppress(serial.SerialException, OSError):
                sensor._PyFingerprint__serial.close()

    def _fault(self, kind: type[DeviceError], message: str) -> DeviceError:
        """Record and return a ``kind`` error about this scanner, with a message a kiosk can show."""
        self.last_error = kind(f"fingerprint scanner {self.name} {message}")
        self.last_error.device = "fingerprint scanner"
        return self.last_error

    @contextmanager
    def _talking(self, action: str) -> Iterator[None]:
        """Translate pyfingerprint's and pyserial's failures during ``action`` into device errors."""
        try:
            yield
        except _SilentSensor as exc:
            self._drop()
            raise self._fault(DeviceSilent, f"on {self.port} does not answer ({action})") from exc
        except (serial.SerialException, OSError) as exc:
            self._drop()
            raise self._fault(DeviceDisconnected, f"on {self.port} disconnected ({action}): {exc}") from exc
        except DeviceError:
            raise
        except CorruptUpload as exc:
            self._drop()
            raise self._fault(DeviceCorruptData, f"on {self.port} sent {exc} ({action})") from exc
        except IndexError as exc:  # pyfingerprint reading past a packet shorter than it should be
            self._drop()
            raise self._fault(DeviceCorruptData, f"on {self.port} sent an incomplete packet ({action})") from exc
        except Exception as exc:  # pyfingerprint signals every sensor error with a bare Exception
            self._drop()
            message = str(exc)
            if any(marker in message for marker in _CORRUPT_MARKERS):
                raise self._fault(DeviceCorruptData, f"on {self.port} sent a bad packet ({action})") from exc
            raise self._fault(DeviceRefused, f"on {self.port} refused {action}: {message}") from exc

    # -- sensor --------------------------------------------------------------------------------

    def _read_parameters(self) -> None:
        assert self._sensor is not None
        with self._talking("reading its parameters"):
            values = self._sensor.getSystemParameters()
        status, system_id, capacity, security, address, packet_code, baud_code = values
        packet_size = zfm.PACKET_SIZES[packet_code] if packet_code < len(zfm.PACKET_SIZES) else packet_code
        self._parameters = {
            "port": self.port,
            "baud_rate": str(baud_code * 9600),
            "address": f"0x{address:08X}",
            "system_id": f"0x{system_id:04X}",
            "storage_capacity": str(capacity),
            "security_level": str(security),
            "packet_size": str(packet_size),
            "status_register": f"0x{status:04X}",
            "image": f"{zfm.IMAGE_WIDTH}x{zfm.IMAGE_HEIGHT} 4-bit grey, about 500 dpi",
        }

    def parameters(self, refresh: bool = False) -> dict[str, str]:
        """The sensor's system parameters (getSystemParameters) as text; ``refresh`` asks the sensor again."""
        with self._io:
            if refresh or not self._parameters:
                self.connect()
                if refresh:
                    self._read_parameters()
            return dict(self._parameters)

    def wait_for_finger(self, timeout_s: float = 0.0, cancel: threading.Event | None = None) -> None:
        """Poll the sensor (GenImg) until a finger is imaged; :class:`DeviceTimeout` if none comes.

        A ZFM sensor images a finger for as long as it stays on the platen, so a finger still down since the
        last capture would be the same placement again: after a capture, the next one first waits for the sensor
        to answer "no finger" (logging "lift your finger" while it does not), and only a finger imaged after that
        is taken. A finger never lifted within the timeout is :class:`FingerNotLifted`, never a second image of
        the same placement.

        ``timeout_s``: 0 (or NaN, or a negative) for the default; never more than the capture bound.
        ``cancel``: polling stops once it is set (the call that asked has ended), with :class:`CaptureCancelled`,
        so a finger placed afterwards is left for the next capture.
        """
        timeout = bounded_timeout(timeout_s, self.default_timeout_s)
        self._wait_for_finger(time.monotonic() + timeout, timeout, cancel)

    def _wait_for_finger(self, deadline: float, timeout: float, cancel: threading.Event | None) -> None:
        """:meth:`wait_for_finger` until the monotonic ``deadline``; ``timeout``: the caller's whole wait, as told
        in the messages (a capture that first waited for the device reports what it was asked, not what was left).
        """
        with self._io:
            earlier = self.connected  # a connection opened by an earlier call may be stale
            self.connect()
            asked_to_lift = False
            while True:
                imaged = self._read_image(reconnect=earlier)
                earlier = False
                if not imaged:
                    self.finger_down = False
                elif not self.finger_down:
                    self.finger_down = True
                    return
                elif not asked_to_lift:
                    asked_to_lift = True
                    log.info("%s: lift your finger from the scanner, then place it again (the finger of the last "
                             "capture is still on it)", self.name)
                if time.monotonic() + self.poll_interval_s > deadline:
                    if self.finger_down:
                        raise self._fault(FingerNotLifted, f"still had the last capture's finger on it after "
                                          f"{timeout:.3g} s: lift the finger, then place it again")
                    raise self._fault(DeviceTimeout, f"saw no finger within {timeout:.3g} s")
                if cancel is None:
                    time.sleep(self.poll_interval_s)
                elif cancel.wait(self.poll_interval_s):
                    raise CaptureCancelled(f"The call ended while {self.name} waited for a finger: nothing was "
                                           "captured.")

    def _read_image(self, reconnect: bool) -> bool:
        """One GenImg: whether a finger was imaged. ``reconnect``: the connection was opened by an earlier call, and
        a fault on it (the scanner unplugged and plugged back in while idle leaves the old port dead) drops it and
        sends the command once more on a new connection; when that cannot be opened, the first fault is reported.
        """
        try:
            with self._talking("capturing a finger"):
                return self._sensor.readImage()
        except (DeviceDisconnected, DeviceSilent, DeviceCorruptData) as exc:
            if not reconnect:
                raise
            stale = exc
        log.info("%s: the connection from an earlier call failed (%s); connecting again", self.name, stale)
        try:
            self.connect()
        except DeviceError as again:
            self.last_error = stale
            raise stale from again  # the port's first fault, the reconnection's as its cause
        with self._talking("capturing a finger"):
            return self._sensor.readImage()

    def download_image(self) -> np.ndarray:
        """Upload the sensor's image buffer (UpImage): grey uint8, 288 rows x 256 columns, read into memory only.

        pyfingerprint's ``downloadImage`` writes the image to a file; a raw fingerprint is never stored, so the
        upload is read off the port by :func:`devices.zfm_upload.upload_image` and nothing touches a disk.
        """
        with self._io:
            self.connect()
            with self._talking("sending the image"):
                return upload_image(self._sensor._PyFingerprint__serial, self.address)

    def capture(self, timeout_s: float = 0.0, cancel: threading.Event | None = None) -> np.ndarray:
        """Wait for a finger (up to ``timeout_s``, 0: the default), then download its image.

        A second concurrent caller waits for the first up to its own timeout, then gets :class:`DeviceBusy`
        (also when the device comes free with none of its timeout left). The wait is never longer than
        :data:`~devices.timeouts.MAX_CAPTURE_TIMEOUT_S`, whatever is asked. ``cancel``: the capture stops once it
        is set (:class:`CaptureCancelled`).
        """
        timeout = bounded_timeout(timeout_s, self.default_timeout_s)
        started = time.monotonic()
        with self.lock.hold(timeout, cancel):
            left = timeout - (time.monotonic() - started)
            if left <= 0:  # the wait for the device took the whole timeout (0 would mean the default)
                raise DeviceBusy(f"{self.name} was busy with another capture for the whole {timeout:.3g} s; try again")
            self._wait_for_finger(started + timeout, timeout, cancel)
            image = self.download_image()
            self.last_error = None
            return image
