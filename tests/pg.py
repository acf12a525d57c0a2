"""PostgreSQL for tests: the machine's real server, a database of this run's own, dropped at the end.

The server is ``CHECKPOINT_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``, as on
every machine of this project). Where it does not answer, a test that needs it fails with a message naming
the URL: never a silent skip.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

ADMIN_URL = os.environ.get("CHECKPOINT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin() -> psycopg.Connection:
    """An autocommit connection to the test server's maintenance database (fails naming the URL)."""
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise AssertionError(f"PostgreSQL does not answer at {ADMIN_URL} (set CHECKPOINT_TEST_POSTGRES, or start "
                             f"it: pg_ctlcluster 15 main start): {exc}") from None


def url_of(database: str) -> str:
    """The URL of ``database`` on the test server."""
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    info["dbname"] = database
    host, port, user = info.get("host", "127.0.0.1"), info.get("port", "5432"), info.get("user", "postgres")
    return f"postgresql://{user}@{host}:{port}/{database}"


@contextmanager
def fresh_database(prefix: str = "checkpoint_test") -> Iterator[str]:
    """Create a database unique to this run, yield its URL, drop it (with its connections) afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url_of(name)
    finally:
        with admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def dump(url: str, path: str) -> None:
    """Back the database at ``url`` up with ``pg_dump -Fc`` into ``path`` (as docs/register.md says)."""
    subprocess.run(["pg_dump", "-Fc", "-f", path, url], check=True, capture_output=True)


def restore(url: str, path: str) -> None:
    """Restore the database at ``url`` from a ``pg_dump -Fc`` file, as docs/register.md says: dropped (its
    connections closed), created empty, ``pg_restore``; the register's generation is left to the caller."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(["pg_restore", "--no-owner", "-d", url, path], check=True, capture_output=True)
