"""Key rotation covers an island's sealed outbox (its offline enrolments and erasures): ``checkpoint-keys rotate``
re-seals it, ``status`` counts it, ``retire`` never drops a key an entry still needs; ``--replica DIR`` rotates an
island's ``DIR/replica.db`` (real SQLite files; for a journal.db or a replica.db, ``retire`` counts a real PostgreSQL
register's rows too: tests/pg.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg import fresh_database

from biometrics.crypto import KeyRing
from biometrics.register import RegisterStorage
from biometrics.replica import Replica
from biometrics.storage import Storage
from verify import keys

PAYLOAD = {"document_number": "X1234567", "name": "Budi Santoso"}


def station(tmp_path: Path, store: Path) -> Path:
    """A key ring, and ``store`` holding one outbox entry sealed under its first key; the ring file."""
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    key_file = key_dir / "keyring.json"
    KeyRing.generate().save(key_file)
    local = Storage(store, KeyRing.load(key_file))
    try:
        with local.transaction() as tx:
            Replica(local).add(tx, "enrol", "ref123", PAYLOAD, upload_id="u1")
        assert local.key_usage() == {local.keyring.active: 1}, "status counts the outbox entry"
    finally:
        local.close()
    return key_file


@pytest.mark.parametrize("where", ["data-dir", "journal", "replica"])
def test_rotate_reseals_the_outbox_and_retire_keeps_it_readable(
        tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    store = data / {"data-dir": "checkpoint.db", "journal": "journal.db", "replica": "replica.db"}[where]
    key_file = station(tmp_path, store)
    old = KeyRing.load(key_file).active
    flags = ["--replica", str(data), "--data-dir", str(tmp_path / "none")] if where == "replica" else \
        ["--data-dir", str(data)]  # a register station's data directory holds its journal.db alone
    assert keys.main(["rotate", *flags, "--key-file", str(key_file)]) == 0
    with fresh_database() as url:
        if where != "data-dir":  # the register shares the ring: retire counts its rows (none here) too
            register = RegisterStorage(url, KeyRing.load(key_file), station="s1")
            register.open()
            register.close()
            flags += ["--store", url]
        assert keys.main(["retire", *flags, "--key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert "1 blob(s) re-sealed" in out and f"retired {old}" in out, out
    ring = KeyRing.load(key_file)
    assert list(ring.keys) == [ring.active] != [old]
    local = Storage(store, ring)
    try:
        assert local.key_usage() == {ring.active: 1}
        [entry] = Replica(local).entries()
        assert entry.payload == PAYLOAD, "the entry opens with the ring left after the retirement"
    finally:
        local.close()


def test_retire_keeps_a_key_an_outbox_entry_still_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    key_file = station(tmp_path, data / "checkpoint.db")
    ring = KeyRing.load(key_file)
    old = ring.active
    ring.add_key()  # a new active key, nothing re-sealed yet (a rotation stopped half-way)
    ring.save(key_file)
    assert keys.main(["retire", "--data-dir", str(data), "--key-file", str(key_file)]) == 0
    assert "retired nothing" in capsys.readouterr().out
    assert old in KeyRing.load(key_file).keys
