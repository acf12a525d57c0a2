"""The core's request validation (biometrics.validation): every refusal is InvalidSample with a showable message."""

from __future__ import annotations

import math

import numpy as np
import pytest

from biometrics.errors import InvalidSample
from biometrics.types import Modality, Sample, SubjectInfo
from biometrics.validation import (
    MAX_CAPTURE_TIMEOUT_S,
    MAX_REASON,
    MAX_TEXT,
    check_capture_timeout,
    check_finger,
    check_limit,
    check_modality,
    check_reason,
    check_sample_count,
    check_samples,
    check_subject_id,
    check_subject_info,
    check_text,
)


@pytest.mark.parametrize("subject_id", ["P1234567", "a", "X" * 64, "IDN/P:123-4.5_6", "0abc"])
def test_subject_id_accepted(subject_id: str) -> None:
    check_subject_id(subject_id)


@pytest.mark.parametrize("subject_id", ["", "X" * 65, "-P123", ".P123", "P 123", "P123\n", "Pé123", "P;DROP"])
def test_subject_id_refused_with_the_rule(subject_id: str) -> None:
    with pytest.raises(InvalidSample, match="1 to 64 letters, digits"):
        check_subject_id(subject_id)


def test_text_at_the_limit_passes_and_over_it_names_the_field() -> None:
    assert check_text("x" * MAX_TEXT, "device") == "x" * MAX_TEXT
    with pytest.raises(InvalidSample, match=r"device is too long \(257 characters; at most 256\)"):
        check_text("x" * (MAX_TEXT + 1), "device")
    with pytest.raises(InvalidSample, match="at most 5"):
        check_text("123456", "code", 5)


@pytest.mark.parametrize("info", [
    SubjectInfo(),
    SubjectInfo(name="Siti Rahma", nationality="IDN", date_of_birth="1990-05-01"),
    SubjectInfo(nationality="idn"),
    SubjectInfo(date_of_birth="2000-02-29"),
    SubjectInfo(name="n" * MAX_TEXT),
])
def test_subject_info_accepted(info: SubjectInfo) -> None:
    check_subject_info(info)


@pytest.mark.parametrize(("info", "message"), [
    (SubjectInfo(name="n" * (MAX_TEXT + 1)), "info.name is too long"),
    (SubjectInfo(nationality="ID"), "not a three-letter ISO 3166-1 code"),
    (SubjectInfo(nationality="INDO"), "not a three-letter ISO 3166-1 code"),
    (SubjectInfo(nationality="I1N"), "not a three-letter ISO 3166-1 code"),
    (SubjectInfo(nationality="IDN\n"), "not a three-letter ISO 3166-1 code"),
    (SubjectInfo(nationality="x" * 300), "info.nationality is too long"),
    (SubjectInfo(date_of_birth="1990-02-30"), "not a date written YYYY-MM-DD"),
    (SubjectInfo(date_of_birth="01/05/1990"), "not a date written YYYY-MM-DD"),
    (SubjectInfo(date_of_birth="19900501"), "not a date written YYYY-MM-DD"),
    (SubjectInfo(date_of_birth="1990-5-1"), "not a date written YYYY-MM-DD"),
    (SubjectInfo(date_of_birth="1990-05-01\n"), "not a date written YYYY-MM-DD"),
    (SubjectInfo(date_of_birth="١٩٩٠-٠٥-٠١"), "not a date written YYYY-MM-DD"),  # Arabic-Indic digits
    (SubjectInfo(date_of_birth="9" * 300), "info.date_of_birth is too long"),
])
def test_subject_info_refused(info: SubjectInfo, message: str) -> None:
    with pytest.raises(InvalidSample, match=message):
        check_subject_info(info)


def test_reason_required_must_not_be_blank() -> None:
    assert check_reason("same twin, checked documents", "override_reason", required=True)
    assert check_reason("", "reason", required=False) == ""
    for blank in ("", "   ", "\n\t"):
        with pytest.raises(InvalidSample, match="override_reason is required"):
            check_reason(blank, "override_reason", required=True)


def test_reason_is_bounded_even_when_optional() -> None:
    check_reason("r" * MAX_REASON, "reason", required=False)
    with pytest.raises(InvalidSample, match="reason is too long"):
        check_reason("r" * (MAX_REASON + 1), "reason", required=False)


def test_modality_codes() -> None:
    assert check_modality(1) is Modality.FACE
    assert check_modality(Modality.FINGERPRINT) is Modality.FINGERPRINT
    for code in (0, 3, -1, True, None, "FACE"):
        with pytest.raises(InvalidSample, match="must say its modality"):
            check_modality(code)  # type: ignore[arg-type]


@pytest.mark.parametrize("finger", [0, 1, 10, np.int32(6)])
def test_finger_codes_accepted(finger: int) -> None:
    check_finger(finger)


@pytest.mark.parametrize("finger", [-1, 11, 255, 2**40, True, 1.0, "1"])
def test_finger_codes_refused(finger: object) -> None:
    with pytest.raises(InvalidSample, match="ISO/IEC 19794-2 code from 0 to 10"):
        check_finger(finger)  # type: ignore[arg-type]


def test_sample_count() -> None:
    check_sample_count(1, 10)
    check_sample_count(10, 10)
    with pytest.raises(InvalidSample, match="No sample was sent"):
        check_sample_count(0, 10)
    with pytest.raises(InvalidSample, match="11 samples were sent; at most 10 are accepted"):
        check_sample_count(11, 10)


def test_samples_accepted() -> None:
    check_samples([Sample(Modality.FACE, b"\xff\xd8"), Sample(Modality.FINGERPRINT, np.zeros((4, 4), np.uint8), 2)],
                  10)


@pytest.mark.parametrize(("samples", "message"), [
    ([], "No sample was sent"),
    ([Sample(Modality.FACE, b"x")] * 3, "3 samples were sent; at most 2"),
    ([Sample(0, b"x")], "must say its modality"),  # type: ignore[arg-type]
    ([Sample(3, b"x")], "must say its modality"),  # type: ignore[arg-type]
    ([Sample(Modality.FINGERPRINT, b"x", 11)], "ISO/IEC 19794-2"),
    ([Sample(Modality.FINGERPRINT, b"x", -1)], "ISO/IEC 19794-2"),
    ([Sample(Modality.FACE, "photo.jpg")], "must carry an image"),  # type: ignore[arg-type]
    ([Sample(Modality.FACE, None)], "must carry an image"),  # type: ignore[arg-type]
])
def test_samples_refused(samples: list[Sample], message: str) -> None:
    with pytest.raises(InvalidSample, match=message):
        check_samples(samples, 2)


@pytest.mark.parametrize(("timeout", "expected"), [(0, 0.0), (0.0, 0.0), (2.5, 2.5),
                                                   (MAX_CAPTURE_TIMEOUT_S, MAX_CAPTURE_TIMEOUT_S)])
def test_capture_timeout_accepted(timeout: float, expected: float) -> None:
    value = check_capture_timeout(timeout)
    assert value == expected
    assert isinstance(value, float)


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -math.inf, -0.5, 1e9, MAX_CAPTURE_TIMEOUT_S + 0.001])
def test_capture_timeout_refused(timeout: float) -> None:
    with pytest.raises(InvalidSample, match="capture timeout must be from 0"):
        check_capture_timeout(timeout)


def test_capture_timeout_maximum_is_a_parameter() -> None:
    assert check_capture_timeout(5.0, maximum=5.0) == 5.0
    with pytest.raises(InvalidSample, match="to 5 seconds"):
        check_capture_timeout(5.5, maximum=5.0)


def test_limit_zero_is_the_default_and_the_maximum_is_enforced() -> None:
    assert check_limit(0, "limit", default=50, maximum=500) == 50
    assert check_limit(1, "limit", default=50, maximum=500) == 1
    assert check_limit(500, "limit", default=50, maximum=500) == 500
    for bad in (-1, 501, 2**31, True):
        with pytest.raises(InvalidSample, match="limit must be from 0 \\(for 50\\) to 500"):
            check_limit(bad, "limit", default=50, maximum=500)
