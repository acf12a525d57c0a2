"""Errors of the biometric core.

Every error carries a message a kiosk or a desk can show as it is. The service layer maps each class
to one gRPC status (see ``verify/status.py``); nothing here knows about gRPC.
"""

from __future__ import annotations


class BiometricError(Exception):
    """Base class: something about a request that the core refuses, with a displayable message."""


class InvalidSample(BiometricError):
    """A sample cannot be used: not an image, not a supported format, no face, poor quality..."""


class UnsupportedImage(InvalidSample):
    """The bytes are not a JPEG or PNG image, or cannot be decoded as one."""


class NoFaceFound(InvalidSample):
    """No face was detected in the image."""


class MultipleFaces(InvalidSample):
    """Several faces of comparable size: enrolment needs exactly one; an Identify search, one traveller
    (``biometrics.face.PROBE_SECOND_FACE_RATIO``)."""


class SamplesDisagree(InvalidSample):
    """Enrolment samples that should be of one person look like two people's."""


class NotAFingerprint(InvalidSample):
    """A fingerprint sample that is no fingerprint capture: a colour picture, or an image with no ridge pattern
    (a face photograph sent as a finger)."""


class PoorQuality(InvalidSample):
    """The sample was acquired but its quality is below what enrolment accepts."""


class SampleTooLarge(BiometricError):
    """The image is over the byte or pixel cap (decompression bombs included)."""


class FingerprintTooLarge(InvalidSample):
    """A fingerprint image larger than a fingerprint scanner gives (``ImageLimits.max_fingerprint_sample``):
    refused before any extraction, whose cost grows with the image (seconds for a few megapixels)."""


class SubjectNotFound(BiometricError):
    """No subject is enrolled under this id."""


class SubjectExists(BiometricError):
    """A subject is already enrolled under this id."""


class RegisterUnavailable(BiometricError):
    """The shared register cannot be reached now, or this station has not loaded it yet: a transient refusal
    (verification goes on from memory; enrolment and erasure wait)."""


class OfflineLimitReached(BiometricError):
    """A station working offline has reached its budget (time cut off, or writes waiting): enrolment is paused
    until the link returns; verification goes on."""


class ReviewConflict(BiometricError):
    """A review cannot be resolved as asked (resolved already, or the resolution does not fit the case)."""


class ReviewReturned(ReviewConflict):
    """A review was not resolved: searched again under the register's lock, it found possible duplicates the
    officer was not shown; it waits again, listing them."""


class CallAbandoned(Exception):
    """The caller gave up (its deadline passed, or it cancelled) before the change was stored: nothing was
    stored. Not a refusal of the request: the answer reaches nobody."""
