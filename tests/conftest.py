"""Test session set-up: keys and configuration go to a temporary directory, never to the real home.

The default key directory is ``$XDG_CONFIG_HOME/checkpoint/keys`` (``CHECKPOINT_KEY_DIR`` overrides it), outside
the data directory. A test that starts a server, or calls the core with no explicit key directory, would
otherwise create or read a key ring in the developer's own ``~/.config``. Both variables are set here, in
``os.environ`` at import time (before any test module is imported), so that every ``checkpoint-server``
subprocess a test starts inherits them; a value already in the environment is replaced on purpose.
``XDG_STATE_HOME`` likewise, for a ``checkpoint-portal`` started without ``--state-dir``.

Every test still runs by default: the markers in pyproject.toml (``server``, ``bench``, ``slow``) only let a
developer choose a subset, e.g. ``pytest -m "not server and not bench"``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

SESSION_CONFIG = Path(tempfile.mkdtemp(prefix="checkpoint-tests-config-"))
SESSION_KEY_DIR = SESSION_CONFIG / "checkpoint" / "keys"

os.environ["XDG_CONFIG_HOME"] = str(SESSION_CONFIG)
os.environ["CHECKPOINT_KEY_DIR"] = str(SESSION_KEY_DIR)
os.environ["XDG_STATE_HOME"] = str(SESSION_CONFIG / "state")  # a portal's releases, when no --state-dir is given


def pytest_report_header(config: pytest.Config) -> str:
    """Say where this session's keys and configuration go."""
    return f"checkpoint tests: XDG_CONFIG_HOME={SESSION_CONFIG}, CHECKPOINT_KEY_DIR={SESSION_KEY_DIR}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's configuration directory (keys written by servers and tests included)."""
    shutil.rmtree(SESSION_CONFIG, ignore_errors=True)
