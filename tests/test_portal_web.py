"""The web app's edges (review finding 6): parameters in other scripts' digits, the 500 page's headers, a
language link for a path that starts with two slashes, and what the auditors' site lets caches keep."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from biometrics.event_store import open_event_store
from biometrics.events import DecisionEvent
from portal.app import create_app


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web-store")
    writer = open_event_store(path, readonly=False)
    when = datetime.now(UTC) - timedelta(days=4)
    writer.record_decisions([DecisionEvent(when + timedelta(minutes=i), "rokot-airport", "k1", "arrival", "foreign",
                                           "proceed", 600.0, "high", "m", "c", nationality="AUS") for i in range(30)])
    writer.close()
    return path


def asgi_get(app: Any, path: str, query: str = "", extensions: dict[str, Any] | None = None
             ) -> tuple[int, dict[str, str], str]:
    """One GET straight through the ASGI app, with the path exactly as given (a client would normalise it)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"portal.example")], "server": ("portal.example", 80), "client": ("1.2.3.4", 5),
             "extensions": extensions or {}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
    return sent[0]["status"], headers, body


@pytest.mark.parametrize(("path", "params"), [
    ("/seasonal", {"years": "\u00b2"}),  # superscript two: isdigit() says yes, int() refuses
    ("/seasonal", {"years": "\u0663"}),  # Arabic-Indic three: int() reads it
    ("/data/seasonal", {"years": "\u00b2"}),
    ("/arrivals", {"from": "\uff12\uff10\uff12\uff16-10"}),  # full-width digits
    ("/today", {"date": "2026-W48-1"}),  # an ISO week date: date.fromisoformat reads it
    ("/data/hourly", {"date": "2026-W48-1"}),
])
def test_digits_of_other_scripts_and_week_dates_are_bad_parameters(store: Path, path: str, params: dict) -> None:
    c = TestClient(create_app(lambda: open_event_store(store)), raise_server_exceptions=False)
    r = c.get(path, params={"lang": "en", **params})
    assert r.status_code == 400 and 'id="error-detail"' in r.text


def test_the_500_page_carries_the_security_headers_and_is_not_cached(store: Path) -> None:
    class Failing:
        def __init__(self) -> None:
            self.inner = open_event_store(store)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def stations(self) -> list[str]:
            raise RuntimeError("a bug, not the store being down")

    c = TestClient(create_app(Failing), raise_server_exceptions=False)
    r = c.get("/arrivals", params={"lang": "en"})
    assert r.status_code == 500 and "<h1>500" in r.text and "a bug" not in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
    assert c.get("/nowhere").headers["cache-control"] == "no-store"  # no error page is kept by a cache


@pytest.mark.parametrize("path", ["//evil.example/masuk", "///evil.example/masuk", "/\\evil.example/masuk"])
def test_the_language_link_of_an_error_page_stays_on_the_site(store: Path, path: str) -> None:
    status, _headers, body = asgi_get(create_app(lambda: open_event_store(store)), path)
    assert status == 404
    link = re.search(r'id="lang-switch" href="([^"]*)"', body).group(1)
    assert link.startswith("/") and not link.startswith(("//", "/\\")) and "lang=en" in link


def test_the_auditors_downloads_and_dictionary_are_not_stored(store: Path, tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "verify.certs", "init", str(tmp_path)], check=True, capture_output=True)
    tls = {"tls": {"client_cert_chain": [(tmp_path / "auditor" / "client.pem").read_text()], "tls_version": None}}
    app = create_app(lambda: open_event_store(store), auditor=True)
    for path, query in (("/data/dictionary.json", ""), ("/data/hourly", "format=csv"),
                        ("/data/seasonal", "format=json"), ("/", "")):
        status, headers, _body = asgi_get(app, path, query, tls)
        assert status == 200 and headers["cache-control"] == "no-store", path
