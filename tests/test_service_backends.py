"""The checkpoint's decisions behave the same on both back ends: one station on SQLite, one on the register."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import face
from pg import fresh_database

from biometrics.audit import load_public_key, verify_store
from biometrics.errors import InvalidSample, SubjectExists, SubjectNotFound
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo

MEGAWATI, MEGAWATI_PROBE = (Sample(Modality.FACE, face(f"Megawati_Sukarnoputri_000{n}.jpg")) for n in (1, 2))
KOFI, KOFI_PROBE = (Sample(Modality.FACE, face(f"Kofi_Annan_000{n}.jpg")) for n in (1, 4))
KIOSK = Actor(role="kiosk", identity="CN=kiosk-01")


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CheckpointService]:
    if request.param == "sqlite":
        s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"), checkpoint_every=4)
        yield s
        s.close()
        return
    with fresh_database() as url:
        s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys", store_url=url,
                                                 station="rokot-airport"), checkpoint_every=4)
        s.start()
        yield s
        s.close()


def chain_of(service: CheckpointService) -> list[dict]:
    store = service.decision_log.storage if service.decision_log else service.storage
    return [json.loads(e) for e in store.audit_entries()]


def test_enrol_verify_identify_erase(service: CheckpointService) -> None:
    assert service.enrol("A1000001", SubjectInfo(name="Megawati", nationality="IDN"), [MEGAWATI]).enrolled
    assert service.enrol("B2000002", SubjectInfo(name="Kofi"), [KOFI]).enrolled
    with pytest.raises(SubjectExists):
        service.enrol("A1000001", SubjectInfo(name="again"), [KOFI_PROBE])
    assert service.verify("A1000001", [MEGAWATI_PROBE], actor=KIOSK).match
    assert not service.verify("A1000001", [KOFI_PROBE], actor=KIOSK).match
    assert [c.subject_id for c in service.identify([KOFI_PROBE]).candidates] == ["B2000002"]
    assert service.get_subject("A1000001").info.nationality == "IDN"
    service.delete_subject("B2000002", "erasure request")
    with pytest.raises(SubjectNotFound):
        service.verify("B2000002", [KOFI_PROBE])
    assert not service.identify([KOFI_PROBE]).candidates
    assert service.gallery_size()[0] == 1 and service.applied_seq == service.storage.head_seq() == 3


def test_a_possible_duplicate_is_held_unless_an_officer_overrides_with_a_reason(service: CheckpointService) -> None:
    assert service.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
    held = service.enrol("A1000002", SubjectInfo(name="Megawati"), [MEGAWATI_PROBE])
    assert not held.enrolled and [c.subject_id for c in held.possible_duplicates] == ["A1000001"]
    with pytest.raises(InvalidSample, match="override_reason"):
        service.enrol("A1000002", SubjectInfo(name="Megawati"), [MEGAWATI_PROBE], allow_duplicate=True)
    done = service.enrol("A1000002", SubjectInfo(name="Megawati"), [MEGAWATI_PROBE], allow_duplicate=True,
                         override_reason="twins, documents checked")
    assert done.enrolled and service.storage.count()[0] == 2


def test_a_watchlist_match_raises_an_alert_and_every_decision_is_in_the_chain(service: CheckpointService,
                                                                           tmp_path: Path) -> None:
    service.enrol("A1000001", SubjectInfo(name="Megawati", watchlist=True), [MEGAWATI])
    result = service.verify("A1000001", [MEGAWATI_PROBE], actor=KIOSK)
    assert result.match and result.watchlist
    alerts = service.list_alerts()
    assert [(a.kind, a.subject_id, a.caller) for a in alerts] == [("watchlist_verify", "A1000001", "CN=kiosk-01")]
    service.delete_subject("A1000001", "erasure request")
    entries = chain_of(service)
    kinds = [e.get("kind") for e in entries if e["type"] == "decision"]
    assert kinds == ["enrol", "verify", "alert", "read_alerts", "delete"]
    public = load_public_key(tmp_path / "keys" / "audit-signing.pub")
    assert verify_store((json.dumps(e) for e in entries), public).ok
