"""Errors of the station's devices, each with a message an officer or a kiosk can show.

The server maps them to gRPC statuses: ``DeviceUnavailable`` -> UNAVAILABLE,
``DeviceNotConfigured`` and ``DeviceRefused`` -> FAILED_PRECONDITION, ``DeviceTimeout`` -> DEADLINE_EXCEEDED,
``InvalidCaptureRequest`` -> INVALID_ARGUMENT, ``CaptureCancelled`` -> CANCELLED (its caller has gone).
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class for device faults."""


class DeviceUnavailable(DeviceError):
    """The device is unplugged, silent, or answers with corrupt data."""


class DeviceNotConfigured(DeviceError):
    """The station has no such device (or none for this modality)."""


class DeviceRefused(DeviceError):
    """The device answered but refused: wrong password, bad state."""


class DeviceTimeout(DeviceError):
    """No face or finger was presented before the timeout."""


class InvalidCaptureRequest(DeviceError):
    """The capture request itself is refused (a timeout that is not a number of seconds within the bound).

    Raised before the device is touched: the device is not at fault and its state does not change.
    """


class CaptureCancelled(DeviceError):
    """The capture was stopped because the call that asked for it ended (its caller gave up or its deadline
    passed): nothing was captured, and the device is free for the next caller."""


class DeviceBusy(DeviceUnavailable):
    """Another capture holds the device; the caller may retry shortly."""


class DevicePortMissing(DeviceUnavailable):
    """The configured port or source does not exist (unplugged cable, wrong path)."""


class DeviceDisconnected(DeviceUnavailable):
    """The device went away in the middle of a conversation."""


class DeviceSilent(DeviceUnavailable):
    """The port is open but the device does not answer."""


class DeviceCorruptData(DeviceUnavailable):
    """The device answered with a damaged packet (bad checksum, bad header)."""


class DeviceWrongPassword(DeviceRefused):
    """The fingerprint sensor refused the configured password."""
