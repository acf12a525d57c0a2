"""One process per station: a replica directory (its journal, outbox, alerts and copy of the register) is locked as
a data directory is, and a station's name is held in the register while it runs (real PostgreSQL)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import fresh_database

from biometrics.datadir import DataDirLocked, lock_data_dir
from biometrics.service import CheckpointService, StoreLocation


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def island(tmp_path: Path, data: str, station: str, url: str, replica: Path) -> CheckpointService:
    """A station on ``url`` with its own data directory ``tmp_path/data`` and the replica directory ``replica``."""
    return CheckpointService.open(StoreLocation(tmp_path / data, key_dir=tmp_path / "keys", store_url=url,
                                                station=station, replica_dir=replica))


def test_a_second_service_on_the_same_replica_directory_is_refused(tmp_path: Path, register_url: str) -> None:
    replica = tmp_path / "replica"
    first = island(tmp_path, "data-a", "sikakap-port", register_url, replica)
    try:
        refusal = (rf"the replica directory {re.escape(str(replica))} is in use by another checkpoint-server "
                   rf"\(pid {os.getpid()}\); one server per replica directory")
        with pytest.raises(DataDirLocked, match=refusal):
            island(tmp_path, "data-b", "siberut-port", register_url, replica)
        lock_data_dir(tmp_path / "data-b").release()  # the refused service let go of its own data directory
    finally:
        first.close()
    island(tmp_path, "data-b", "siberut-port", register_url, replica).close()  # released at close


def test_a_replica_directory_that_is_the_data_directory_is_locked_once(tmp_path: Path, register_url: str) -> None:
    island(tmp_path, "data", "sikakap-port", register_url, tmp_path / "data").close()
