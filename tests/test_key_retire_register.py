"""``checkpoint-keys`` on a register station's journal.db (or an island's replica.db) never retires a key the shared
register still needs: that file does not hold the register's rows, and the register shares its ring. ``retire`` is
refused there (exit 2) unless ``--store URL`` names the register, whose sealed rows (subjects, templates, alerts,
officers' texts, pending reviews) are then counted too; ``rotate`` does not claim the old keys seal nothing.
A real PostgreSQL register (tests/pg.py) and real SQLite files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pg import fresh_database

from biometrics.crypto import KeyRing
from biometrics.register import RegisterStorage, Reviews
from biometrics.storage import Storage
from biometrics.types import SubjectInfo
from verify import keys

STATION = "rokot-airport"


@pytest.fixture
def register() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def enrol(url: str, key_file: Path, subject_id: str) -> None:
    """One subject sealed in the register under the ring file's active key."""
    reg = RegisterStorage(url, KeyRing.load(key_file), station=STATION)
    reg.open()
    try:
        with reg.transaction() as tx:
            reg.insert_subject(tx, subject_id, SubjectInfo(name="Megawati"), [])
    finally:
        reg.close()


def subjects(url: str, key_file: Path) -> list[str]:
    """The register's subjects, opened with the ring file as it is now."""
    reg = RegisterStorage(url, KeyRing.load(key_file), station=STATION)
    reg.open()
    try:
        return sorted(rec.subject_id for _, rec, _ in reg.snapshot()[0])
    finally:
        reg.close()


def station(tmp_path: Path, name: str = "journal.db") -> tuple[Path, Path]:
    """A key file and a station's local store (an empty journal.db, or replica.db); (key file, its directory)."""
    key_dir, data = tmp_path / "keys", tmp_path / "data"
    key_dir.mkdir(mode=0o700, parents=True)
    KeyRing.generate().save(key_dir / "keyring.json")
    Storage(data / name, KeyRing.load(key_dir / "keyring.json"), station=STATION).close()
    return key_dir / "keyring.json", data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = keys.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("name", ["journal.db", "replica.db"])
def test_retire_on_a_register_station_is_refused_and_the_register_still_opens(
        tmp_path: Path, register: str, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    key_file, data = station(tmp_path, name)
    old = KeyRing.load(key_file).active
    enrol(register, key_file, "A1000001")
    where = ["--replica", str(data)] if name == "replica.db" else ["--data-dir", str(data)]
    rc, out, _ = run(capsys, "rotate", *where, "--key-file", str(key_file))
    assert rc == 0 and "seal nothing now" not in out and old in out and "register" in out, out
    rc, out, err = run(capsys, "retire", *where, "--key-file", str(key_file))
    assert rc == 2, (out, err)
    assert "register shares this key ring" in err and "--store" in err and "docs/security.md" in err, err
    assert old in KeyRing.load(key_file).keys
    assert subjects(register, key_file) == ["A1000001"], "the register's row opens with the ring left"


def test_retire_with_the_register_counts_its_rows(
        tmp_path: Path, register: str, capsys: pytest.CaptureFixture[str]) -> None:
    key_file, data = station(tmp_path)
    first = KeyRing.load(key_file).active
    enrol(register, key_file, "A1000001")  # the register's subject: under the first key
    flags = ["--data-dir", str(data), "--key-file", str(key_file)]
    assert run(capsys, "rotate", *flags)[0] == 0
    second = KeyRing.load(key_file).active
    reg = RegisterStorage(register, KeyRing.load(key_file), station=STATION)
    reg.open()
    try:
        with reg.transaction() as tx:  # a pending review: under the second key, and nothing else is
            Reviews(reg).add(tx, "upload-1", "ref-1", {"name": "Budi"})
    finally:
        reg.close()
    assert run(capsys, "rotate", *flags)[0] == 0
    third = KeyRing.load(key_file).active
    assert run(capsys, "rotate", *flags)[0] == 0  # the third key seals nothing anywhere
    rc, out, err = run(capsys, "status", *flags, "--store", register)
    assert rc == 0 and f"{first}: 1 blob(s)" in out and f"{second}: 1 blob(s)" in out, (out, err)
    rc, out, err = run(capsys, "retire", *flags, "--store", register)
    assert rc == 0 and f"retired {third};" in out, (out, err)
    ring = KeyRing.load(key_file)
    assert first in ring.keys and second in ring.keys and third not in ring.keys
    assert subjects(register, key_file) == ["A1000001"]


def test_retire_refuses_a_store_that_is_not_this_rings_register(
        tmp_path: Path, register: str, capsys: pytest.CaptureFixture[str]) -> None:
    key_file, data = station(tmp_path)
    enrol(register, key_file, "A1000001")
    flags = ["--data-dir", str(data), "--key-file", str(key_file)]
    assert run(capsys, "rotate", *flags)[0] == 0
    with fresh_database() as empty:  # a wrong URL: a database no station opened counts nothing
        rc, out, err = run(capsys, "retire", *flags, "--store", empty)
        assert rc == 2 and "cannot count the register's sealed rows" in err, (out, err)
        with psycopg.connect(empty, autocommit=True) as conn:  # a register no station has sealed anything in yet
            conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        rc, out, err = run(capsys, "retire", *flags, "--store", empty)
        assert rc == 2 and "records no key ring" in err, (out, err)
    other, other_data = station(tmp_path / "other")  # another station's ring than the one the register records
    ring = KeyRing.load(other)
    ring.add_key()
    ring.save(other)
    rc, out, err = run(capsys, "retire", "--data-dir", str(other_data), "--key-file", str(other), "--store", register)
    assert rc == 2 and "was sealed under key ring" in err, (out, err)
    assert len(KeyRing.load(key_file).keys) == 2 and len(KeyRing.load(other).keys) == 2
