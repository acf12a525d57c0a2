"""The kiosk and desk tools refuse text arguments that are not UTF-8 with a usage error (exit 2) naming the
argument, instead of a UnicodeEncodeError traceback: a byte that is not UTF-8 on the command line comes into
Python as a lone surrogate (``$'\\xff'`` is ``"\\udcff"``), as does ``"\\udc80"`` in a JSON file, and no request
can carry one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from helpers import DATA

from enroll import cli as desk
from verify import client as kiosk

FACE = str(DATA / "faces" / "Kofi_Annan_0001.jpg")
NOWHERE = ["--target", "127.0.0.1:9", "--timeout", "1"]  # nothing is sent: the refusal comes first


def refused(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as stop:
        main([*NOWHERE, *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("main", "argv", "message"), [
    (kiosk.main, ["verify", "\udcff", FACE], "subject-id is not UTF-8 text (character 1 is not)"),
    (kiosk.main, ["verify", "GBR1", FACE, "--nationality", "ID\udcff"], "nationality is not UTF-8 text"),
    (kiosk.main, ["identify", FACE, "--nationality", "\udce9"], "nationality is not UTF-8 text"),
    (kiosk.main, ["rate", "ab\udc80", "2"], "feedback-id is not UTF-8 text (character 3 is not)"),
    (desk.main, ["enrol", "Z1", FACE, "--name", "Siti\udce9"], "name is not UTF-8 text (character 5 is not)"),
    (desk.main, ["show", "Z\udcff"], "subject-id is not UTF-8 text"),
    (desk.main, ["delete", "Z1", "--reason", "\udcff"], "reason is not UTF-8 text"),
    (desk.main, ["resolve", "r\udcff", "reject", "--reason", "r"], "review-id is not UTF-8 text"),
])
def test_a_text_argument_that_is_not_utf8_is_a_usage_error(main, argv: list[str], message: str,  # type: ignore
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert message in refused(main, argv, capsys)


def test_an_applicant_file_with_a_lone_surrogate_is_a_usage_error(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    applicant = tmp_path / "applicant.json"
    applicant.write_text('{"document_number": "Z1", "name": "Siti \\udc80"}', encoding="utf-8")
    assert json.loads(applicant.read_text())["name"] == "Siti \udc80"
    assert "name is not UTF-8 text" in refused(desk.main, ["enrol", "-", FACE, "--applicant", str(applicant)],
                                               capsys)


def test_a_document_number_on_standard_input_that_is_not_utf8_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"GBR\xff1\n"), encoding="utf-8"))
    assert "not UTF-8 text" in refused(kiosk.main, ["verify", "-", FACE], capsys)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"GBR\xff1\n"), encoding="utf-8",
                                                      errors="surrogateescape"))
    assert "subject-id is not UTF-8 text" in refused(desk.main, ["show", "-"], capsys)
