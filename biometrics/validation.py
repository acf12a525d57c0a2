"""Request validation: the core's one place for the rules every caller of the service must meet.

Each check raises :class:`biometrics.errors.InvalidSample` (answered ``INVALID_ARGUMENT``) with a message a
desk or a kiosk can show as it is. The service calls them on every request; a front end (the gRPC
servicer) calls the ones it needs before it touches a device (sample count, finger code, capture timeout, and
the request's own fields: :func:`check_verify_request`, :func:`check_identify_request`), so that no capture is
taken for a request that will be refused.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Collection, Sequence

import numpy as np

from biometrics.errors import InvalidSample
from biometrics.events import check_nationality
from biometrics.types import Modality, Sample, SubjectInfo

#: Longest free-text field (name, device name...), in characters.
MAX_TEXT = 256
#: Longest reason an officer may give (duplicate override, erasure).
MAX_REASON = 2000
#: Longest a capture may wait for a face or a finger, in seconds.
MAX_CAPTURE_TIMEOUT_S = 60.0
#: Watchlist alerts one call returns: by default, and at most.
DEFAULT_ALERTS = 50
MAX_ALERTS = 500
#: Most attempts one kiosk transaction may allow (VerifyRequest.attempts; ISO/IEC 19795-1 counts a
#: transaction of up to three attempts).
MAX_ATTEMPTS = 3
#: Most samples one request may carry, by default (``ServiceConfig.max_samples``).
MAX_SAMPLES = 10
#: ISO/IEC 19794-2 finger positions: 0 unknown, 1..5 right thumb..little, 6..10 left thumb..little.
MAX_FINGER = 10

SUBJECT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")  # whole string: fullmatch
_NATIONALITY_PATTERN = re.compile(r"[A-Za-z]{3}")
_DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def check_subject_id(subject_id: str) -> None:
    """Refuse a subject id that is not 1-64 of ``[A-Za-z0-9._:/-]`` starting with a letter or digit (no trailing
    newline: the whole string must match)."""
    if not isinstance(subject_id, str) or not SUBJECT_ID_PATTERN.fullmatch(subject_id):
        raise InvalidSample(
            "The subject id must be 1 to 64 letters, digits or . _ : / - (the travel-document number)."
        )


def check_text(value: str, field: str, limit: int = MAX_TEXT) -> str:
    """``value`` if it is a string of at most ``limit`` characters; ``field`` names it in the message."""
    if not isinstance(value, str):
        raise InvalidSample(f"The field {field} must be text.")
    if len(value) > limit:
        raise InvalidSample(f"The field {field} is too long ({len(value)} characters; at most {limit}).")
    return value


def check_subject_info(info: SubjectInfo) -> None:
    """Refuse personal data that is too long, a nationality that is not 3 letters, or a date that is not real.

    Nationality is an ISO 3166-1 alpha-3 code (``IDN``; any case), date of birth ``YYYY-MM-DD``; both may be
    empty (not on the document).
    """
    check_text(info.name, "info.name")
    check_text(info.nationality, "info.nationality")
    check_text(info.date_of_birth, "info.date_of_birth")
    if info.nationality and not _NATIONALITY_PATTERN.fullmatch(info.nationality):
        raise InvalidSample(
            f"The nationality {info.nationality!r} is not a three-letter ISO 3166-1 code (for example IDN)."
        )
    if info.date_of_birth:
        try:
            if not _DATE_PATTERN.fullmatch(info.date_of_birth):
                raise ValueError
            dt.date.fromisoformat(info.date_of_birth)
        except ValueError:
            raise InvalidSample(
                f"The date of birth {info.date_of_birth!r} is not a date written YYYY-MM-DD (for example 1990-05-01)."
            ) from None


def check_reason(reason: str, field: str, *, required: bool, documents: Collection[str] = ()) -> str:
    """The officer's ``reason``: at most :data:`MAX_REASON` characters, not blank when ``required``, and naming
    none of ``documents`` (the document numbers the call is about): an erasure's reason stays in the append-only
    audit chain as written, and an override's or a review's stays until those subjects are erased (a third person it
    names, never), so it must say why without saying who."""
    check_text(reason, field, MAX_REASON)
    if required and not reason.strip():
        raise InvalidSample(f"The field {field} is required: say why, it is recorded in the audit log.")
    squeezed = "".join(reason.split()).casefold()
    if any(d and "".join(d.split()).casefold() in squeezed for d in documents):
        raise InvalidSample(f"The field {field} names a document number. Say why without saying who (no document "
                            "numbers, no names): the audit log keeps it after the person's data is erased.")
    return reason


def check_modality(modality: int) -> Modality:
    """The :class:`Modality` of a sample's modality code; refuse anything but FACE or FINGERPRINT."""
    if isinstance(modality, bool) or modality not in (Modality.FACE, Modality.FINGERPRINT):
        raise InvalidSample("Each sample must say its modality (FACE or FINGERPRINT).")
    return Modality(modality)


def check_finger(finger: int) -> None:
    """Refuse a finger position that is not an ISO/IEC 19794-2 code from 0 (unknown) to 10."""
    if isinstance(finger, bool) or not isinstance(finger, int | np.integer) or not 0 <= finger <= MAX_FINGER:
        raise InvalidSample("The finger position must be an ISO/IEC 19794-2 code from 0 to 10.")


def check_sample_count(n: int, max_samples: int) -> None:
    """Refuse a request with no sample or with more than ``max_samples``."""
    if n <= 0:
        raise InvalidSample("No sample was sent: at least one face or fingerprint image is needed.")
    if n > max_samples:
        raise InvalidSample(f"{n} samples were sent; at most {max_samples} are accepted.")


def check_samples(samples: Sequence[Sample], max_samples: int) -> None:
    """Refuse a bad set of samples: the count, each one's modality and finger code, and its image's type."""
    check_sample_count(len(samples), max_samples)
    for sample in samples:
        check_modality(sample.modality)
        check_finger(sample.finger)
        if not isinstance(sample.image, bytes | np.ndarray):
            raise InvalidSample("Each sample must carry an image (JPEG or PNG bytes, or a device's pixels).")


def check_attempts(attempts: int, attempt: int = 0) -> tuple[int, int]:
    """(attempts, attempt): the calls a kiosk transaction allows, 1 to :data:`MAX_ATTEMPTS` (0, not given: 1),
    and which of them this call is, 1 to ``attempts`` (0: not given)."""
    for value in (attempts, attempt):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise InvalidSample("The number of attempts must be a whole number.")
    allowed = int(attempts) or 1
    if not 1 <= allowed <= MAX_ATTEMPTS:
        raise InvalidSample(f"A transaction may allow 1 to {MAX_ATTEMPTS} attempts; got {attempts}.")
    if not 0 <= attempt <= allowed:
        raise InvalidSample(f"This call is attempt {attempt} of a transaction of {allowed}: it must be 1 to {allowed}.")
    return allowed, int(attempt)


def check_max_candidates(max_candidates: int) -> int:
    """An Identify's ``max_candidates``: 0 (the server's default) or more; the server caps it at its own maximum."""
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, int | np.integer):
        raise InvalidSample("max_candidates must be a whole number.")
    if max_candidates < 0:
        raise InvalidSample("max_candidates cannot be negative.")
    return int(max_candidates)


def check_verify_request(subject_id: str, document_nationality: str, attempts: int = 1,
                         attempt: int = 0) -> tuple[str, int, int]:
    """A Verify's fields other than its samples: (the document's nationality as counted, attempts, attempt).
    The service checks them first; the servicer calls this before it captures the traveller."""
    nationality = check_nationality(document_nationality)
    attempts, attempt = check_attempts(attempts, attempt)
    check_subject_id(subject_id)
    return nationality, attempts, attempt


def check_identify_request(document_nationality: str, max_candidates: int) -> tuple[str, int]:
    """An Identify's fields other than its samples: (the document's nationality as counted, max_candidates).
    The service checks them first; the servicer calls this before it captures the traveller."""
    return check_nationality(document_nationality), check_max_candidates(max_candidates)


def check_capture_timeout(timeout_s: float, maximum: float = MAX_CAPTURE_TIMEOUT_S) -> float:
    """The capture timeout in seconds, 0.0 for the device's default; refuse NaN, infinity, negative, or over
    ``maximum``."""
    try:
        value = float(timeout_s)
    except (TypeError, ValueError):
        raise InvalidSample("The capture timeout must be a number of seconds.") from None
    if math.isnan(value) or value < 0 or value > maximum:
        raise InvalidSample(
            f"The capture timeout must be from 0 (the device's default) to {maximum:g} seconds; got {timeout_s!r}."
        )
    return value


def check_limit(limit: int, field: str, *, default: int, maximum: int) -> int:
    """How many items a listing returns: ``default`` for 0; refuse a negative ``limit`` or one over ``maximum``."""
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 0 or limit > maximum:
        raise InvalidSample(f"The field {field} must be from 0 (for {default}) to {maximum}; got {limit!r}.")
    return int(limit) or default
