"""The portal's pages over a real event store: both languages, tables, downloads, validation, error pages,
the auditors' view (unsuppressed, behind mutual TLS) and the PostgreSQL register as a store."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import pytest
from pg import fresh_database
from starlette.testclient import TestClient

from benchmarks.portal_bench import free_port, portal_process
from benchmarks.traffic import TrafficModel, default_start, write_traffic
from biometrics.event_store import open_event_store
from portal.app import create_app
from portal.disclosure import HIDDEN
from portal.figures import Figures
from portal.i18n import LANGUAGES, catalogue

PAGES = ("/", "/today", "/arrivals", "/seasonal", "/satisfaction", "/method", "/data")


def load_year(store_path: str, decisions: int = 30_000, days: int = 400) -> None:
    """A SYNTHETIC period ending today written into the store at ``store_path``."""
    writer = open_event_store(store_path, readonly=False)
    try:
        write_traffic(writer, TrafficModel(default_start(days), days, decisions, seed=7))
    finally:
        writer.close()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("portal-store")
    load_year(str(path))
    return path


@pytest.fixture(scope="module")
def client(store_dir: Path) -> TestClient:
    return TestClient(create_app(lambda: open_event_store(store_dir)), raise_server_exceptions=False)


def test_catalogues_have_the_same_messages() -> None:
    en, idn = catalogue("en"), catalogue("id")
    assert set(en) == set(idn)
    assert all(v.strip() for v in (*en.values(), *idn.values()))


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("path", PAGES)
def test_every_page_in_both_languages(client: TestClient, path: str, lang: str) -> None:
    r = client.get(path, params={"lang": lang})
    assert r.status_code == 200, r.text[:500]
    html = r.text
    assert f'<html lang="{lang}">' in html
    assert catalogue(lang)["last_update"] in html and "<time>" in html
    other = "en" if lang == "id" else "id"
    assert re.search(rf'id="lang-switch" href="[^"]*lang={other}', html)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing from elsewhere
    assert "https://" not in html
    assert "<script" not in html
    assert "default-src 'none'" in r.headers["content-security-policy"]  # the browser refuses anything else


def test_charts_are_accessible_and_have_tables(client: TestClient) -> None:
    for path, table_id in (("/today", "hourly"), ("/arrivals", "arrivals-port"), ("/seasonal", "seasonal"),
                           ("/satisfaction", "satisfaction")):
        html = client.get(path, params={"lang": "en"}).text
        svgs = re.findall(r'<svg [^>]*role="img"[^>]*aria-labelledby="([^"]+)"', html)
        assert svgs, path
        for labels in svgs:
            for label in labels.split():
                assert f'id="{label}"' in html
        assert f'<table id="{table_id}">' in html and "<caption>" in html


def test_today_publishes_percentiles_only_from_ten_published_decisions(store_dir: Path) -> None:
    figures = Figures(open_event_store(store_dir))
    day = figures.last_released_day()
    for station in figures.store.stations():
        view = figures.today(station, day)
        truth = figures.today(station, day, public=False)  # the auditors' figures
        for h, true in zip(view.hours, truth.hours, strict=True):
            if h.percentiles[50] is not None:
                assert not h.total.suppressed and h.total.value >= 10
            if 0 < true.total.value < 10:
                assert h.total.text() == HIDDEN
            assert h.total.suppressed or h.total.value == true.total.value


def test_downloads_parse_and_match_the_dictionary(client: TestClient) -> None:
    dictionary = client.get("/data/dictionary.json").json()
    for dataset, fields in dictionary.items():
        names = [f["name"] for f in fields]
        assert all(f["en"] and f["id"] for f in fields)
        r = client.get(f"/data/{dataset}", params={"format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(r.text)))
        assert rows[0] == names
        doc = client.get(f"/data/{dataset}", params={"format": "json"}).json()
        assert [f["name"] for f in doc["fields"]] == names
        assert len(doc["records"]) == len(rows) - 1
        assert doc["meta"]["last_update"]
        for rec in doc["records"]:
            assert set(rec) == set(names)
            for key in ("arrivals", "departures", "total"):
                if key in rec:
                    assert isinstance(rec[key], int) or rec[key] == HIDDEN


def test_released_nationalities_are_thresholded_and_stable(client: TestClient) -> None:
    first = client.get("/data/arrivals_nationality", params={"format": "json"}).json()["records"]
    again = client.get("/data/arrivals_nationality", params={"format": "json"}).json()["records"]
    assert first and first == again  # the release is cached: a reload draws no new noise
    assert all(r["method"] == "opendp" and r["arrivals"] >= 10 for r in first)
    assert "OpenDP" in client.get("/method", params={"lang": "en"}).text


@pytest.mark.parametrize(("query", "words"), [
    ({"date": "2026-02-30"}, "2026-02-30"),
    ({"date": "yesterday"}, "yesterday"),
    ({"date": "1999-01-01"}, "1999-01-01"),
    ({"station": "atlantis"}, "atlantis"),
    ({"lang": "fr"}, "fr"),
    ({"page": "2"}, "page"),
])
def test_bad_parameters_get_a_400_page_that_says_what_was_wrong(client: TestClient, query: dict, words: str) -> None:
    r = client.get("/today", params={"lang": "en", **query} if "lang" not in query else query)
    assert r.status_code == 400
    assert "Traceback" not in r.text and "<h1>400" in r.text
    assert words in re.search(r'id="error-detail"><strong>(.*?)</strong>', r.text).group(1)


def test_more_bad_parameters(client: TestClient) -> None:
    for path, params in (("/arrivals", {"from": "2026-13"}), ("/arrivals", {"from": "2020-01", "to": "2026-01"}),
                         ("/arrivals", {"from": "2026-05", "to": "2026-01"}), ("/seasonal", {"years": "99"}),
                         ("/data/hourly", {"format": "xml"}), ("/data/secret", {}),
                         ("/satisfaction", {"to": "2999-01"})):
        r = client.get(path, params=params)
        assert r.status_code == 400, (path, params)
        assert "error-detail" in r.text and "Traceback" not in r.text


def test_unknown_page_is_a_404_page_in_the_asked_language(client: TestClient) -> None:
    r = client.get("/admin", params={"lang": "en"})
    assert r.status_code == 404 and "Page not found" in r.text
    assert client.get("/staffing").status_code == 404  # the public site has no auditor route


def test_a_store_that_is_down_gets_a_503_page(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    missing = TestClient(create_app(lambda: open_event_store(tmp_path / "nowhere")), raise_server_exceptions=False)
    caplog.set_level(logging.CRITICAL)
    for path in ("/", "/today", "/data/hourly"):
        r = missing.get(path)
        assert r.status_code == 503 and "<h1>503" in r.text and "Traceback" not in r.text


def test_a_store_that_fails_after_opening_gets_a_503_page(tmp_path: Path) -> None:
    load_year(str(tmp_path), decisions=2000, days=20)
    store = open_event_store(tmp_path)
    c = TestClient(create_app(lambda: store), raise_server_exceptions=False)
    assert c.get("/").status_code == 200
    store.close()  # the database goes away under a running portal
    assert c.get("/today").status_code == 503


def test_the_portal_reopens_a_store_that_comes_back(tmp_path: Path) -> None:
    load_year(str(tmp_path), decisions=2000, days=40)
    opened = []

    def opener():
        opened.append(open_event_store(tmp_path))
        return opened[-1]

    c = TestClient(create_app(opener), raise_server_exceptions=False)
    first = c.get("/data/arrivals_nationality", params={"format": "json"}).json()["records"]
    opened[-1].close()
    assert c.get("/").status_code == 503
    assert c.get("/").status_code == 200 and len(opened) == 2
    again = c.get("/data/arrivals_nationality", params={"format": "json"}).json()["records"]
    assert first and again == first  # the releases survived the reopened store: no fresh noise


def test_postgresql_register_as_the_store() -> None:
    with fresh_database("portal_test") as url:
        load_year(url, decisions=5000, days=60)
        c = TestClient(create_app(lambda: open_event_store(url)), raise_server_exceptions=False)
        for path in PAGES:
            assert c.get(path, params={"lang": "en"}).status_code == 200, path
        assert len(c.get("/data/seasonal", params={"format": "json"}).json()["records"]) > 0
        c.app.state.portal.holder.figures().store.close()


def _set_schema_version(where: str | Path, version: int) -> None:
    if str(where).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(where), autocommit=True) as admin:
            admin.execute("UPDATE meta SET value = %s WHERE name = 'schema_version'", (str(version),))
        return
    import sqlite3

    db = sqlite3.connect(Path(where) / "checkpoint.db")
    db.execute(f"PRAGMA user_version = {version}")
    db.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_store_at_another_schema_version_is_not_read(tmp_path: Path, kind: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A portal never reads a store under another layout: one not yet migrated to its version (a portal upgraded
    before its station: v5 re-keyed months from UTC to local time), or migrated past it while the portal
    runs (an older portal), is a 503 page that says nothing of the figures, and it is read again once they
    match."""
    from biometrics.event_store import StoreSchemaMismatch
    from biometrics.register import SCHEMA_VERSION as REGISTER_VERSION
    from biometrics.storage import SCHEMA_VERSION as FILE_VERSION

    caplog.set_level(logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        where: str | Path = tmp_path
        version = FILE_VERSION
        if kind == "postgresql":
            where, version = stack.enter_context(fresh_database("portal_schema")), REGISTER_VERSION
        load_year(str(where), decisions=2000, days=20)
        _set_schema_version(where, version - 1)
        with pytest.raises(StoreSchemaMismatch, match=f"schema version {version - 1}.*start the upgraded"):
            open_event_store(where)
        opened: list = []

        def opener():
            opened.append(open_event_store(where))
            return opened[-1]

        c = TestClient(create_app(opener), raise_server_exceptions=False)
        r = c.get("/")
        assert r.status_code == 503 and "Traceback" not in r.text and not opened
        _set_schema_version(where, version)  # the station started under this version: migrated
        assert c.get("/").status_code == 200
        _set_schema_version(where, version + 1)  # migrated past this portal while it runs
        assert c.get("/data/hourly", params={"format": "json"}).status_code == 503
        assert c.get("/today").status_code == 503
        with pytest.raises(StoreSchemaMismatch, match="newer than the version"):
            open_event_store(where)
        for store in opened:
            store.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    subprocess.run([sys.executable, "-m", "verify.certs", "init", str(d)], check=True, capture_output=True)
    return d


def _tls_get(url: str, certs: Path, role: str | None) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(certs / "server" / "ca.pem"))
    if role:
        ctx.load_cert_chain(str(certs / role / "client.pem"), str(certs / role / "client.key"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.server
def test_auditor_view_over_mutual_tls_only_for_the_auditor_role(store_dir: Path, certs: Path) -> None:
    port, aport = free_port(), free_port()
    with portal_process(str(store_dir), port, ["--auditor-listen", f"127.0.0.1:{aport}",
                                                "--auditor-tls-dir", str(certs / "server")]):
        base = f"https://127.0.0.1:{aport}"
        status, html = _tls_get(base + "/staffing?lang=en", certs, "auditor")
        assert status == 200 and "Erlang C" in html and '<table id="staffing">' in html
        assert "AUDITOR VIEW" in html
        for role in ("kiosk", "officer"):
            status, html = _tls_get(base + "/staffing?lang=en", certs, role)
            assert status == 403 and "auditor" in html
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _tls_get(base + "/", certs, None)  # no client certificate: the handshake fails
        # the auditors see the small counts the public sees as <10
        status, audit = _tls_get(base + "/data/hourly?format=json", certs, "auditor")
        public = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/data/hourly?format=json").read())
        audit_doc = json.loads(audit)
        assert all(isinstance(r["total"], int) for r in audit_doc["records"])
        hidden = [r for r in public["records"] if HIDDEN in (r["total"], r["arrivals"])]
        assert len(public["records"]) == len(audit_doc["records"])
        if hidden:
            assert any(isinstance(a["arrivals"], int) for a in audit_doc["records"])


def test_staffing_plan_from_the_store(store_dir: Path) -> None:
    figures = Figures(open_event_store(store_dir))
    day = figures.current_day()
    busiest = max(figures.store.stations(),
                  key=lambda s: sum(h.total.value for h in figures.today(s, day, public=False).hours))
    plans = figures.staffing(busiest, day)
    assert len(plans) == 24
    for p in plans:
        if p.arrivals:
            assert p.lanes_needed >= 1 and p.service_s and p.service_s > figures.config.handling_s
        else:
            assert p.verdict == "idle"
    assert date.today() - timedelta(days=2) <= day <= date.today() + timedelta(days=1)


def test_svg_charts_label_themselves_and_leave_gaps_for_hidden_values() -> None:
    from portal.charts import bar_chart, line_chart, nice_max

    assert [nice_max(v) for v in (0, 3, 7, 11, 240, 2600)] == [1, 5, 10, 20, 250, 5000]
    bars = str(bar_chart("c1", "Arrivals <by hour>", "desc", ["09", "10", "11"], [("A&B", [5, None, 12])], "n"))
    assert 'aria-labelledby="c1-title c1-desc"' in bars and "<title id=\"c1-title\">Arrivals &lt;by hour&gt;" in bars
    assert bars.count("<rect") == 3  # two bars (None is a gap, not a zero bar) and one legend swatch
    assert "A&amp;B, 09: 5" in bars and "A&amp;B, 11: 12" in bars and ", 10:" not in bars
    ticks = re.findall(r'text-anchor="end">([^<]+)</text>', str(bar_chart("c3", "t", "d", ["a"], [("s", [5])], "n")))
    assert ticks == ["0", "1.25", "2.5", "3.75", "5"]  # a tick is labelled with its own value, not a rounded one
    line = str(line_chart("c2", "t", "d", ["a", "b", "c", "d"], [("s", [1.0, 2.0, None, 4.0])], "ms"))
    assert line.count("<polyline") == 1  # the None breaks the line: one run of two points, one lone point
    assert line.count("<circle") == 3


def test_seasonal_pattern_starts_at_the_first_recorded_month(client: TestClient) -> None:
    records = client.get("/data/seasonal", params={"format": "json", "years": "4"}).json()["records"]
    assert records and records[0]["arrivals"] != 0  # months before the data are "no record", not zero arrivals
    html = client.get("/seasonal", params={"lang": "en", "years": "4"}).text
    assert "<td class=\"num\">0</td>" not in re.search(r'<table id="seasonal">.*?</table>', html, re.S).group(0)


def test_the_overview_and_a_day_page_read_one_protected_table(store_dir: Path) -> None:
    figures = Figures(open_event_store(store_dir))
    day = figures.last_released_day()
    overview = figures.overview(day)
    for row in overview.stations:
        page = figures.today(row.station, day)
        assert row.counts == page.totals and row.total == page.grand  # the same entries, hidden alike


def test_the_default_period_ends_with_the_last_month_published_whole(client: TestClient) -> None:
    for path, table in (("/arrivals", "arrivals-port"), ("/satisfaction", "satisfaction")):
        body = re.search(rf'<table id="{table}">.*?<tbody>(.*?)</tbody>', client.get(path, params={"lang": "en"}).text,
                         re.S).group(1)
        rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
        assert len(rows) == 12 and "\u00b7" not in rows[-1], path  # no month still waiting for its release
