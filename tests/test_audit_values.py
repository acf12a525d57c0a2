"""An export whose record was altered into what is not JSON's (NaN, Infinity, a number too large for a float, not
an object, nested past the parser's depth): ``checkpoint-audit verify --log`` names the line, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biometrics.audit import AuditChain, load_or_create_signing_key, parse_lines
from biometrics.crypto import KeyRing
from biometrics.storage import Storage
from biometrics.types import Actor
from verify import audit_cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A key directory and the lines of an export of a small chain (decisions, then a signed checkpoint)."""
    tmp = tmp_path_factory.mktemp("values")
    keys = tmp / "keys"
    storage = Storage(tmp / "data" / "checkpoint.db", KeyRing.generate())
    chain = AuditChain(storage, load_or_create_signing_key(keys))
    for i in range(3):
        with chain.transaction() as tx:
            chain.record(tx, "verify", Actor(role="kiosk", identity="CN=k"), f"{i:032x}", match=True, score=5.25,
                         threshold=3.0)
    chain.close()
    storage.close()
    out = tmp / "chain.jsonl"
    assert audit_cli.main(["export", "--data-dir", str(tmp / "data"), "--key-dir", str(keys), "--out", str(out)]) == 0
    assert audit_cli.main(["verify", "--log", str(out), "--key-dir", str(keys)]) == 0
    return keys, out.read_text().splitlines()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_a_record_altered_to_hold_a_number_json_does_not_allow_is_named(
        exported: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    keys, lines = exported
    assert '"score":5.25' in lines[1]
    altered = [*lines[:1], lines[1].replace('"score":5.25', f'"score":{value}'), *lines[2:]]
    log = tmp_path / "altered.jsonl"
    log.write_text("\n".join(altered) + "\n")
    assert audit_cli.main(["verify", "--log", str(log), "--key-dir", str(keys)]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "line 2:" in out and value.lstrip("-") in out, out
    assert audit_cli.main(["show", "--log", str(log), "--key-dir", str(keys)]) == 0  # shown as unreadable
    assert "line 2: not a JSON entry" in capsys.readouterr().out


@pytest.mark.parametrize("line", ['["seq", 1]', '"a string"', "null", "7", "[" * 100_000 + "]" * 100_000])
def test_a_record_that_is_not_a_json_object_is_named(
        exported: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str) -> None:
    keys, lines = exported
    log = tmp_path / "altered.jsonl"
    log.write_text("\n".join([lines[0], line, *lines[2:]]) + "\n")
    assert audit_cli.main(["verify", "--log", str(log), "--key-dir", str(keys)]) == 1
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "line 2: record: unreadable: not a JSON entry" in out, out


def test_the_parser_keeps_every_finite_number() -> None:
    entry = {"seq": 0, "fields": {"score": 0.1 + 0.2, "threshold": -3.5e-7, "count": 10**20}}
    [(_, parsed, error)] = parse_lines([json.dumps(entry)])
    assert parsed == entry and not error
