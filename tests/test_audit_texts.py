"""An officer's own words about a subject (an override's reason, a review's reason) are not kept in the append-only
audit chain but beside it, as a commitment in the chain and the sealed text in the store: an erasure deletes the
text and the chain still verifies; a text altered, moved or added fails `checkpoint-audit verify`; the erasure's
own reason stays in clear (real SQLite files, real PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from island_helpers import KOFI, KOFI_2, MEGAWATI, MEGAWATI_2, go_offline, open_station
from island_helpers import office_and_island as stations_of
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from biometrics.crypto import KeyRing
from biometrics.service import CheckpointService, StoreLocation
from biometrics.storage import read_audit
from biometrics.types import Actor, SubjectInfo
from verify import audit_cli

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")
#: What an officer might write when keeping an enrolment despite a possible duplicate: it describes the person.
OVERRIDE = "twin sister of the enrolled traveller, met both at the desk, Megawati's family"
ERASURE = "erasure request of the data subject, form 12"


def open_embedded(tmp_path: Path) -> CheckpointService:
    return CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))


def enrol_override(service: CheckpointService) -> None:
    """P1234567 enrolled, then Q7654321 (the same face) kept by an officer despite the possible duplicate."""
    assert service.enrol("P1234567", SubjectInfo(name="Megawati"), [MEGAWATI], actor=OFFICER).enrolled
    kept = service.enrol("Q7654321", SubjectInfo(name="Megawati's twin"), [MEGAWATI_2], actor=OFFICER,
                         allow_duplicate=True, override_reason=OVERRIDE)
    assert kept.enrolled and [c.subject_id for c in kept.possible_duplicates] == ["P1234567"]


def stopped_after_override(tmp_path: Path) -> None:
    """A station that enrolled with an override (:func:`enrol_override`), stopped."""
    service = open_embedded(tmp_path)
    try:
        enrol_override(service)
    finally:
        service.close()


def aad(seq: int, field: str) -> bytes:
    """What binds a text to its record (imported here: a module of the version before holds no such thing)."""
    from biometrics.storage import audit_text_aad

    return audit_text_aad("", seq, field)


def raw_bytes(data: Path) -> bytes:
    """Every byte of the store's files (the database, its WAL and shared memory), as a disk copy would hold them."""
    return b"".join(p.read_bytes() for p in sorted(data.glob("checkpoint.db*")))


def chain(data: Path) -> list[dict[str, Any]]:
    return [json.loads(e) for e in read_audit(data / "checkpoint.db")]


def texts_table(data: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data / "checkpoint.db") as db:
        return db.execute("SELECT station, seq, field, refs, sealed FROM audit_texts ORDER BY seq").fetchall()


def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str]:
    code = audit_cli.main([args[0], "--data-dir", str(tmp_path / "data"), "--key-dir", str(tmp_path / "keys"),
                           *args[1:]])
    return code, capsys.readouterr().out


def test_an_erasure_deletes_the_override_reason_and_the_chain_still_verifies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = open_embedded(tmp_path)
    try:
        enrol_override(service)
        [enrol] = [e for e in chain(tmp_path / "data") if e.get("kind") == "enrol"
                   and e["fields"]["outcome"] == "enrol_duplicate_overridden"]
        assert "override_reason" not in enrol["fields"], "the chain holds a commitment, not the text"
        [(station, seq, field, refs, sealed)] = texts_table(tmp_path / "data")
        assert (station, seq, field) == ("", enrol["seq"], "override_reason")
        ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
        assert set(refs.split()) == {ring.pseudonym("Q7654321"), ring.pseudonym("P1234567")}
        doc = json.loads(ring.open(sealed, aad(seq, "override_reason")))
        assert doc["text"] == OVERRIDE and len(bytes.fromhex(doc["salt"])) == 16
        assert enrol["fields"]["override_reason_sha256"] == hashlib.sha256(
            bytes.fromhex(doc["salt"]) + OVERRIDE.encode()).hexdigest()
        assert OVERRIDE.encode() not in raw_bytes(tmp_path / "data"), "sealed at rest"

        service.delete_subject("Q7654321", ERASURE, actor=OFFICER)
    finally:
        service.close()
    assert texts_table(tmp_path / "data") == []
    assert OVERRIDE.encode() not in raw_bytes(tmp_path / "data")
    assert b"twin sister" not in raw_bytes(tmp_path / "data")
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 0 and out.startswith("OK ") and "0 match their commitments, 1 erased" in out, out


def test_an_erasure_of_the_duplicate_the_override_names_deletes_it_too(tmp_path: Path) -> None:
    service = open_embedded(tmp_path)
    try:
        enrol_override(service)
        service.delete_subject("P1234567", ERASURE, actor=OFFICER)
        assert service.holds("Q7654321")
    finally:
        service.close()
    assert OVERRIDE.encode() not in raw_bytes(tmp_path / "data")
    assert texts_table(tmp_path / "data") == []


def test_the_erasures_own_reason_stays_in_clear_as_the_record_of_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = open_embedded(tmp_path)
    try:
        enrol_override(service)
        service.delete_subject("Q7654321", ERASURE, actor=OFFICER)
    finally:
        service.close()
    [delete] = [e for e in chain(tmp_path / "data") if e.get("kind") == "delete"]
    assert delete["fields"]["reason"] == ERASURE and "reason_sha256" not in delete["fields"]
    code, out = cli(capsys, tmp_path, "show")
    assert code == 0 and ERASURE in out, "the erasure's reason is kept: why the data were erased"
    assert OVERRIDE not in out and "override_reason=(erased)" in out, "what the officer wrote of the person is not"


def test_export_holding_the_texts_in_clear_is_written_0600_and_refuses_a_symbolic_link(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The export holds the officers' texts in clear: mode 0600 under the usual umask 022, never through a link."""
    stopped_after_override(tmp_path)
    export, target = tmp_path / "export.jsonl", tmp_path / "elsewhere.jsonl"
    old = os.umask(0o022)
    try:
        code, out = cli(capsys, tmp_path, "export", "--out", str(export))
        assert code == 0 and "officers' texts" in out, out
        assert OVERRIDE in export.read_text()
        assert stat.S_IMODE(export.stat().st_mode) == 0o600, oct(export.stat().st_mode)

        target.write_text("")
        link = tmp_path / "link.jsonl"
        link.symlink_to(target)
        assert audit_cli.main(["export", "--data-dir", str(tmp_path / "data"), "--key-dir", str(tmp_path / "keys"),
                               "--out", str(link)]) == 2
        assert "symbolic link" in capsys.readouterr().err
        assert target.read_text() == "" and link.is_symlink(), "nothing written through the link, nor over it"
    finally:
        os.umask(old)


def test_show_and_export_print_the_text_while_it_is_held_and_erased_after(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = open_embedded(tmp_path)
    try:
        enrol_override(service)
        code, before = cli(capsys, tmp_path, "show", "--kind", "enrol")
        assert code == 0 and f"override_reason={json.dumps(OVERRIDE)}" in before, before
        export = tmp_path / "before.jsonl"
        assert cli(capsys, tmp_path, "export", "--out", str(export))[0] == 0
        [exported] = [json.loads(line) for line in export.read_text().splitlines()
                      if "override_reason_sha256" in line]
        assert exported["officer_texts"]["override_reason"]["text"] == OVERRIDE
        assert audit_cli.main(["verify", "--log", str(export), "--key-dir", str(tmp_path / "keys")]) == 0
        assert "1 match their commitments" in capsys.readouterr().out

        lines = export.read_text().replace(OVERRIDE, "someone else entirely").splitlines()
        forged = tmp_path / "forged.jsonl"
        forged.write_text("\n".join(lines) + "\n")
        assert audit_cli.main(["verify", "--log", str(forged), "--key-dir", str(tmp_path / "keys")]) == 1
        assert "does not match the commitment" in capsys.readouterr().out

        service.delete_subject("Q7654321", ERASURE, actor=OFFICER)
    finally:
        service.close()
    code, after = cli(capsys, tmp_path, "show", "--kind", "enrol")
    assert code == 0 and "override_reason=(erased)" in after and OVERRIDE not in after, after
    export = tmp_path / "after.jsonl"
    assert cli(capsys, tmp_path, "export", "--out", str(export))[0] == 0
    assert OVERRIDE not in export.read_text()
    [exported] = [json.loads(line) for line in export.read_text().splitlines() if "override_reason_sha256" in line]
    assert exported["officer_texts"] == {"override_reason": "(erased)"}
    assert audit_cli.main(["verify", "--log", str(export), "--key-dir", str(tmp_path / "keys")]) == 0
    assert "1 erased" in capsys.readouterr().out


def test_a_text_altered_moved_or_added_in_the_store_fails_verify(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stopped_after_override(tmp_path)
    db_path = tmp_path / "data" / "checkpoint.db"
    ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
    [(_, seq, field, _, sealed)] = texts_table(tmp_path / "data")
    salt = json.loads(ring.open(sealed, aad(seq, field)))["salt"]
    assert cli(capsys, tmp_path, "verify")[0] == 0

    # altered: another text sealed properly under the key ring (whoever holds the key), same salt
    other = ring.seal(json.dumps({"salt": salt, "text": "nothing to see"}).encode(), aad(seq, field))
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE audit_texts SET sealed = ? WHERE seq = ?", (other, seq))
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 1 and out.startswith("TAMPERED") and "does not match the commitment" in out, out

    # moved to another record: it no longer opens there
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE audit_texts SET sealed = ?, seq = ? WHERE seq = ?", (sealed, seq - 1, seq))
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 1 and "does not open" in out, out

    # added beside a record that commits to none (sealed properly for it)
    added = ring.seal(json.dumps({"salt": salt, "text": "x"}).encode(), aad(seq - 1, field))
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE audit_texts SET sealed = ? WHERE seq = ?", (added, seq - 1))
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 1 and "commits to none" in out, out

    # removed as an erasure removes it, but with no erasure: deleted behind the service's back
    with sqlite3.connect(db_path) as db:
        db.execute("DELETE FROM audit_texts")
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 1 and "is missing, and no erasure of a subject it concerns is recorded" in out, out

    # an erasure of a subject it concerns, recorded after it: what an erasure does, fine
    service = open_embedded(tmp_path)
    try:
        service.delete_subject("P1234567", ERASURE, actor=OFFICER)
    finally:
        service.close()
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 0 and "1 erased" in out, out


def test_without_the_key_ring_verify_says_the_texts_were_not_checked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    stopped_after_override(tmp_path)
    no_ring = ["--key-file", str(tmp_path / "no-such-ring.json")]
    code, out = cli(capsys, tmp_path, "verify", *no_ring)
    assert code == 0 and "1 held but not checked (no key ring" in out, out
    export = tmp_path / "export.jsonl"
    assert cli(capsys, tmp_path, "export", "--out", str(export), *no_ring)[0] == 0
    assert OVERRIDE not in export.read_text()
    assert audit_cli.main(["verify", "--log", str(export), "--key-dir", str(tmp_path / "keys")]) == 0
    assert "1 held but not checked" in capsys.readouterr().out, "not counted as erased"


def test_records_of_an_older_version_keep_their_texts_in_clear_beside_the_new_commitments(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An older version's log (imported at the first start) holds ``override_reason`` as written: kept so, and the
    chain, now with a commitment after it, verifies whole."""
    from biometrics.audit import GENESIS, canonical, entry_hash

    old = {"seq": 0, "type": "decision", "time": "2026-11-01T08:00:00.000000+00:00", "kind": "enrol",
           "decision_id": "d0", "actor": {"role": "officer", "identity": "CN=Siti,OU=officer"},
           "fields": {"subject_ref": "ab" * 32, "outcome": "enrol_duplicate_overridden",
                      "override_reason": "written by an older version"}, "prev": GENESIS}
    old["hash"] = entry_hash(old)
    (tmp_path / "data" / "audit").mkdir(parents=True)
    (tmp_path / "data" / "audit" / "audit.jsonl").write_bytes(canonical(old) + b"\n")
    stopped_after_override(tmp_path)
    assert chain(tmp_path / "data")[0] == old
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 0 and "1 match their commitments" in out, out
    code, out = cli(capsys, tmp_path, "show", "--kind", "enrol")
    assert 'override_reason="written by an older version"' in out and f"override_reason={json.dumps(OVERRIDE)}" in out


# -- the shared register -------------------------------------------------------------------------


@pytest.fixture
def register_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def register_texts(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT station, seq, field, refs FROM audit_texts ORDER BY station, seq").fetchall()


def register_holds(url: str, needle: str) -> list[str]:
    """The tables of the register holding ``needle`` in clear anywhere in a row."""
    found = []
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            row = conn.execute(f"SELECT 1 FROM {table} t WHERE t::text LIKE %s LIMIT 1", (f"%{needle}%",)).fetchone()
            if row is not None:
                found.append(table)
    return found


def test_an_erasure_at_any_station_deletes_the_override_reason_from_the_register(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    central = open_station(tmp_path, "central", register_url, replica=False)
    other = open_station(tmp_path, "lombok", register_url, replica=False)
    try:
        enrol_override(central)
        assert central.enrol("K5000005", SubjectInfo(name="Kofi"), [KOFI], actor=OFFICER).enrolled
        assert register_holds(register_url, "twin sister") == [], "not in clear in any table of the register"
        [(station, _, field, _)] = register_texts(register_url)
        assert (station, field) == ("central", "override_reason")
        code, out = register_cli(capsys, tmp_path, register_url, "central", "verify")
        assert code == 0 and "1 match their commitments" in out, out

        other.delete_subject("Q7654321", ERASURE, actor=OFFICER)  # at another station
    finally:
        other.close()
        central.close()
    assert register_holds(register_url, "twin sister") == []
    assert register_texts(register_url) == []
    code, out = register_cli(capsys, tmp_path, register_url, "central", "verify")
    assert code == 0 and "0 match their commitments, 1 erased" in out, out
    code, out = register_cli(capsys, tmp_path, register_url, "central", "show", "--kind", "enrol")
    assert code == 0 and "override_reason=(erased)" in out, out


#: What an island's officer might write when keeping an enrolment offline, and an office officer resolving a review.
ISLAND_OVERRIDE = "brother of the man enrolled last week, both fishermen from Siberut"
REVIEW_REASON = "two brothers, seen together at the office with their mother"


#: (the office's station, the island, the island's link)
Stations = tuple[CheckpointService, CheckpointService, LinkProxy]


@pytest.fixture
def office_and_island(tmp_path: Path, register_url: str) -> Iterator[Stations]:
    """(station "central" on the register, island "siberut" online through a link proxy, the proxy)."""
    with stations_of(tmp_path, register_url) as stations:
        yield stations


def reconnect(island: CheckpointService, proxy: LinkProxy) -> None:
    """The island's link back, and its outbox drained."""
    proxy.restore()
    wait_until(lambda: island.sync_status()["outbox_pending"] == 0, timeout=60, message="the outbox drained")


def register_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, station: str, *args: str
                 ) -> tuple[int, str]:
    """``checkpoint-audit COMMAND --store url --station station ...`` with the tests' keys: (exit code, output)."""
    code = audit_cli.main([args[0], "--store", url, "--station", station, "--key-dir", str(tmp_path / "keys"),
                           *args[1:]])
    return code, capsys.readouterr().out


def island_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((tmp_path / "siberut" / "replica").glob("replica.db*")))


def island_texts(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "siberut" / "replica" / "replica.db") as db:
        return db.execute("SELECT station, seq, field FROM audit_texts").fetchall()


def override_offline(central: CheckpointService, island: CheckpointService, proxy: LinkProxy) -> None:
    """K5000005 enrolled at the office and known at the island; offline, the island's officer keeps K4000004 (the
    same man) despite the possible duplicate."""
    assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office"), [KOFI]).enrolled
    wait_until(lambda: island.holds("K5000005"), timeout=15, message="the island knows K5000005")
    go_offline(island, proxy)
    kept = island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2], allow_duplicate=True,
                        override_reason=ISLAND_OVERRIDE)
    assert kept.provisional and [c.subject_id for c in kept.possible_duplicates] == ["K5000005"]


@pytest.mark.slow
def test_an_offline_erasure_at_the_island_deletes_the_islands_override_reason(
        tmp_path: Path, office_and_island: Stations) -> None:
    override_offline(*office_and_island)
    island = office_and_island[1]
    assert ISLAND_OVERRIDE.encode() not in island_bytes(tmp_path), "not in clear in the island's journal"
    assert [(s, f) for s, _, f in island_texts(tmp_path)] == [("siberut", "override_reason")]
    island.delete_subject("K4000004", ERASURE, actor=OFFICER)  # still offline
    assert island_texts(tmp_path) == []
    assert ISLAND_OVERRIDE.encode() not in island_bytes(tmp_path)


@pytest.mark.slow
def test_an_erasure_at_the_register_reaches_the_override_reason_kept_at_the_island(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str],
        office_and_island: Stations) -> None:
    central, island, proxy = office_and_island
    override_offline(central, island, proxy)
    reconnect(island, proxy)
    wait_until(lambda: island.decision_log.pending() == 0, timeout=30, message="the island's chain shipped")
    assert register_holds(register_url, "fishermen") == [], "the island's text never reaches the register"
    code, out = register_cli(capsys, tmp_path, register_url, "siberut", "verify")
    assert code == 0 and "1 kept by the stations that wrote them" in out, out
    code, out = register_cli(capsys, tmp_path, register_url, "siberut", "show", "--kind", "enrol")
    assert code == 0 and "override_reason=(kept by the station that wrote it" in out, out

    central.delete_subject("K5000005", ERASURE, actor=OFFICER)  # the duplicate the island's officer wrote about
    wait_until(lambda: island_texts(tmp_path) == [], timeout=15, message="the erasure reached the island's text")
    assert ISLAND_OVERRIDE.encode() not in island_bytes(tmp_path)


@pytest.mark.slow
def test_a_reviews_reason_is_kept_as_a_commitment_and_erased_with_its_candidate(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str],
        office_and_island: Stations) -> None:
    central, island, proxy = office_and_island
    go_offline(island, proxy)
    assert island.enrol("K4000004", SubjectInfo(name="Kofi at Siberut"), [KOFI_2]).provisional
    assert central.enrol("K5000005", SubjectInfo(name="Kofi at the office"), [KOFI]).enrolled
    reconnect(island, proxy)
    (review,) = central.list_reviews()
    central.resolve_review(review.review_id, "keep_both", REVIEW_REASON, actor=OFFICER)
    assert register_holds(register_url, "brothers") == [], "not in clear in the chain, nor in the reviews table"
    [(station, _, field, refs)] = register_texts(register_url)
    ring = central.storage.keyring
    assert (station, field) == ("central", "reason")
    assert set(refs.split()) == {ring.pseudonym("K4000004"), ring.pseudonym("K5000005")}
    code, out = register_cli(capsys, tmp_path, register_url, "central", "show", "--kind", "review_resolved")
    assert code == 0 and f"reason={json.dumps(REVIEW_REASON)}" in out, out

    central.delete_subject("K5000005", ERASURE, actor=OFFICER)  # the candidate: the reason spoke of him too
    assert register_texts(register_url) == []
    code, out = register_cli(capsys, tmp_path, register_url, "central", "verify")
    assert code == 0 and "1 erased" in out, out


def outbox_payloads(tmp_path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(upload id, content hash, payload opened) of every entry of the island's outbox."""
    from biometrics.replica import _outbox_aad
    ring = KeyRing.load(tmp_path / "keys" / "keyring.json")
    with sqlite3.connect(tmp_path / "siberut" / "replica" / "replica.db") as db:
        rows = db.execute("SELECT upload_id, content_hash, sealed FROM outbox ORDER BY n").fetchall()
    return [(u, h, json.loads(ring.open(bytes(b), _outbox_aad(u))) if b else {}) for u, h, b in rows]


@pytest.mark.slow
def test_an_offline_override_reason_is_never_in_the_outbox_and_an_erasure_leaves_none_behind(
        tmp_path: Path, office_and_island: Stations) -> None:
    central, island, proxy = office_and_island
    override_offline(central, island, proxy)
    [(_, _, payload)] = outbox_payloads(tmp_path)
    assert payload["subject_id"] == "K4000004" and "override_reason" not in payload
    island.delete_subject("K5000005", ERASURE, actor=OFFICER)  # offline: the duplicate the text is about
    assert island_texts(tmp_path) == []
    assert not any(ISLAND_OVERRIDE in json.dumps(p) for _, _, p in outbox_payloads(tmp_path))
    assert ISLAND_OVERRIDE.encode() not in island_bytes(tmp_path)


@pytest.mark.slow
def test_an_older_versions_override_reason_leaves_the_outbox_with_its_content_hash_kept(
        tmp_path: Path, office_and_island: Stations) -> None:
    from biometrics.replica import _outbox_aad
    central, island, proxy = office_and_island
    override_offline(central, island, proxy)
    replica = island.island.replica
    [(upload_id, digest, payload)] = outbox_payloads(tmp_path)
    with replica.local.transaction() as tx:  # as an older version queued it
        tx.execute("UPDATE outbox SET sealed = ? WHERE upload_id = ?", (replica.local.keyring.seal(
            json.dumps({**payload, "override_reason": ISLAND_OVERRIDE}).encode(), _outbox_aad(upload_id)), upload_id))
    assert replica.strip_legacy_texts() == 1
    assert outbox_payloads(tmp_path) == [(upload_id, digest, payload)]
    assert replica.strip_legacy_texts() == 0


@pytest.mark.slow
def test_the_registers_review_of_an_offline_override_holds_no_reason_and_an_older_ones_goes_at_erasure(
        tmp_path: Path, register_url: str, office_and_island: Stations) -> None:
    from biometrics.register import RegisterStorage, Reviews
    central, island, proxy = office_and_island
    override_offline(central, island, proxy)
    reconnect(island, proxy)
    register = RegisterStorage(register_url, KeyRing.load(tmp_path / "keys" / "keyring.json"), station="auditor")
    register.open()
    try:
        reviews = Reviews(register)
        [(review_id, station, _, doc)] = reviews.pending()
        assert station == "siberut" and doc["subject_id"] == "K4000004" and "override_reason" not in doc
        assert [c["subject_id"] for c in doc["candidates"]] == ["K5000005"]
        with register.transaction() as tx:  # as an older version built it from the island's payload
            reviews.update(tx, review_id, {**doc, "override_reason": ISLAND_OVERRIDE})
        central.delete_subject("K5000005", ERASURE, actor=OFFICER)  # the duplicate the text is about
        [(_, _, _, doc)] = reviews.pending()
        assert "override_reason" not in doc and doc["candidates"] == []
    finally:
        register.close()


def test_a_text_deleted_without_an_erasure_of_a_subject_it_concerns_fails_verify(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = open_embedded(tmp_path)
    try:
        enrol_override(service)
        assert service.enrol("K5000005", SubjectInfo(name="Kofi"), [KOFI], actor=OFFICER).enrolled
        service.delete_subject("K5000005", ERASURE, actor=OFFICER)  # an erasure, of someone the text is not about
    finally:
        service.close()
    assert len(texts_table(tmp_path / "data")) == 1
    with sqlite3.connect(tmp_path / "data" / "checkpoint.db") as db:
        db.execute("DELETE FROM audit_texts")  # behind the service's back
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 1 and out.startswith("TAMPERED ") and "no erasure of a subject it concerns" in out, out


def test_an_erasure_before_the_text_does_not_account_for_its_absence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = open_embedded(tmp_path)
    try:
        assert service.enrol("P1234567", SubjectInfo(name="Megawati"), [MEGAWATI], actor=OFFICER).enrolled
        service.delete_subject("P1234567", ERASURE, actor=OFFICER)
        enrol_override(service)  # the same document number again, kept despite a duplicate: a new text
    finally:
        service.close()
    with sqlite3.connect(tmp_path / "data" / "checkpoint.db") as db:
        db.execute("DELETE FROM audit_texts")
    code, out = cli(capsys, tmp_path, "verify")
    assert code == 1 and "no erasure of a subject it concerns" in out, out


def test_a_registers_text_deleted_without_an_erasure_fails_verify_one_erased_at_another_station_passes(
        tmp_path: Path, register_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    central = open_station(tmp_path, "central", register_url, replica=False)
    other = open_station(tmp_path, "lombok", register_url, replica=False)
    try:
        enrol_override(central)
        with psycopg.connect(register_url, autocommit=True) as conn:
            [saved] = conn.execute("SELECT station, seq, field, refs, sealed FROM audit_texts").fetchall()
            conn.execute("DELETE FROM audit_texts")
        code, out = register_cli(capsys, tmp_path, register_url, "central", "verify")
        assert code == 1 and "no erasure of a subject it concerns" in out, out
        with psycopg.connect(register_url, autocommit=True) as conn:
            conn.execute("INSERT INTO audit_texts(station, seq, field, refs, sealed) VALUES (%s, %s, %s, %s, %s)",
                         saved)
        other.delete_subject("P1234567", ERASURE, actor=OFFICER)  # the duplicate it names, at another station
    finally:
        other.close()
        central.close()
    assert register_texts(register_url) == []
    code, out = register_cli(capsys, tmp_path, register_url, "central", "verify")
    assert code == 0 and "0 match their commitments, 1 erased" in out, out
