"""The key ring and the audit's private files are written durably: file fsync, rename, then an fsync of the
directory, so that a crash cannot bring back a ring older than the rows sealed under its successor."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from biometrics import audit
from biometrics.crypto import KeyRing
from biometrics.storage import Storage
from verify import keys as keys_cli


def record_fsyncs(monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, int]]) -> None:
    """Make ``os.fsync`` append ``("dir", inode)`` or ``("file", inode)`` to ``events`` (then fsync)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_saving_the_key_ring_fsyncs_its_directory_after_the_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    events: list[tuple[str, int]] = []
    record_fsyncs(monkeypatch, events)
    KeyRing.generate().save(key_dir / "keyring.json")
    assert events[-1] == ("dir", key_dir.stat().st_ino), events
    assert ("file", (key_dir / "keyring.json").stat().st_ino) in events
    assert (key_dir / "keyring.json").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in key_dir.iterdir()) == ["keyring.json"]  # no temporary file left


@pytest.mark.parametrize("replace", [False, True])
def test_the_audit_private_files_are_fsynced_with_their_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  replace: bool) -> None:
    events: list[tuple[str, int]] = []
    record_fsyncs(monkeypatch, events)
    path = tmp_path / "heads" / "head.json"
    audit._write_private(path, b"one", replace=replace)
    assert events[-1] == ("dir", path.parent.stat().st_ino), events
    assert path.read_bytes() == b"one" and path.stat().st_mode & 0o777 == 0o600
    if replace:
        audit._write_private(path, b"two", replace=True)
        assert path.read_bytes() == b"two"
    else:
        with pytest.raises(FileExistsError):
            audit._write_private(path, b"two")
        assert path.read_bytes() == b"one"
    assert sorted(p.name for p in path.parent.iterdir()) == ["head.json"]


def test_a_rotation_makes_the_new_ring_durable_before_it_reseals_a_row(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    key_file = key_dir / "keyring.json"
    KeyRing.generate().save(key_file)
    storage = Storage(tmp_path / "checkpoint.db", KeyRing.load(key_file))
    events: list[tuple[str, int]] = []
    record_fsyncs(monkeypatch, events)
    real_reseal = storage.reseal

    def reseal(batch: int = 100) -> int:
        events.append(("reseal", 0))
        return real_reseal(batch)

    monkeypatch.setattr(storage, "reseal", reseal)
    try:
        keys_cli.rotate(key_file, storage.keyring, storage, pause=0)
    finally:
        storage.close()
    first_reseal = events.index(("reseal", 0))
    assert ("dir", key_dir.stat().st_ino) in events[:first_reseal], events


def test_a_tls_private_key_is_written_durably_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from verify import certs
    events: list[tuple[str, int]] = []
    record_fsyncs(monkeypatch, events)
    out = tmp_path / "ca"
    certs.write_private(out / "ca.key", b"-----BEGIN PRIVATE KEY-----\n")
    assert events[-1] == ("dir", out.stat().st_ino), events
    assert ("file", (out / "ca.key").stat().st_ino) in events
    assert (out / "ca.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["ca.key"]
