"""A register on another machine is reached only over TLS that verifies its certificate: a URL to a non-loopback
host without ``sslmode=verify-full`` (or ``verify-ca``) is refused before any connection, naming the fix; loopback
and Unix sockets stay allowed (the URL check needs no server; the last test uses the machine's PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pg import fresh_database

from biometrics.register import StoreRefused, check_url, connect_once


@pytest.fixture(autouse=True)
def _no_libpq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGHOST", "PGHOSTADDR", "PGSSLMODE", "PGSSLROOTCERT", "PGSERVICE", "PGSERVICEFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("url", [
    "postgresql://checkpoint@db.example/register",
    "postgresql://checkpoint:s3cretpw@10.0.0.5:5432/register",
    "postgresql://checkpoint@db.example/register?sslmode=prefer",
    "postgresql://checkpoint@db.example/register?sslmode=require",  # encrypted, but anyone may answer
    "postgresql://checkpoint@[2001:db8::5]/register?sslmode=disable",
    "postgresql://checkpoint@127.0.0.1,db.example/register",  # a fallback host counts too
    "postgresql://checkpoint@localhost/register?hostaddr=10.0.0.5",  # hostaddr is where libpq connects
    "postgresql:///register?host=db.example",
])
def test_a_remote_register_without_verified_tls_is_refused_naming_the_fix(url: str) -> None:
    with pytest.raises(StoreRefused, match="sslmode=verify-full") as refused:
        check_url(url)
    assert "s3cretpw" not in str(refused.value)


@pytest.mark.parametrize("url", [
    "postgresql://checkpoint@db.example/register?sslmode=verify-full&sslrootcert=/etc/checkpoint/ca.pem",
    "postgresql://checkpoint@10.0.0.5/register?sslmode=verify-ca",
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://postgres@localhost/postgres",
    "postgresql://postgres@[::1]:5432/postgres",
    "postgresql://postgres@127.0.0.2/postgres",
    "postgresql:///register",  # the default Unix socket
    "postgresql:///register?host=/var/run/postgresql",
])
def test_loopback_sockets_and_verified_tls_are_accepted(url: str) -> None:
    assert check_url(url) == url


def test_the_environment_libpq_reads_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "db.example")
    with pytest.raises(StoreRefused, match=r"db\.example"):
        check_url("postgresql:///register")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    assert check_url("postgresql:///register") == "postgresql:///register"
    with pytest.raises(StoreRefused, match="sslmode=require"):
        check_url("postgresql:///register?sslmode=require")  # the URL's own sslmode wins over the environment


def test_a_loopback_register_still_connects() -> None:
    with fresh_database() as url:
        assert "127.0.0.1" in url or "localhost" in url
        connect_once(url)


SERVICES = """
[remote]
host=192.0.2.10
sslmode=disable
[remote-verified]
host=192.0.2.10
sslmode=verify-full
[local]
host=127.0.0.1
"""


def test_a_service_file_entry_counts_as_libpq_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = tmp_path / "pg_service.conf"
    services.write_text(SERVICES)
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    with pytest.raises(StoreRefused, match=r"192\.0\.2\.10 \(service remote\).*sslmode=disable"):
        check_url("postgresql:///checkpoint?service=remote")  # the service sends it to another machine, in clear
    url = "postgresql://register.example/checkpoint?service=remote-verified"
    assert check_url(url) == url  # the service's sslmode verifies the register
    assert check_url("postgresql:///checkpoint?service=local") == "postgresql:///checkpoint?service=local"
    monkeypatch.setenv("PGSERVICE", "remote")
    with pytest.raises(StoreRefused, match=r"192\.0\.2\.10"):
        check_url("postgresql:///checkpoint")
    with pytest.raises(StoreRefused, match="definition of service"):
        check_url("postgresql:///checkpoint?service=nowhere")


def test_require_with_a_root_certificate_is_verify_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "register-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    url = f"postgresql://checkpoint@db.example/register?sslmode=require&sslrootcert={ca}"
    assert check_url(url) == url  # libpq verifies the chain when the root file exists
    with pytest.raises(StoreRefused, match="sslmode=require"):  # without it, require accepts whoever answers
        check_url(f"postgresql://checkpoint@db.example/register?sslmode=require&sslrootcert={tmp_path / 'none.pem'}")
    monkeypatch.setenv("PGSSLROOTCERT", str(ca))
    assert check_url("postgresql://checkpoint@db.example/register?sslmode=require")


@pytest.mark.parametrize("url", [
    "postgresql://checkpoint@register.example/register?sslmode=verify-full&sslrootcert=/etc/checkpoint/ca.pem",
    "postgresql://checkpoint@register.example/register",
])
def test_without_a_service_the_check_looks_no_host_name_up(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An island starts offline: with its resolver unreachable, libpq's PQconnectStart waits out the resolver's
    timeout (10 s a silent nameserver, measured by a review: an offline start took 40 s, was 10 s). Without a
    service the verdict is read from the URL and the environment, libpq never asked to connect."""
    from types import SimpleNamespace

    import biometrics.register

    def no_lookup(*_: object) -> None:
        raise AssertionError("check_url started a connection (a host name lookup)")
    monkeypatch.setattr(biometrics.register, "pq", SimpleNamespace(PGconn=SimpleNamespace(connect_start=no_lookup)))
    if "verify-full" in url:
        assert check_url(url) == url
    else:
        with pytest.raises(StoreRefused, match="sslmode=verify-full"):
            check_url(url)
