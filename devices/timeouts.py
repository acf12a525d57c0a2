"""How long a capture may wait: one bound for every device, checked before the device is touched.

A capture waits for a traveller to present a face or a finger; a timeout that never ends (``inf``, ``1e9``)
would hold the device and a server thread for good. :func:`check_capture_timeout` refuses such a request
(:class:`~devices.errors.InvalidCaptureRequest`, a message a kiosk can show) before any device is opened;
:func:`bounded_timeout` is the drivers' own guard: whatever they are given, they never wait longer than
:data:`MAX_CAPTURE_TIMEOUT_S`.
"""

from __future__ import annotations

import math

from devices.errors import InvalidCaptureRequest

#: The longest a capture may wait for a face or a finger, in seconds (the same bound as
#: ``biometrics.validation.MAX_CAPTURE_TIMEOUT_S``, which the gRPC front end checks first).
MAX_CAPTURE_TIMEOUT_S = 60.0
#: The default capture timeouts (a capture request's 0): a camera's, a fingerprint scanner's. Clients add them
#: to their calls' deadlines (:func:`verify.channel.capture_allowance`).
CAMERA_DEFAULT_TIMEOUT_S = 5.0
SCANNER_DEFAULT_TIMEOUT_S = 10.0


def check_capture_timeout(timeout_s: float, maximum: float = MAX_CAPTURE_TIMEOUT_S) -> float:
    """``timeout_s`` as a float (0: the device's default); refuse NaN, infinity, a negative or over ``maximum``."""
    try:
        value = float(timeout_s)
    except (TypeError, ValueError):
        raise InvalidCaptureRequest("The capture timeout must be a number of seconds.") from None
    if not math.isfinite(value) or value < 0 or value > maximum:
        raise InvalidCaptureRequest(
            f"The capture timeout must be from 0 (the device's default) to {maximum:g} seconds; got {timeout_s!r}."
        )
    return value


def check_default_timeout(timeout_s: float) -> float:
    """A driver's default capture timeout: more than 0 and at most :data:`MAX_CAPTURE_TIMEOUT_S` (else ValueError)."""
    value = float(timeout_s)
    if not (math.isfinite(value) and 0 < value <= MAX_CAPTURE_TIMEOUT_S):
        raise ValueError(f"a default capture timeout must be more than 0 and at most {MAX_CAPTURE_TIMEOUT_S:g} s, "
                         f"got {timeout_s!r}")
    return value


def bounded_timeout(timeout_s: float, default_s: float) -> float:
    """The wait a driver uses: ``default_s`` for 0, a negative or NaN; never more than :data:`MAX_CAPTURE_TIMEOUT_S`."""
    value = float(timeout_s)
    if math.isnan(value) or value <= 0:
        value = float(default_s)
    return min(value, MAX_CAPTURE_TIMEOUT_S)
