"""Nothing the portal serves names anyone: a station with enrolled subjects, their decisions, then every page.

Subjects are enrolled and verified through a real ``checkpoint-server``; the station's store then holds their
sealed records, pseudonymous references and audit trail beside the decision events the service recorded
for their verifications (with their documents' nationalities) and their ratings, and SYNTHETIC traffic
around them written through the event store. The portal, public site and auditors' view, is then asked for
every page in both languages and every download in both formats, and the server for its Prometheus
metrics: no enrolled name, document number or pseudonym may appear in any of it, and a nationality seen
only a few times must not be published. That last check is made where the public site does publish
nationalities, in a released month (two SYNTHETIC arrivals from Ghana written there; the server's own are in
the current month, which the public site never publishes at all), and it is shown not to be vacuous: the same
store read with the nationality release's protection switched off (exact counts) does publish "GHA".
"""

from __future__ import annotations

import sqlite3
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face_sample

from benchmarks.portal_bench import free_port, portal_process
from benchmarks.traffic import TrafficModel, default_start, write_traffic
from biometrics.event_store import open_event_store
from biometrics.events import DecisionEvent
from portal import disclosure
from portal.opendata import DATASETS
from portal.periods import Schedule

pytestmark = [pytest.mark.server, pytest.mark.slow]

SUBJECTS = (
    ("A7310042", "Megawati Sukarnoputri", "IDN", "Megawati_Sukarnoputri_0001.jpg", "Megawati_Sukarnoputri_0002.jpg"),
    ("G5550123", "Kofi Annan", "GHA", "Kofi_Annan_0001.jpg", "Kofi_Annan_0002.jpg"),
    ("S8880999", "Hans Blix", "SWE", "Hans_Blix_0001.jpg", "Hans_Blix_0001.jpg"),
)
PAGES = ("/", "/today", "/arrivals", "/seasonal", "/satisfaction", "/method", "/data", "/data/dictionary.json")


def _get(url: str, context: ssl.SSLContext | None = None) -> str:
    try:
        with urllib.request.urlopen(url, context=context, timeout=30) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()


def over_http(base: str, context: ssl.SSLContext | None = None) -> Callable[[str], str]:
    """A fetch of a path (with its query) from the portal at ``base``."""
    return lambda path: _get(f"{base}{path}", context)


def everything(get: Callable[[str], str], stations: list[str], auditor: bool = False) -> str:
    """The text of every page and download the portal serves (per station where a page takes one)."""
    texts = []
    for lang in ("id", "en"):
        for path in PAGES:
            texts.append(get(f"{path}?lang={lang}"))
        for station in stations:
            for path in ("/today", "/arrivals", "/seasonal", "/satisfaction", *(("/staffing",) if auditor else ())):
                texts.append(get(f"{path}?lang={lang}&station={station}"))
    for dataset in DATASETS:
        for fmt in ("csv", "json"):
            texts.append(get(f"/data/{dataset}?format={fmt}"))
            for station in stations:
                if dataset != "arrivals_port":
                    texts.append(get(f"/data/{dataset}?format={fmt}&station={station}"))
    return "\n".join(texts)


def synthetic_traffic(store: Path) -> list[str]:
    """SYNTHETIC traffic around the subjects' decisions, so that the pages have something to publish, and two
    SYNTHETIC arrivals from Ghana on the 10th of the last month the public site publishes; the stations.

    The server's arrivals from Ghana are in the current month, which the public site never publishes (its
    nationalities are released only for months released whole): only these two, in a released month, are
    kept off the public site by the nationality release's protection alone.
    """
    released = Schedule().last_released_month(datetime.now(UTC))
    ghana = datetime(released.year, released.month, 10, 3, tzinfo=UTC)
    writer = open_event_store(store, readonly=False)
    try:
        write_traffic(writer, TrafficModel(default_start(60), 60, 8000, seed=3))
        for i in range(2):
            writer.record_decision(DecisionEvent(ghana + timedelta(minutes=7 * i), "tuapejat-port", "a-kiosk-1",
                                                 "arrival", "foreign", "proceed", 600.0, "high", "m", "c",
                                                 nationality="GHA"))
        return writer.stations()
    finally:
        writer.close()


def _exact(self: disclosure.NationalityRelease, month: date, counts: Mapping[tuple[str, str], int]
           ) -> disclosure.MonthRelease:
    """The nationality release with its protection switched off: every count published exactly."""
    return disclosure.MonthRelease(month, self.parameters(), {k: c for k, c in counts.items() if c > 0},
                                   frozenset(), disclosure.now_text())


def test_no_enrolled_name_document_number_or_pseudonym_is_served(tmp_path: Path) -> None:
    data_dir = tmp_path / "station"
    metrics_port = free_port()
    server = ServerProcess(data_dir, args=("--station", "tuapejat-port", "--metrics-listen",
                                           f"127.0.0.1:{metrics_port}")).start()
    try:
        stub = server.stub()
        rated = 0
        for subject_id, name, nationality, enrol_image, probe_image in SUBJECTS:
            info = pb.SubjectInfo(name=name, nationality=nationality, date_of_birth="1960-01-23")
            r = stub.Enroll(pb.EnrollRequest(subject_id=subject_id, info=info, samples=[face_sample(enrol_image)]))
            assert r.enrolled, r
            for _ in range(2):
                v = stub.Verify(pb.VerifyRequest(subject_id=subject_id, samples=[face_sample(probe_image)],
                                                 document_nationality=nationality))
                assert v.feedback_id  # the service recorded the decision event
                stub.RateDecision(pb.RateDecisionRequest(feedback_id=v.feedback_id, rating=4))
                rated += 1
        metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")  # the operators' metrics, too
    finally:
        server.stop()
    assert "grpc_server_handled_total" in metrics

    db = sqlite3.connect(data_dir / "checkpoint.db")
    pseudonyms = [r[0] for r in db.execute("SELECT ref FROM subjects")]
    events = db.execute("SELECT COUNT(*) FROM decision_events WHERE station = 'tuapejat-port'").fetchone()[0]
    db.close()
    assert len(pseudonyms) == len(SUBJECTS)
    assert events >= 2 * len(SUBJECTS)

    stations = synthetic_traffic(data_dir)

    certs = tmp_path / "certs"
    subprocess.run([sys.executable, "-m", "verify.certs", "init", str(certs)], check=True, capture_output=True)
    context = ssl.create_default_context(cafile=str(certs / "server" / "ca.pem"))
    context.load_cert_chain(str(certs / "auditor" / "client.pem"), str(certs / "auditor" / "client.key"))
    port, aport = free_port(), free_port()
    with portal_process(str(data_dir), port, ["--auditor-listen", f"127.0.0.1:{aport}",
                                               "--auditor-tls-dir", str(certs / "server")]):
        public = everything(over_http(f"http://127.0.0.1:{port}"), stations)
        audit = everything(over_http(f"https://127.0.0.1:{aport}", context), stations, auditor=True)

    assert "tuapejat-port" in public and "Erlang C" in audit  # the fetches did reach the pages
    assert "GHA" not in metrics and "SWE" not in metrics  # metrics are labelled by station and outcome only
    for served, who in ((public, "public site"), (audit, "auditors' view"), (metrics, "metrics")):
        lowered = served.lower()
        for subject_id, name, _nat, _e, _p in SUBJECTS:
            assert subject_id.lower() not in lowered, f"document number {subject_id} on the {who}"
            for part in name.split():
                assert part.lower() not in lowered, f"name {name} on the {who}"
        for ref in pseudonyms:
            assert ref.lower() not in lowered, f"pseudonym {ref} on the {who}"
        assert "1960-01-23" not in served
    # two arrivals from Ghana in a released month (and two this month): the auditors see them, the public site
    # publishes no such nationality
    assert "GHA" in audit
    assert "GHA" not in public
    assert "AUS" in public  # nationalities are published (the released month's large counts)


def test_the_small_nationality_check_is_not_vacuous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store shape of the test above, read with the nationality release's protection switched off: the public
    site then publishes "GHA", so its absence above is the protection's doing, not the calendar's."""
    from starlette.testclient import TestClient

    from portal.app import create_app

    stations = synthetic_traffic(tmp_path)
    monkeypatch.setattr(disclosure.NationalityRelease, "_draw", _exact)
    c = TestClient(create_app(lambda: open_event_store(tmp_path)), raise_server_exceptions=False)
    assert "GHA" in everything(lambda path: c.get(path).text, stations)
