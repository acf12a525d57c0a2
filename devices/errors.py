"""Errors of the station's devices, each with a message an officer or a kiosk can show.

The server maps them to gRPC statuses: ``DeviceUnavailable`` -> UNAVAILABLE,
``DeviceNotConfigured`` and ``DeviceRefused`` -> FAILED_PRECONDITION, ``DeviceTimeout`` -> DEADLINE_EXCEEDED,
``InvalidCaptureRequest`` -> INVALID_ARGUMENT, ``CaptureCancelled`` -> CANCELLED (its caller has gone).
"""

from __future__ import annotations


class DeviceError(Exception):
    """Base class for device faults."""

    #: The kind of device at fault, as a kiosk names it ("camera", "fingerprint scanner"); set by its driver.
    device = "device"


class DeviceUnavailable(DeviceError):
    """The device is unplugged, silent, or answers with corrupt data."""


class DeviceNotConfigured(DeviceError):
    """The station has no such device (or none for this modality)."""


class DeviceRefused(DeviceError):
    """The device answered but refused: wrong password, bad state."""


class DeviceTimeout(DeviceError):
    """No face or finger was presented before the timeout."""


class FingerNotLifted(DeviceTimeout):
    """The finger of the last capture stayed on the scanner for the whole timeout: it was not lifted and placed
    again, so no new impression was taken (the same placement again would be a duplicate)."""


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


# What a kiosk is told of each fault (most specific first): no port, no URL, no driver's words.
_PLAIN: tuple[tuple[type[DeviceError], str], ...] = (
    (DeviceBusy, ""),  # "... is busy with another capture; try again": already plain
    (DevicePortMissing, "is not connected"),
    (DeviceDisconnected, "was disconnected"),
    (DeviceSilent, "does not answer"),
    (DeviceCorruptData, "is not working properly"),
    (DeviceUnavailable, "is not available"),
    (DeviceRefused, "is not working properly"),
)


def plain_message(error: DeviceError) -> str:
    """``error``'s message for a kiosk: which device, and what is wrong with it in plain words, without the port,
    the stream's URL or the driver's own text (the server logs those, and an officer's view shows them). A
    timeout, a busy device or a device that is not configured keep their own message, which names no port."""
    for kind, what in _PLAIN:
        if isinstance(error, kind):
            if what:
                return f"The {error.device} {what}. Please try again, or call an officer."
            break
    return str(error)
