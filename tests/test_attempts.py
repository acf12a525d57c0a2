"""The station's own count of a kiosk transaction's attempts (biometrics.attempts)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from helpers import refused_at_start

from biometrics.attempts import AttemptLedger, AttemptsExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_transaction_scores_at_most_the_attempts_its_first_call_allowed() -> None:
    ledger = AttemptLedger(120, clock=Clock())
    first = ledger.begin("A1", 2)
    assert (first.attempts, first.call, first.alerted) == (2, 1, False)
    ledger.end(first, accepted=False)
    second = ledger.begin("A1", 2)
    assert (second.attempts, second.call) == (2, 2)
    ledger.end(second, accepted=False)
    with pytest.raises(AttemptsExhausted, match="see an officer"):
        ledger.begin("A1", 2)
    assert ledger.begin("B2", 2).call == 1  # another document is another transaction


def test_a_kiosk_that_declares_fewer_attempts_later_gets_no_more_calls() -> None:
    """A later call takes the N of its transaction's first call, whatever it declares."""
    ledger = AttemptLedger(120, clock=Clock())
    ledger.end(ledger.begin("A1", 1), accepted=False)
    with pytest.raises(AttemptsExhausted):
        ledger.begin("A1", 1)  # calling again as a "new" single-attempt transaction
    ledger2 = AttemptLedger(120, clock=Clock())
    ledger2.end(ledger2.begin("A1", 2), accepted=False)
    later = ledger2.begin("A1", 3)  # declaring more does not raise the budget or change the correction
    assert (later.attempts, later.call) == (2, 2)
    ledger2.end(later, accepted=False)
    with pytest.raises(AttemptsExhausted):
        ledger2.begin("A1", 3)


def test_an_accepted_call_ends_the_transaction() -> None:
    ledger = AttemptLedger(120, clock=Clock())
    ledger.end(ledger.begin("A1", 2), accepted=False)
    ledger.end(ledger.begin("A1", 2), accepted=True)
    assert ledger.open_count() == 0
    fresh = ledger.begin("A1", 1)
    assert (fresh.attempts, fresh.call) == (1, 1)


def test_the_window_runs_from_the_last_scored_call_and_refusals_do_not_extend_it() -> None:
    clock = Clock()
    ledger = AttemptLedger(120, clock=clock)
    ledger.end(ledger.begin("A1", 2), accepted=False)
    clock.now += 100
    ledger.end(ledger.begin("A1", 2), accepted=False)  # within the window: the same transaction
    clock.now += 110
    with pytest.raises(AttemptsExhausted):
        ledger.begin("A1", 2)  # 110 s after the last scored call: still refused
    clock.now += 9.9
    with pytest.raises(AttemptsExhausted):
        ledger.begin("A1", 2)
    clock.now += 0.2  # 120.1 s after the last scored call
    assert ledger.begin("A1", 2).call == 1


def test_a_transaction_remembers_its_watchlist_alert() -> None:
    ledger = AttemptLedger(120, clock=Clock())
    first = ledger.begin("W1", 2)
    ledger.end(first, accepted=False, alerted=True)
    assert ledger.begin("W1", 2).alerted


def test_concurrent_calls_never_score_more_than_the_budget() -> None:
    ledger = AttemptLedger(120, clock=Clock())
    counted, refused = [], []
    barrier = threading.Barrier(8)

    def call() -> None:
        barrier.wait()
        try:
            counted.append(ledger.begin("A1", 3).call)
        except AttemptsExhausted:
            refused.append(1)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counted) == [1, 2, 3] and len(refused) == 5


def test_open_transactions_are_bounded_oldest_first() -> None:
    clock = Clock()
    ledger = AttemptLedger(120, clock=clock, max_open=2)
    for key in ("A", "B", "C"):
        ledger.end(ledger.begin(key, 1), accepted=False)
        clock.now += 1
    assert ledger.open_count() == 2
    assert ledger.begin("A", 1).call == 1  # the oldest was forgotten
    with pytest.raises(AttemptsExhausted):
        ledger.begin("C", 1)


def test_a_transaction_forgotten_because_the_ledger_is_full_leaves_its_end_as_expiry_does() -> None:
    """Eviction must not drop a step's unpublished end (a traveller sent to an officer would have no decision
    event): it is handed out once, like an expired transaction's; an end already published is not."""
    clock = Clock()
    ledger = AttemptLedger(120, clock=clock, max_open=2)
    ledger.end(ledger.begin("A", 2), accepted=False, unpublished="end of A")
    ledger.end(ledger.begin("B", 2), accepted=False, published=True)
    ledger.end(ledger.begin("C", 2), accepted=False, unpublished="end of C")  # A is forgotten
    assert ledger.take_ended() == ["end of A"] and ledger.take_ended() == []
    ledger.end(ledger.begin("D", 2), accepted=False, unpublished="end of D")  # B is forgotten: published already
    assert ledger.take_ended() == []
    assert ledger.open_count() == 2 and ledger.begin("A", 2).call == 1
    assert ledger.take_ended() == ["end of C"]  # A's new call pushed out C


def test_the_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        AttemptLedger(0)


@pytest.mark.parametrize("window", ["0", "-5", "nan"])
def test_the_server_refuses_a_window_that_is_not_positive(tmp_path: Path, window: str) -> None:
    done = refused_at_start(tmp_path, "--attempt-window", window)  # before the data directory is touched
    assert "--attempt-window must be positive" in done.stderr


def test_check_open_refuses_what_begin_would_and_counts_nothing() -> None:
    clock = Clock()
    ledger = AttemptLedger(120, clock=clock)
    ledger.check_open("A1")  # nothing open: no refusal
    first = ledger.begin("A1", 2)
    ledger.check_open("A1")  # one attempt left
    ledger.check_open("A1")  # asking again counts nothing
    ledger.end(first, accepted=False)
    assert ledger.begin("A1", 2).call == 2
    with pytest.raises(AttemptsExhausted):
        ledger.check_open("A1")
    clock.now += 121
    ledger.check_open("A1")  # the window has passed


def test_a_step_leaves_its_end_to_be_handed_out_once_when_the_window_passes() -> None:
    clock = Clock()
    ledger = AttemptLedger(120, clock=clock)
    ledger.end(ledger.begin("A1", 2), accepted=False, unpublished="end of A1")
    ledger.end(ledger.begin("B2", 2), accepted=False, unpublished="end of B2")
    ledger.end(ledger.begin("B2", 2), accepted=False, published=True)  # B2's last call published its own end
    ledger.end(ledger.begin("C3", 2), accepted=False, unpublished="end of C3")
    assert ledger.claim_end("C3")  # a failed capture published C3's end
    assert ledger.take_ended() == []
    clock.now += 121
    assert ledger.take_ended() == ["end of A1"] and ledger.take_ended() == []
    ledger.end(ledger.begin("D4", 2), accepted=False, unpublished="end of D4")
    ledger.end(ledger.begin("E5", 2), accepted=True)
    assert ledger.take_ended(all_open=True) == ["end of D4"] and ledger.open_count() == 0
