"""The data directory and what the server writes in it are its owner's alone."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess

from biometrics.datadir import lock_data_dir, make_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    lock = lock_data_dir(tmp_path / "data")
    try:
        assert mode(tmp_path / "data") == 0o700
    finally:
        lock.release()


def test_an_open_data_directory_is_tightened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "shared-by-mistake"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    make_private(folder)
    assert mode(folder) == 0o700
    assert "was open to other users (mode 755)" in caplog.text


@pytest.mark.server
def test_the_servers_files_are_its_owners_alone(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        assert server.stub().GetStatistics(pb.GetStatisticsRequest(), timeout=30).gallery_subjects == 0
    finally:
        assert server.stop() == 0
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert any(p.name == "checkpoint.db" for p in files), files
    assert mode(tmp_path / "data") == 0o700
    assert {p.name: oct(mode(p)) for p in files if mode(p) & 0o077} == {}
