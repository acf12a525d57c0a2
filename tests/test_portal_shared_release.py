"""Two portals on one store, each with its own state directory, publish the same release of every period.

The first portal to release a period records it in the store (``portal_releases``, insert-once) and every
portal publishes that record: the second portal, started after a late shipment, publishes the first one's
figures (not a table rebuilt from more data), and its nationality counts are the first one's draw (not new
noise to average). Over SQLite (a station's data directory, opened read-only) and the PostgreSQL register.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pg import fresh_database
from starlette.testclient import TestClient

from biometrics.event_store import open_event_store
from biometrics.events import DecisionEvent
from portal.app import create_app
from portal.figures import PortalConfig

START = datetime(2026, 3, 1, 3, tzinfo=UTC)  # 10:00 WIB on 1 March
NOW = datetime(2026, 4, 5, tzinfo=UTC)  # March and its days released (grace 24 h)
NATIONALITIES = ("AUS", "USA", "BRA", "JPN", "DEU", "GBR", "FRA", "NLD")


def _arrivals(store: str, days: range, n: int, station: str = "rokot-airport") -> None:
    """``n`` arrivals at 10:00 WIB on each day of March in ``days`` (0-based), nationalities in turn."""
    writer = open_event_store(store, readonly=False)
    try:
        writer.record_decisions([
            DecisionEvent(START + timedelta(days=d, minutes=i), station, "k1", "arrival", "foreign", "proceed",
                          600.0, "high", "m", "c", nationality=NATIONALITIES[i % len(NATIONALITIES)])
            for d in days for i in range(n)])
    finally:
        writer.close()


def _publish(store: str, state: Path) -> dict[str, bytes]:
    """Every figure of March a public portal on ``store`` with ``state`` publishes, and its state files."""
    app = create_app(lambda: open_event_store(store), PortalConfig(state_dir=state), clock=lambda: NOW)
    month = {"from": "2026-03", "to": "2026-03", "format": "json"}
    out = {}
    with TestClient(app, raise_server_exceptions=False) as c:
        for day in (1, 2, 15):
            out[f"hourly {day}"] = c.get("/data/hourly", params={"station": "siberut-port", "format": "json",
                                                                 "date": f"2026-03-{day:02d}"}).json()["records"]
        for dataset in ("arrivals_port", "arrivals_nationality", "satisfaction"):
            out[dataset] = c.get(f"/data/{dataset}", params=month).json()["records"]
    app.state.portal.holder.figures().store.close()
    files = {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*.json"))
             if p.name != "store.json"}
    return {"published": repr(out).encode(), **files}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "store")
    else:
        with fresh_database("portal_shared") as url:
            yield url


def test_two_state_directories_publish_byte_identical_releases_despite_late_data(store: str, tmp_path: Path
                                                                                 ) -> None:
    _arrivals(store, range(31), 30)  # Rokot: 30 a day, eight nationalities
    _arrivals(store, range(31), 3, station="siberut-port")  # Siberut: 3 a day, hidden
    first = _publish(store, tmp_path / "a")
    _arrivals(store, range(31), 40, station="siberut-port")  # a late shipment: Siberut's 43 a day would be shown
    second = _publish(store, tmp_path / "b")
    assert second == first
    assert "tables/2026-03.json" in first and "nationality/2026-03.json" in first
    assert b"'arrivals': '[c]'" in first["published"]  # Siberut's day as it was released (hidden 3)


def test_a_portal_whose_role_may_only_read_the_register_still_publishes(tmp_path: Path) -> None:
    """A portal role granted SELECT only (as the portal was read-only before it recorded releases): it cannot
    create or write ``portal_releases``, and publishes its own releases (kept in its state directory) instead of
    answering 503 on every page."""
    import os

    import psycopg

    role = f"portal_reader_{os.getpid()}"
    with fresh_database("portal_readonly") as url:
        _arrivals(url, range(31), 30)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")
            admin.execute(f"CREATE ROLE {role} LOGIN")
            admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        try:
            reader = url.replace("postgresql://postgres@", f"postgresql://{role}@")
            assert reader != url
            app = create_app(lambda: open_event_store(reader), PortalConfig(state_dir=tmp_path / "s"),
                             clock=lambda: NOW)
            with TestClient(app, raise_server_exceptions=False) as c:
                for page in ("/", "/today", "/arrivals"):
                    assert c.get(page).status_code == 200, page
                records = c.get("/data/arrivals_port", params={"from": "2026-03", "to": "2026-03",
                                                               "format": "json"}).json()["records"]
            app.state.portal.holder.figures().store.close()
            assert records and (tmp_path / "s" / "tables" / "2026-03.json").exists()
        finally:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f"DROP OWNED BY {role}")
            with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
                admin.execute(f"DROP ROLE {role}")


def _forget_releases(store: str) -> None:
    """The store loses its release records (a register restored from a backup taken before they were made)."""
    if store.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store, autocommit=True) as admin:
            admin.execute("DELETE FROM portal_releases")
        return
    import sqlite3

    from biometrics.event_store import store_file

    db = sqlite3.connect(store_file(Path(store)))
    db.execute("DELETE FROM portal_releases")
    db.commit()
    db.close()


def test_a_store_restored_without_its_release_records_gets_them_back_from_the_portal_that_published_them(
        store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The first portal wrote March's releases to its state directory and the store; the store is restored from a
    backup without them, and more March data arrives. When the first portal reads its releases again (a restart)
    it records them back in the store, so a second portal publishes the first one's figures and draw, not a
    release of its own (new noise beside the published one, another suppression pattern)."""
    import logging

    _arrivals(store, range(31), 30)
    _arrivals(store, range(31), 3, station="siberut-port")
    first = _publish(store, tmp_path / "a")
    _forget_releases(store)
    _arrivals(store, range(31), 40, station="siberut-port")
    caplog.set_level(logging.WARNING, logger="portal")
    assert _publish(store, tmp_path / "a") == first  # restarted on its state directory: written back
    assert _publish(store, tmp_path / "b") == first  # the second portal publishes what the store now records
    assert not [r for r in caplog.records if "records other releases" in r.getMessage()
                or "records another release" in r.getMessage()]


def test_a_portal_whose_releases_the_store_records_otherwise_keeps_its_own_and_says_so(
        store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Restored without its records, the store got a second portal's releases of March before the first portal
    came back: the first keeps publishing what it published, and says that the two disagree."""
    import logging

    _arrivals(store, range(31), 30)
    _arrivals(store, range(31), 3, station="siberut-port")
    first = _publish(store, tmp_path / "a")
    _forget_releases(store)
    _arrivals(store, range(31), 40, station="siberut-port")
    second = _publish(store, tmp_path / "b")
    assert second["published"] != first["published"]  # released anew from the late data
    caplog.set_level(logging.WARNING, logger="portal")
    assert _publish(store, tmp_path / "a") == first
    said = [r.getMessage() for r in caplog.records if "records other releases" in r.getMessage()
            or "records another release" in r.getMessage()]
    assert said and any("day/2026-03-" in m for m in said) and any("nationality/2026-03" in m for m in said)
