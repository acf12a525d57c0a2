"""A data directory or database the server cannot write: refused at start, exit status 2, with a message that
names each file with its owner and mode (before: a sqlite3 traceback, or "permission denied" naming a key file
that does not exist, and a read-only -shm file left by a failed start kept failing after the database was
mended). As root the server is started without CAP_DAC_OVERRIDE (setpriv), so that file modes bind it as they
bind a service account."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biometrics.service import CheckpointService, StoreLocation


def start(data: Path, keys: Path) -> subprocess.CompletedProcess[str]:
    """``checkpoint-server`` on ``data``, expected to stop at once; as root, without the capabilities that
    override file modes."""
    command = [sys.executable, "-m", "verify.server", "--plaintext", "--listen", "127.0.0.1:0", "--workers", "0",
               "--data-dir", str(data), "--key-dir", str(keys)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: file modes cannot bind the server")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture
def station(tmp_path: Path) -> tuple[Path, Path]:
    data, keys = tmp_path / "data", tmp_path / "keys"
    CheckpointService.open(StoreLocation(data, key_dir=keys)).close()
    return data, keys


def test_a_read_only_database_and_its_left_over_shm_file_are_named(station: tuple[Path, Path]) -> None:
    data, keys = station
    db, shm = data / "checkpoint.db", data / "checkpoint.db-shm"
    os.chmod(db, 0o400)
    shm.touch(mode=0o400)  # as a failed start on the read-only database leaves it
    os.chmod(shm, 0o400)
    done = start(data, keys)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"{db} (owner uid {os.getuid()}, mode 400)" in done.stderr and str(shm) in done.stderr
    os.chmod(db, 0o600)  # the operator mends the database: the -shm file is still named, alone
    done = start(data, keys)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(shm) in done.stderr and f"{db} (" not in done.stderr


def test_a_data_directory_another_user_owns_is_named_with_its_owner(station: tuple[Path, Path]) -> None:
    data, keys = station
    if os.geteuid() != 0:
        pytest.skip("giving the directory to another user needs root")
    os.chown(data, 65534, 65534)
    try:
        done = start(data, keys)
    finally:
        os.chown(data, 0, 0)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"cannot write the data directory {data} (owner uid 65534, mode 700)" in done.stderr
    assert "keyring.json" not in done.stderr
