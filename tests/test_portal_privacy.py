"""Nothing the portal serves names anyone: a station with enrolled subjects, their decisions, then every page.

Subjects are enrolled and verified through a real ``checkpoint-server``; the station's store then holds their
sealed records, pseudonymous references and audit trail beside the decision events the service recorded
for their verifications (with their documents' nationalities) and their ratings, and SYNTHETIC traffic
around them written through the event store. The portal, public site and auditors' view, is then asked for
every page in both languages and every download in both formats, and the server for its Prometheus
metrics: no enrolled name, document number or pseudonym may appear in any of it, and a nationality seen
only a few times must not be published.
"""

from __future__ import annotations

import sqlite3
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face_sample

from benchmarks.portal_bench import free_port, portal_process
from benchmarks.traffic import TrafficModel, default_start, write_traffic
from biometrics.event_store import open_event_store
from portal.opendata import DATASETS

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


def everything(base: str, stations: list[str], context: ssl.SSLContext | None = None, auditor: bool = False
               ) -> str:
    """The text of every page and download the portal serves (per station where a page takes one)."""
    texts = []
    for lang in ("id", "en"):
        for path in PAGES:
            texts.append(_get(f"{base}{path}?lang={lang}", context))
        for station in stations:
            for path in ("/today", "/arrivals", "/seasonal", "/satisfaction", *(("/staffing",) if auditor else ())):
                texts.append(_get(f"{base}{path}?lang={lang}&station={station}", context))
    for dataset in DATASETS:
        for fmt in ("csv", "json"):
            texts.append(_get(f"{base}/data/{dataset}?format={fmt}", context))
            for station in stations:
                if dataset != "arrivals_port":
                    texts.append(_get(f"{base}/data/{dataset}?format={fmt}&station={station}", context))
    return "\n".join(texts)


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

    writer = open_event_store(data_dir, readonly=False)
    try:  # SYNTHETIC traffic around them, so that the pages have something to publish
        write_traffic(writer, TrafficModel(default_start(60), 60, 8000, seed=3))
        stations = writer.stations()
    finally:
        writer.close()

    certs = tmp_path / "certs"
    subprocess.run([sys.executable, "-m", "verify.certs", "init", str(certs)], check=True, capture_output=True)
    context = ssl.create_default_context(cafile=str(certs / "server" / "ca.pem"))
    context.load_cert_chain(str(certs / "auditor" / "client.pem"), str(certs / "auditor" / "client.key"))
    port, aport = free_port(), free_port()
    with portal_process(str(data_dir), port, ["--auditor-listen", f"127.0.0.1:{aport}",
                                               "--auditor-tls-dir", str(certs / "server")]):
        public = everything(f"http://127.0.0.1:{port}", stations)
        audit = everything(f"https://127.0.0.1:{aport}", stations, context, auditor=True)

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
    # two arrivals from Ghana this month: the auditors see them, the public site publishes no such nationality
    assert "GHA" in audit
    assert "GHA" not in public
