"""A station's local audit journal beside the register: a journal write that fails after the register committed a
change does not turn a stored change into an error, nor fork the station's chain; reconcile compares the two
chains where they overlap."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from island_helpers import KOFI, MEGAWATI, MEGAWATI_2, chain_verifies, open_station, register_chain
from pg import fresh_database

from biometrics.audit import ChainFork
from biometrics.errors import RegisterUnavailable, SubjectExists
from biometrics.types import SubjectInfo

pytestmark = pytest.mark.slow


def fail_once(chain: Any) -> None:
    """Make the chain's next journal write fail as a full disk does, once."""
    real, calls = chain._journal, []

    def journal(entries: list[dict[str, Any]]) -> None:
        calls.append(len(entries))
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        real(entries)
    chain._journal = journal


def test_a_journal_write_failing_after_the_register_committed_neither_fails_the_enrolment_nor_forks(
        tmp_path: Path) -> None:
    with fresh_database() as url:
        a = open_station(tmp_path, "rokot-airport", url, replica=False)
        try:
            chain = a.decision_log
            fail_once(chain)
            result = a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI])
            assert result.enrolled, "the enrolment is stored: the desk is told so"
            assert a.storage.subject_info("A1000001") is not None
            assert a.verify("A1000001", [MEGAWATI_2]).match  # a local decision: the journal is healed first
            assert a.enrol("K5000005", SubjectInfo(name="Kofi"), [KOFI]).enrolled
            while chain.ship():
                pass
            journal = [(s, h) for s, _, h, _ in chain.storage.audit_rows(-1, 1000)]
            register = [(s, h) for s, _, h, _ in a.storage.audit_rows(-1, 1000)]
            assert journal == register and [s for s, _ in journal] == list(range(len(journal)))
        finally:
            a.close()


def test_reconcile_refuses_a_journal_that_differs_from_the_register_where_both_hold_entries(tmp_path: Path) -> None:
    with fresh_database() as url:
        a = open_station(tmp_path, "rokot-airport", url, replica=False)
        try:
            assert a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
            chain = a.decision_log
            held = chain.storage.audit_rows(-1, 1)[0][2]
            with chain.storage.transaction() as tx:  # the journal's copy of entry 0 replaced
                tx.execute("UPDATE audit SET hash = ? WHERE seq = 0", ("f" * 64,))
            with pytest.raises(ChainFork, match="seq 0"):
                chain.reconcile()
            with chain.storage.transaction() as tx:
                tx.execute("UPDATE audit SET hash = ? WHERE seq = 0", (held,))
            chain.reconcile()
        finally:
            a.close()


def test_the_chain_in_the_register_verifies_after_a_failed_journal_write(tmp_path: Path) -> None:
    with fresh_database() as url:
        a = open_station(tmp_path, "rokot-airport", url, replica=False)
        try:
            fail_once(a.decision_log)
            assert a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
            assert a.verify("A1000001", [MEGAWATI_2]).match
        finally:
            a.close()
        entries = register_chain(tmp_path, url, "rokot-airport")
        assert len(entries) >= 3
        chain_verifies(tmp_path, entries)


def test_a_register_chain_with_entries_lost_in_the_middle_gets_them_shipped_again(tmp_path: Path) -> None:
    with fresh_database() as url:
        a = open_station(tmp_path, "rokot-airport", url, replica=False)
        try:
            assert a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
            for _ in range(4):
                assert a.verify("A1000001", [MEGAWATI_2]).match
            chain = a.decision_log
            while chain.ship():
                pass
            # a register restored from a backup holding seq 0..1, then shipped seq 4 before the station noticed
            with a.storage.transaction() as tx:
                tx.execute("DELETE FROM audit WHERE station = ? AND seq IN (2, 3)", ("rokot-airport",))
            assert a.storage.audit_prefix_end() == 1
            chain.reconcile()
            while chain.ship():
                pass
            journal = [h for _, _, h, _ in chain.storage.audit_rows(-1, 1000)]
            assert [h for _, _, h, _ in a.storage.audit_rows(-1, 1000)] == journal
        finally:
            a.close()
        chain_verifies(tmp_path, register_chain(tmp_path, url, "rokot-airport"))


def unanswered_commit(register: Any, *, commits: bool) -> list[int]:
    """Make the register's next transaction on the calling thread lose the answer to its COMMIT, once: after
    committing (``commits``) or before (the COMMIT never reached the register). Returns a list that counts the
    losses. (Only the calling thread's: a background thread of the station, the shipper or the change listener,
    must not take the loss meant for the test's own change.)"""
    real, lost, caller = register.transaction, [], threading.get_ident()

    @contextlib.contextmanager
    def transaction() -> Iterator[Any]:
        if threading.get_ident() != caller:
            with real() as tx:
                yield tx
            return
        with real() as tx:
            yield tx
            if not lost and not commits:
                lost.append(1)
                raise RegisterUnavailable("connection lost before the COMMIT reached the register (test)")
        if not lost:
            lost.append(1)
            raise RegisterUnavailable("connection lost during COMMIT (test)")
    register.transaction = transaction
    return lost


@pytest.mark.parametrize("commits", [True, False], ids=["register-committed", "register-did-not"])
def test_a_change_whose_commit_goes_unanswered_neither_forks_the_chain_nor_leaves_a_false_record(
        tmp_path: Path, commits: bool) -> None:
    with fresh_database() as url:
        a = open_station(tmp_path, "tuapejat-port", url, replica=False)
        try:
            lost = unanswered_commit(a.storage, commits=commits)
            with pytest.raises(RegisterUnavailable):
                a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI])
            del a.storage.transaction  # the instance's own method again
            assert lost == [1]
            if commits:  # the desk tries again: the register holds it
                with pytest.raises(SubjectExists):
                    a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI])
            else:
                assert a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled
            assert a.storage.count()[0] == 1 and a.verify("A1000001", [MEGAWATI_2]).match
            chain = a.decision_log
            while chain.ship():
                pass
            journal = [(s, h) for s, _, h, _ in chain.storage.audit_rows(-1, 1000)]
            assert journal == [(s, h) for s, _, h, _ in a.storage.audit_rows(-1, 1000)], "one chain, no fork"
            entries = register_chain(tmp_path, url, "tuapejat-port")
            chain_verifies(tmp_path, entries)
            decisions = [e for e in map(json.loads, entries) if e["type"] == "decision"]
            first = decisions[0]
            assert first["kind"] == "enrol" and first["fields"]["outcome"] == "enrol_new"
            corrections = [e for e in decisions if e["kind"] == "not_committed"]
            if commits:
                assert not corrections, "the register committed the change: its record stands"
            else:
                (note,) = corrections
                assert note["decision_id"] == first["decision_id"] and note["fields"]["seqs"] == [first["seq"]] * 2
        finally:
            a.close()


def test_an_unanswered_commit_the_journal_cannot_take_at_once_blocks_nothing_once_the_disk_is_back(
        tmp_path: Path) -> None:
    """The COMMIT's answer is lost (the register did not commit) and the journal write of the entries in doubt
    fails once (a full disk): the next decision journals them first, then goes on; the chain settles them with a
    not_committed record, never forks, and no call is refused for it."""
    with fresh_database() as url:
        a = open_station(tmp_path, "siberut-port", url, replica=False)
        try:
            chain = a.decision_log
            real, calls = chain._write_in_doubt, []

            def full_disk_once(entries: list[dict[str, Any]]) -> None:
                calls.append(len(entries))
                if len(calls) == 1:
                    raise sqlite3.OperationalError("database or disk is full")
                real(entries)
            chain._write_in_doubt = full_disk_once
            unanswered_commit(a.storage, commits=False)
            with pytest.raises(RegisterUnavailable):
                a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI])
            del a.storage.transaction
            assert len(calls) == 1, "the journal failed to take the entries in doubt"
            assert a.enrol("A1000001", SubjectInfo(name="Megawati"), [MEGAWATI]).enrolled  # journaled first
            assert a.verify("A1000001", [MEGAWATI_2]).match and len(calls) == 2
            while chain.ship():
                pass
            entries = register_chain(tmp_path, url, "siberut-port")
            chain_verifies(tmp_path, entries)
            kinds = [json.loads(e).get("kind") for e in entries]
            assert kinds[:3] == ["enrol", "not_committed", "enrol"] and "verify" in kinds
        finally:
            a.close()
