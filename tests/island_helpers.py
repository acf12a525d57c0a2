"""Stations on a register for the island tests: faces, a station opened on a URL, and the link cut."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import face
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.audit import load_public_key, verify_store
from biometrics.crypto import KeyRing
from biometrics.island import OfflinePolicy
from biometrics.register import RegisterStorage
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Modality, Sample


def sample(name: str) -> Sample:
    """A face sample of tests/data/faces."""
    return Sample(Modality.FACE, face(name))


MEGAWATI, MEGAWATI_2 = sample("Megawati_Sukarnoputri_0001.jpg"), sample("Megawati_Sukarnoputri_0002.jpg")
KOFI, KOFI_2 = sample("Kofi_Annan_0001.jpg"), sample("Kofi_Annan_0004.jpg")
HANS = sample("Hans_Blix_0001.jpg")


def open_station(tmp_path: Path, name: str, url: str, *, replica: bool,
                 policy: OfflinePolicy | None = None, background: bool = False) -> CheckpointService:
    """Station ``name`` on the register at ``url`` (keys shared by every station of the test), started (with
    ``background``, as the server starts it: the register loaded in a thread, returned once ready)."""
    service = CheckpointService.open(StoreLocation(
        tmp_path / name / "data", key_dir=tmp_path / "keys", store_url=url, station=name,
        replica_dir=tmp_path / name / "replica" if replica else None, offline_policy=policy))
    service.start(retry_s=0.2, poll_s=0.3, background=background)
    wait_until(service.ready, timeout=30, message=f"{name} is ready")
    return service


@contextmanager
def office_and_island(tmp_path: Path, url: str) -> Iterator[tuple[CheckpointService, CheckpointService, LinkProxy]]:
    """(station "central" on the register at ``url``, island "siberut" online through a link proxy, the proxy);
    both stations closed afterwards."""
    with LinkProxy.to_url(url) as proxy:
        central = open_station(tmp_path, "central", url, replica=False)
        island = open_station(tmp_path, "siberut", proxy.url(url), replica=True)
        try:
            wait_until(lambda: island.sync_status()["register_connected"], timeout=15, message="the island is online")
            yield central, island, proxy
        finally:
            island.close()
            central.close()


def go_offline(island: CheckpointService, proxy: LinkProxy) -> None:
    """Cut the island's link and wait until it knows."""
    proxy.cut()
    wait_until(lambda: not island.sync_status()["register_connected"], timeout=15, message="the island is offline")


def register_chain(tmp_path: Path, url: str, station: str) -> list[str]:
    """``station``'s audit chain as the register at ``url`` holds it (read with the tests' shared key ring)."""
    check = RegisterStorage(url, KeyRing.load(tmp_path / "keys" / "keyring.json"), station="auditor")
    check.open()
    try:
        return list(check.audit_entries(station=station))
    finally:
        check.close()


def chain_verifies(tmp_path: Path, entries: list[str]) -> None:
    """The chain ``entries`` verifies whole under the tests' audit key."""
    report = verify_store(entries, load_public_key(tmp_path / "keys" / "audit-signing.pub"))
    assert report.ok and report.records == len(entries), report.finding
