"""The test suite's own support: wait_until (tests/waiting.py) and the session's key isolation (conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SESSION_CONFIG, SESSION_KEY_DIR
from waiting import WaitTimeout, wait_until


def counter_reaching(n: int):
    """A predicate that is falsy for its first ``n`` calls, then returns the number of calls made."""
    calls = [0]

    def predicate() -> int:
        calls[0] += 1
        return calls[0] if calls[0] > n else 0

    return predicate, calls


def test_wait_until_returns_the_first_truthy_value():
    predicate, calls = counter_reaching(3)
    assert wait_until(predicate, timeout=10, interval=0.001) == 4
    assert calls[0] == 4  # not called again once true


def test_wait_until_fails_at_the_deadline_naming_what_never_happened():
    predicate, calls = counter_reaching(10**9)
    with pytest.raises(WaitTimeout, match=r"the worker to be replaced: still not true after 0\.05 s \(last value 0\)"):
        wait_until(predicate, timeout=0.05, interval=0.01, message="the worker to be replaced")
    assert 2 <= calls[0] <= 20  # polled (not slept through), and once more at the deadline


def test_wait_until_checks_once_even_with_no_time_left():
    predicate, _ = counter_reaching(0)
    assert wait_until(predicate, timeout=0) == 1
    with pytest.raises(WaitTimeout):
        wait_until(lambda: None, timeout=0)


def test_a_broken_predicate_is_not_retried():
    def broken() -> bool:
        raise KeyError("no such worker")

    with pytest.raises(KeyError):
        wait_until(broken, timeout=10)
    with pytest.raises(ValueError):
        wait_until(lambda: True, timeout=1, interval=0)


def test_keys_and_configuration_go_to_the_session_directory_not_home():
    assert os.environ["XDG_CONFIG_HOME"] == str(SESSION_CONFIG)
    assert os.environ["CHECKPOINT_KEY_DIR"] == str(SESSION_KEY_DIR)
    assert Path.home().resolve() not in SESSION_CONFIG.resolve().parents
    # A subprocess (a checkpoint-server started by a test) inherits them: its default key directory is ours.
    done = subprocess.run([sys.executable, "-c", "from biometrics.keydir import default_key_dir; "
                           "print(default_key_dir())"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(SESSION_KEY_DIR)
