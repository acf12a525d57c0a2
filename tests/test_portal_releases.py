"""The nationality releases are written once to the portal's state directory and never drawn again.

A restart of the portal (a new app over the same state directory) publishes the same values; a new month
is released once; several processes on one directory publish one release; a release made with other
parameters is kept as published and said so on the method page; an unwritable state directory stops the
portal at start with a message.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from test_portal import load_year

from biometrics.event_store import open_event_store
from biometrics.events import DecisionEvent
from portal.app import create_app
from portal.disclosure import NationalityRelease, ReleasePolicy
from portal.figures import PortalConfig
from portal.releases import ReleaseLog, StateDirError

MAY, JUNE = date(2026, 5, 1), date(2026, 6, 1)
#: 30 (station, nationality) counts large enough to be released whatever the noise
COUNTS = {("tuapejat-port", f"N{k:02d}"): 200 + 7 * k for k in range(30)} | {("rokot-airport", "GHA"): 2}


def month_files(state: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((state / "nationality").glob("*.json"))}


def test_a_release_is_drawn_once_and_read_back_after_a_restart(tmp_path: Path) -> None:
    first = NationalityRelease(ReleasePolicy(), ReleaseLog(tmp_path)).release(MAY, COUNTS)
    restarted = NationalityRelease(ReleasePolicy(), ReleaseLog(tmp_path))
    assert restarted.cached_months() == [MAY]  # read at start
    assert restarted.release(MAY, COUNTS) == first
    # the noise is real: a portal with another state directory draws other values for the same counts
    assert NationalityRelease(ReleasePolicy(), ReleaseLog(tmp_path / "other")).release(MAY, COUNTS) != first
    record = json.loads((tmp_path / "nationality" / "2026-05.json").read_text())
    assert (record["month"], record["method"], record["epsilon"], record["delta"], record["threshold"]) == (
        "2026-05", "opendp", 1.0, 1e-6, 14)
    values = {(e["station"], e["nationality"]): e["value"] for e in record["entries"]}
    assert values[("rokot-airport", "GHA")] == "suppressed"  # two arrivals are never released at threshold 14
    assert {k: v for k, v in values.items() if v != "suppressed"} == first
    assert (tmp_path / "nationality" / "2026-05.json").stat().st_mode & 0o077 == 0


def test_a_new_month_is_released_once_and_earlier_months_are_not_rewritten(tmp_path: Path) -> None:
    NationalityRelease(ReleasePolicy(), ReleaseLog(tmp_path)).release(MAY, COUNTS)
    before = month_files(tmp_path)
    june = NationalityRelease(ReleasePolicy(), ReleaseLog(tmp_path)).release(JUNE, COUNTS)
    after = month_files(tmp_path)
    assert set(after) == {"2026-05.json", "2026-06.json"} and after["2026-05.json"] == before["2026-05.json"]
    # a third start, with other counts for June (late events): June stays as it was released
    later = {k: v + 50 for k, v in COUNTS.items()}
    assert NationalityRelease(ReleasePolicy(), ReleaseLog(tmp_path)).release(JUNE, later) == june
    assert month_files(tmp_path) == after
    # a month with nothing recorded yet is not kept: its arrivals, once loaded, are released then
    assert NationalityRelease(ReleasePolicy(), ReleaseLog(tmp_path)).release(date(2026, 7, 1), {}) == {}
    assert month_files(tmp_path) == after


def test_the_portal_publishes_the_same_values_after_a_restart(tmp_path: Path) -> None:
    store, state = tmp_path / "store", tmp_path / "state"
    load_year(str(store), decisions=2000, days=40)

    def fetch() -> list[dict]:
        app = create_app(lambda: open_event_store(store), PortalConfig(state_dir=state))
        with TestClient(app, raise_server_exceptions=False) as c:
            records = c.get("/data/arrivals_nationality", params={"format": "json"}).json()["records"]
            method = c.get("/method", params={"lang": "en"}).text
        app.state.portal.holder.figures().store.close()
        assert "kept in memory" not in method and "stored on the portal&#39;s disk" in method
        return records

    first = fetch()
    files = month_files(state)
    assert first and files  # completed months were released and written
    assert fetch() == first  # the restarted portal read them back: no new draw
    assert month_files(state) == files


def test_a_release_with_other_parameters_is_kept_and_said_so(tmp_path: Path) -> None:
    store, state = tmp_path / "store", tmp_path / "state"
    load_year(str(store), decisions=2000, days=40)
    apps = []
    for epsilon in (1.0, 0.5):
        app = create_app(lambda: open_event_store(store),
                         PortalConfig(release=ReleasePolicy(epsilon=epsilon), state_dir=state))
        apps.append(TestClient(app, raise_server_exceptions=False))
    first = apps[0].get("/data/arrivals_nationality", params={"format": "json"}).json()["records"]
    again = apps[1].get("/data/arrivals_nationality", params={"format": "json"}).json()["records"]
    assert first and again == first
    months = sorted({r["month"] for r in first})
    method = apps[1].get("/method", params={"lang": "en"}).text
    assert "released earlier with other parameters" in method and "epsilon 1.00" in method.replace("1,00", "1.00")
    assert all(m in method for m in months)
    assert "released earlier" not in apps[0].get("/method", params={"lang": "en"}).text
    for c in apps:
        c.app.state.portal.holder.figures().store.close()


def test_processes_on_one_state_directory_publish_one_release(tmp_path: Path) -> None:
    script = (
        "import json, sys; from datetime import date; from portal.disclosure import NationalityRelease;"
        "from portal.releases import ReleaseLog;"
        "counts = {('s', f'N{k}'): 300 for k in range(20)};"
        "r = NationalityRelease(log=ReleaseLog(sys.argv[1])).release(date(2026, 5, 1), counts);"
        "print(json.dumps(sorted((k[1], v) for k, v in r.items())))")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outputs)) == 1 and json.loads(outputs[0])
    assert list(month_files(tmp_path)) == ["2026-05.json"]


def test_an_unwritable_state_directory_stops_the_portal_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StateDirError, match="cannot write the state directory"):
        create_app(lambda: open_event_store(tmp_path), PortalConfig(state_dir=blocker / "state"))
    exe = Path(sys.executable).with_name("checkpoint-portal")
    r = subprocess.run([str(exe), "--store", str(tmp_path), "--listen", "127.0.0.1:0", "--state-dir",
                        str(blocker / "state")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert f"cannot write the state directory {blocker / 'state'}" in r.stderr and "--state-dir" in r.stderr


def test_a_state_directory_belongs_to_one_store(tmp_path: Path) -> None:
    ReleaseLog(tmp_path, store="/var/lib/checkpoint")
    ReleaseLog(tmp_path, store="/var/lib/checkpoint")  # the same store again: fine
    with pytest.raises(StateDirError, match="its own --state-dir"):
        ReleaseLog(tmp_path, store="postgresql://portal@register/checkpoint")


def _arrivals(store: Path, station: str, when: datetime, n: int) -> None:
    """``n`` arrivals at ``station`` in the hour of ``when`` (UTC)."""
    writer = open_event_store(store, readonly=False)
    try:
        writer.record_decisions([DecisionEvent(when + timedelta(minutes=i % 60), station, "k1", "arrival", "foreign",
                                               "proceed", 600.0, "high", "m", "c", nationality="AUS")
                                 for i in range(n)])
    finally:
        writer.close()


def test_a_released_day_is_published_as_released_whatever_arrives_later(tmp_path: Path) -> None:
    store, state = tmp_path / "store", tmp_path / "state"
    day = (datetime.now(UTC) + timedelta(hours=7)).date() - timedelta(days=5)
    ten_local = datetime(day.year, day.month, day.day, 3, tzinfo=UTC)  # 10:00 WIB
    _arrivals(store, "rokot-airport", ten_local, 40)
    _arrivals(store, "siberut-port", ten_local, 3)
    _arrivals(store, "tuapejat-port", ten_local, 20)  # the complement that hides Siberut's 3
    query = {"station": "rokot-airport", "date": day.isoformat(), "format": "json"}

    def fetch(state_dir: Path) -> list[dict]:
        app = create_app(lambda: open_event_store(store), PortalConfig(state_dir=state_dir))
        with TestClient(app, raise_server_exceptions=False) as c:
            records = c.get("/data/hourly", params=query).json()["records"]
        app.state.portal.holder.figures().store.close()
        return records

    first = fetch(state)
    assert first[10]["arrivals"] == 40
    record = json.loads((state / "tables" / f"{day:%Y-%m}.json").read_text())
    kept = record["days"][day.isoformat()]
    assert kept["stations"]["rokot-airport"]["cells"][10] == [40, 0]
    assert kept["stations"]["siberut-port"]["cells"][10][0] is None  # hidden: kept without its value
    assert (state / "tables" / f"{day:%Y-%m}.json").stat().st_mode & 0o077 == 0
    _arrivals(store, "rokot-airport", ten_local, 30)  # a station ships late, after the day's release
    assert fetch(state) == first  # a restart publishes the day as it was released
    # another state directory on the same store publishes the store's record of the day, not the 70 it holds now
    assert fetch(tmp_path / "elsewhere") == first


def test_a_day_in_its_grace_period_is_not_published(tmp_path: Path) -> None:
    store = tmp_path / "store"
    now = datetime.now(UTC)
    _arrivals(store, "rokot-airport", now - timedelta(hours=1), 12)
    c = TestClient(create_app(lambda: open_event_store(store)), raise_server_exceptions=False)
    today = (now + timedelta(hours=7)).date()
    for day in (today, today - timedelta(days=1)):  # with the default grace of 24 h, neither is released yet
        r = c.get("/today", params={"station": "rokot-airport", "date": day.isoformat(), "lang": "en"})
        assert r.status_code == 400 and day.isoformat() in r.text
    assert c.get("/today", params={"lang": "en"}).status_code == 200  # the last released day
    assert str(today - timedelta(days=2)) in c.get("/", params={"lang": "en"}).text
    assert c.get("/data/hourly", params={"date": today.isoformat()}).status_code == 400


def test_one_more_traveller_changes_nothing_published(tmp_path: Path) -> None:
    """The review's live differencing: a traveller seen at the desk, slow and unhappy, is not in any figure
    until the day (and the month, for the ratings) is released."""
    store = tmp_path / "store"
    writer = open_event_store(store, readonly=False)
    now = datetime.now(UTC)

    def rated(when: datetime, rating: int, ms: float) -> None:
        event_id = writer.record_decision(DecisionEvent(when, "rokot-airport", "k1", "arrival", "foreign", "proceed",
                                                        ms, "high", "m", "c", nationality="AUS"))
        writer.record_feedback(event_id, rating, at=when)

    for rating, n in enumerate((12, 15, 20, 30), 1):
        for i in range(n):
            rated(now - timedelta(hours=1, minutes=i), rating, 600.0)
    c = TestClient(create_app(lambda: open_event_store(store)), raise_server_exceptions=False)
    month = f"{(now + timedelta(hours=7)):%Y-%m}"

    def snapshot() -> tuple[str, ...]:
        pages = [c.get(path, params={"lang": "en", **params}).text for path, params in (
            ("/satisfaction", {"station": "rokot-airport", "from": month, "to": month}),
            ("/today", {"station": "rokot-airport"}), ("/", {}))]
        pages = [re.sub(r'<p id="last-update">.*?</p>', "", p, flags=re.S) for p in pages]
        hourly = c.get("/data/hourly", params={"station": "rokot-airport", "format": "json"}).json()["records"]
        return (*pages, json.dumps(hourly))

    before = snapshot()
    rated(now, 1, 4200.0)
    writer.close()
    assert snapshot() == before


def test_the_last_update_is_the_last_release_not_the_last_traveller(tmp_path: Path) -> None:
    store = tmp_path / "store"
    now = datetime.now(UTC)
    _arrivals(store, "rokot-airport", now - timedelta(days=4), 30)
    c = TestClient(create_app(lambda: open_event_store(store)), raise_server_exceptions=False)

    def seen() -> tuple[str, str]:
        meta = c.get("/data/hourly", params={"format": "json"}).json()["meta"]["last_update"]
        footer = re.search(r'<p id="last-update">(.*?)</p>', c.get("/", params={"lang": "en"}).text, re.S)
        return meta, footer.group(1)

    before = seen()
    time.sleep(1.1)
    _arrivals(store, "rokot-airport", datetime.now(UTC), 1)  # one traveller, seen at the desk
    assert seen() == before
    released = datetime.fromisoformat(before[0])
    local = released + timedelta(hours=7)
    assert (local.hour, local.minute, local.second) == (0, 0, 0)  # the grace period (24 h) after a local midnight
    assert "00:00 WIB" in before[1]


def test_p95_needs_twenty_decisions_and_lanes_go_with_the_hours_count(tmp_path: Path) -> None:
    store = tmp_path / "store"
    day = (datetime.now(UTC) + timedelta(hours=7)).date() - timedelta(days=5)
    at = datetime(day.year, day.month, day.day, 3, tzinfo=UTC)  # 10:00 WIB
    _arrivals(store, "rokot-airport", at, 15)  # 15 decisions at 10:00: p95 would be the slowest one's
    _arrivals(store, "rokot-airport", at + timedelta(hours=1), 25)  # 25 at 11:00: p95 published
    _arrivals(store, "rokot-airport", at + timedelta(hours=2), 3)  # 3 at 12:00: hidden, and so are its lanes
    _arrivals(store, "rokot-airport", at + timedelta(hours=3), 12)  # its complement
    c = TestClient(create_app(lambda: open_event_store(store)), raise_server_exceptions=False)
    records = c.get("/data/hourly", params={"station": "rokot-airport", "date": day.isoformat(),
                                            "format": "json"}).json()["records"]
    ten, eleven, noon = records[10], records[11], records[12]
    assert ten["total"] == 15 and ten["p50_ms"] is not None and ten["p90_ms"] is not None
    assert ten["p95_ms"] is None
    assert eleven["total"] == 25 and eleven["p95_ms"] is not None
    assert noon["total"] == "[c]" and noon["lanes_open"] is None
    assert ten["lanes_open"] == 1


def test_lanes_go_only_with_an_hour_whose_every_count_is_shown(tmp_path: Path) -> None:
    """Lanes are counted per direction: beside hidden direction counts they would bound them (the review's case:
    one lane at 08:00 and 09:00 said which direction had nobody, and so 10:00's hidden 5 and 6 were recovered)."""
    store = tmp_path / "store"
    day = (datetime.now(UTC) + timedelta(hours=7)).date() - timedelta(days=5)
    at = datetime(day.year, day.month, day.day, 1, tzinfo=UTC)  # 08:00 WIB
    writer = open_event_store(store, readonly=False)
    try:
        def events(hour: int, direction: str, n: int, lane: str) -> list[DecisionEvent]:
            return [DecisionEvent(at + timedelta(hours=hour, minutes=i), "siberut-port", lane, direction, "foreign",
                                  "proceed", 600.0, "high", "m", "c", nationality="AUS") for i in range(n)]
        writer.record_decisions(events(0, "arrival", 12, "k1") + events(1, "departure", 20, "k1")
                                + events(2, "arrival", 5, "k1") + events(2, "departure", 6, "k2"))
    finally:
        writer.close()
    c = TestClient(create_app(lambda: open_event_store(store)), raise_server_exceptions=False)
    records = c.get("/data/hourly", params={"station": "siberut-port", "date": day.isoformat(),
                                            "format": "json"}).json()["records"]
    for r in records[8:11]:
        hidden = "[c]" in (r["arrivals"], r["departures"], r["total"])
        assert (r["lanes_open"] is None) == hidden, r
    assert records[10]["arrivals"] == "[c]" and records[10]["lanes_open"] is None


def test_round5_is_refused_without_a_demonstration_banner(tmp_path: Path) -> None:
    from portal.cli import build_parser, config_from

    base = ["--store", str(tmp_path / "store"), "--state-dir", str(tmp_path / "state"), "--release-method", "round5"]
    with pytest.raises(ValueError, match="demonstrations only"):
        config_from(build_parser().parse_args(base))
    assert config_from(build_parser().parse_args([*base, "--banner", "SYNTHETIC DATA"])).release.method == "round5"


def test_a_malformed_register_url_stops_the_portal_and_no_password_is_printed(tmp_path: Path) -> None:
    """A review: the portal printed --store whole at every start, and a malformed URL's error (the driver's own,
    quoting the URI) at WARNING on every page; the server and the audit tool repeated it too."""
    from biometrics.register import StoreRefused, check_url

    malformed = "postgres://portal:s3cretpw@[::1:5432/checkpoint"
    with pytest.raises(StoreRefused) as refused:
        check_url(malformed)
    assert "s3cretpw" not in str(refused.value) and "is not a valid PostgreSQL URL" in str(refused.value)
    exe = Path(sys.executable).with_name("checkpoint-portal")
    r = subprocess.run([str(exe), "--store", malformed, "--listen", "127.0.0.1:0", "--state-dir",
                        str(tmp_path / "state")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "is not a valid PostgreSQL URL" in r.stderr
    assert "s3cretpw" not in r.stdout + r.stderr
    server = subprocess.run([sys.executable, "-m", "verify.server", "--plaintext", "--listen", "127.0.0.1:0",
                             "--data-dir", str(tmp_path / "data"), "--key-dir", str(tmp_path / "keys"),
                             "--store", malformed, "--station", "rokot-airport"],
                            capture_output=True, text=True, timeout=120)
    assert server.returncode == 2 and "is not a valid PostgreSQL URL" in server.stderr
    assert "s3cretpw" not in server.stdout + server.stderr


def test_the_portal_names_its_register_without_the_password(tmp_path: Path) -> None:
    from portal.cli import store_identity

    assert store_identity("postgresql://portal:s3cretpw@db.example:5432/checkpoint") == \
        "postgresql://portal@db.example:5432/checkpoint"
    assert store_identity("postgresql://portal@db.example/checkpoint?password=s3cretpw&sslmode=require") == \
        "postgresql://portal@db.example/checkpoint?sslmode=require"


@pytest.mark.parametrize("password", ["s3cr%zzpw", "my secret", "p@ss%zz"])
def test_a_malformed_url_never_shows_its_password_as_the_driver_quotes_it(password: str) -> None:
    """A review: the driver's error quotes the bad token alone (a percent sign, a space), which URL masking did
    not see."""
    from biometrics.register import StoreRefused, check_url

    with pytest.raises(StoreRefused) as refused:
        check_url(f"postgresql://app:{password}@[::1/checkpoint")
    assert password not in str(refused.value) and "is not a valid PostgreSQL URL" in str(refused.value)
