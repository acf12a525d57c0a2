"""Operator metrics (verify.metrics): counters scraped over HTTP move by exactly the calls made, and the scrape
names nobody.

The first tests run a real gRPC server in this process, built by ``verify.server.build_server`` with the metrics
interceptor first in its list (as ``checkpoint-server --metrics-listen`` does), and scrape ``/metrics`` over
HTTP; the last one starts ``checkpoint-server --metrics-listen`` as a process, with mutual TLS.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import ServerProcess, face, face_sample
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until

from biometrics.decisions import PROCEED, SEE_OFFICER, identification_outcome, verification_outcome
from biometrics.service import CheckpointService, StoreLocation
from biometrics.statistics import TrafficStatistics
from biometrics.types import Modality, Sample, SubjectInfo
from verify import server as server_module
from verify.metrics import (
    MetricsConfigError,
    OperatorMetrics,
    ServiceCollector,
    check_metrics_listen,
    outcome_label,
)

CHECKPOINT = "checkpoint.v1.Checkpoint"
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SUBJECT = "P7300001"
INFO = pb.SubjectInfo(name="Siti Rahmawati", nationality="IDN", date_of_birth="1990-05-01")
#: Every label name a scrape may carry (``le`` and ``quantile``: the histogram's and summary's own).
ALLOWED_LABELS = {"station", "outcome", "reason", "grpc_type", "grpc_service", "grpc_method", "grpc_code", "le",
                  "quantile"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> str:
    """``/metrics`` over HTTP, as Prometheus reads it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        return answer.read().decode()


def samples(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet, as for a counter never incremented)."""
    return found.get((name, frozenset(labels.items())), 0.0)


def grpc_labels(kind: str, service: str, method: str, station: str = "") -> dict[str, str]:
    return {"station": station, "grpc_type": kind, "grpc_service": service, "grpc_method": method}


def _build_server(service: CheckpointService, metrics: OperatorMetrics) -> tuple[grpc.Server, int]:
    """``build_server`` with the metrics interceptor first, before the role check."""
    server, port, _ = server_module.build_server(service, "127.0.0.1:0", interceptors=metrics.interceptors)
    return server, port


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A service (single station, extraction in this process), its metrics on HTTP, and its gRPC server."""
    root = tmp_path_factory.mktemp("metrics")
    service = CheckpointService.open(StoreLocation(root / "data", key_dir=root / "keys"))
    metrics = OperatorMetrics(service)
    http_port = metrics.serve("127.0.0.1:0")
    server, port = _build_server(service, metrics)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield SimpleNamespace(service=service, metrics=metrics, http_port=http_port, channel=channel,
                          stub=pb_grpc.CheckpointStub(channel))
    channel.close()
    server.stop(None).wait()
    metrics.close()
    service.close()


def test_every_call_moves_the_grpc_counters_by_exactly_one(station: SimpleNamespace) -> None:
    stub, port = station.stub, station.http_port
    before = samples(scrape(port))

    enrolled = stub.Enroll(pb.EnrollRequest(subject_id=SUBJECT, info=INFO,
                                            samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]))
    assert enrolled.enrolled
    assert stub.Verify(pb.VerifyRequest(subject_id=SUBJECT,
                                        samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")])).match
    assert not stub.Verify(pb.VerifyRequest(subject_id=SUBJECT, samples=[face_sample("Kofi_Annan_0001.jpg")])).match
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Verify(pb.VerifyRequest(subject_id="P7300999", samples=[face_sample("Kofi_Annan_0002.jpg")]))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as bad:
        stub.Verify(pb.VerifyRequest(subject_id=SUBJECT, samples=[pb.Sample(modality=pb.FACE, image=b"not a jpeg")]))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.GetSubject(pb.GetSubjectRequest(subject_id=SUBJECT)).info.name == INFO.name
    # a method no role is offered: refused by the role check, counted without its name as a label
    nope = station.channel.unary_unary(f"/{CHECKPOINT}/ListEveryone")
    with pytest.raises(grpc.RpcError) as refused:
        nope(b"")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # the other services, unary and both kinds of stream
    health = health_pb2_grpc.HealthStub(station.channel)
    health.Check(health_pb2.HealthCheckRequest(service=""))
    reflection = reflection_pb2_grpc.ServerReflectionStub(station.channel)
    answers = list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services=""),
                                                         reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert len(answers) == 2
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    next(watch)
    watch.cancel()

    watch_cancelled = grpc_labels("server_stream", HEALTH, "Watch")

    def watch_counted() -> Samples | None:
        found = samples(scrape(port))
        return found if value(found, "grpc_server_handled_total", **watch_cancelled, grpc_code="Canceled") else None

    after = wait_until(watch_counted, message="the cancelled Watch counted as handled, Canceled")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    verify = grpc_labels("unary", CHECKPOINT, "Verify")
    assert delta("grpc_server_started_total", **verify) == 4
    assert delta("grpc_server_handled_total", **verify, grpc_code="OK") == 2
    assert delta("grpc_server_handled_total", **verify, grpc_code="NotFound") == 1
    assert delta("grpc_server_handled_total", **verify, grpc_code="InvalidArgument") == 1
    assert delta("grpc_server_handling_seconds_count", **verify) == 4
    assert delta("grpc_server_handling_seconds_sum", **verify) > 0
    assert delta("grpc_server_msg_received_total", **verify) == 4
    assert delta("grpc_server_msg_sent_total", **verify) == 2
    for method in ("Enroll", "GetSubject"):
        labels = grpc_labels("unary", CHECKPOINT, method)
        assert delta("grpc_server_started_total", **labels) == 1
        assert delta("grpc_server_handled_total", **labels, grpc_code="OK") == 1
    unknown_method = grpc_labels("bidi_stream", "unknown", "unknown")
    assert delta("grpc_server_handled_total", **unknown_method, grpc_code="PermissionDenied") == 1
    assert delta("grpc_server_handled_total", **grpc_labels("unary", HEALTH, "Check"), grpc_code="OK") == 1
    info = grpc_labels("bidi_stream", REFLECTION, "ServerReflectionInfo")
    assert delta("grpc_server_handled_total", **info, grpc_code="OK") == 1
    assert delta("grpc_server_msg_received_total", **info) == 2
    assert delta("grpc_server_msg_sent_total", **info) == 2
    assert delta("grpc_server_started_total", **watch_cancelled) == 1
    assert delta("grpc_server_handled_total", **watch_cancelled, grpc_code="Canceled") == 1
    assert delta("grpc_server_msg_sent_total", **watch_cancelled) == 1

    # the service's own
    assert delta("checkpoint_decisions_total", station="", outcome="verify_match") == 1
    assert delta("checkpoint_decisions_total", station="", outcome="verify_no_match") == 1
    assert value(after, "checkpoint_gallery_subjects", station="") == 1
    assert value(after, "checkpoint_gallery_templates", station="") == 1
    assert value(after, "checkpoint_ready", station="") == 1
    # one face per Enroll and per Verify with an image, the unknown subject's included (extracted first)
    assert delta("checkpoint_face_extraction_seconds_count", station="", outcome="ok") == 4
    assert delta("checkpoint_face_extraction_seconds_count", station="", outcome="refused") == 1


def test_the_scrape_names_nobody(station: SimpleNamespace) -> None:
    if not station.service.holds(SUBJECT):
        station.stub.Enroll(pb.EnrollRequest(subject_id=SUBJECT, info=INFO,
                                             samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]))
    decision = station.stub.Verify(pb.VerifyRequest(subject_id=SUBJECT,
                                                    samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")]))
    text = scrape(station.http_port)
    pseudonym = station.service.storage.keyring.pseudonym(SUBJECT)
    for personal in (SUBJECT, INFO.name, *INFO.name.split(), INFO.date_of_birth, pseudonym, decision.decision_id):
        assert personal not in text, personal
    assert not re.search(r'"IDN"|nationality', text)
    label_names = {name for family in text_string_to_metric_families(text) for s in family.samples
                   for name in s.labels}
    assert label_names <= ALLOWED_LABELS


def test_a_station_and_its_workers_are_read_at_scrape_time() -> None:
    statistics = TrafficStatistics()
    statistics.record_decision("verify_match")
    statistics.record_decision("verify_match")
    statistics.record_decision("verify_match P1234567")  # an outcome carrying an identifier never becomes a label
    service = SimpleNamespace(
        station="rokot-airport", statistics=statistics, gallery_size=lambda: (958, 1203), ready=lambda: True,
        sync_status=lambda: {"shared": True, "ready": True, "applied_seq": 4411, "seconds_since_sync": 2.5,
                             "register_connected": False, "audit_pending": 7, "outbox_pending": 3, "provisional": 2,
                             "outbox_failed": 1, "last_drain": {}, "erasures_in_wal": 4})
    pool = SimpleNamespace(workers=2, ready=lambda: False, restarts=1, queue_depth=lambda: 5)
    found = samples("".join(_exposition(ServiceCollector(service, pool))))
    at = {"station": "rokot-airport"}
    assert value(found, "checkpoint_decisions_total", **at, outcome="verify_match") == 2
    assert value(found, "checkpoint_decisions_total", **at, outcome="other") == 1
    assert value(found, "checkpoint_gallery_subjects", **at) == 958
    assert value(found, "checkpoint_gallery_templates", **at) == 1203
    assert value(found, "checkpoint_register_sync_lag_seconds", **at) == 2.5
    assert value(found, "checkpoint_register_connected", **at) == 0
    assert value(found, "checkpoint_register_applied_seq", **at) == 4411
    assert value(found, "checkpoint_audit_pending", **at) == 7
    assert value(found, "checkpoint_outbox_pending", **at) == 3
    assert value(found, "checkpoint_outbox_failed", **at) == 1
    assert value(found, "checkpoint_provisional_enrolments", **at) == 2
    assert value(found, "checkpoint_erasures_in_wal", **at) == 4
    assert value(found, "checkpoint_face_workers", **at) == 2
    assert value(found, "checkpoint_face_workers_ready", **at) == 0
    assert value(found, "checkpoint_face_worker_restarts_total", **at) == 1
    assert value(found, "checkpoint_face_worker_queue_depth", **at) == 5
    assert all(dict(labels)["station"] == "rokot-airport" for _, labels in found)
    assert "P1234567" not in "".join(_exposition(ServiceCollector(service, pool)))


def test_a_part_that_cannot_be_read_leaves_the_others_in_the_scrape() -> None:
    def register_away() -> dict[str, Any]:
        raise ConnectionError("the register is away")

    service = SimpleNamespace(station="", statistics=TrafficStatistics(), gallery_size=lambda: (3, 4),
                              ready=lambda: True, sync_status=register_away)
    found = samples("".join(_exposition(ServiceCollector(service))))
    assert value(found, "checkpoint_gallery_subjects", station="") == 3
    assert not any(name.startswith("checkpoint_register") for name, _ in found)


def _exposition(collector: ServiceCollector) -> Iterator[str]:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    yield generate_latest(registry).decode()


def test_admission_refusals_are_counted_by_reason(station: SimpleNamespace) -> None:
    """A call refused at admission is a series of its own (before, only ``grpc_code="Unavailable"`` among
    every other cause of that code); the three reasons exist from the start at 0."""
    server, port, _ = server_module.build_server(
        station.service, "127.0.0.1:0", interceptors=station.metrics.interceptors, threads=3, max_watches=1,
        on_refused=station.metrics.count_refusal)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        before = samples(scrape(station.http_port))
        for reason in ("busy", "kiosk_limit", "watch_limit"):
            assert ("checkpoint_admission_refused_total", frozenset({("station", ""), ("reason", reason)})) in before
        health = health_pb2_grpc.HealthStub(channel)
        held = health.Watch(health_pb2.HealthCheckRequest(service=""))
        next(held)  # the one stream allowed is open
        with pytest.raises(grpc.RpcError) as refused:
            next(health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        after = samples(scrape(station.http_port))
        moved = {r: value(after, "checkpoint_admission_refused_total", station="", reason=r)
                 - value(before, "checkpoint_admission_refused_total", station="", reason=r)
                 for r in ("busy", "kiosk_limit", "watch_limit")}
        assert moved == {"busy": 0, "kiosk_limit": 0, "watch_limit": 1}
        held.cancel()
    finally:
        channel.close()
        server.stop(None).wait()


@pytest.mark.parametrize(("outcome", "label"), [
    ("verify_match", "verify_match"), ("enrol_duplicate_held", "enrol_duplicate_held"),
    ("P1234567", "other"), ("verify match", "other"), ("", "other"), ("x" * 41, "other"),
])
def test_outcome_labels_are_plain_words(outcome: str, label: str) -> None:
    assert outcome_label(outcome) == label


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "localhost:0", "[::1]:9464", "127.3.2.1:1"])
def test_loopback_metrics_addresses_are_accepted(listen: str) -> None:
    host, port = check_metrics_listen(listen)
    assert host in listen
    assert 0 <= port <= 65535


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "10.1.2.3:9464", "[::]:9464", "checkpoint.local:9464"])
def test_other_addresses_need_the_operators_consent(listen: str) -> None:
    with pytest.raises(MetricsConfigError, match="loopback"):
        check_metrics_listen(listen)
    assert check_metrics_listen(listen, allow_remote=True)[1] == 9464


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1:", "127.0.0.1:http", ":9464", "127.0.0.1:70000", "::1:9464",
                                    "127.0.0.1:-1"])
def test_a_malformed_metrics_address_is_refused_with_an_example(listen: str) -> None:
    with pytest.raises(MetricsConfigError, match="HOST:PORT"):
        check_metrics_listen(listen)


def test_a_taken_port_is_an_error_not_a_silent_second_endpoint(station: SimpleNamespace) -> None:
    other = OperatorMetrics(SimpleNamespace(station="", extractor=object(), statistics=TrafficStatistics()),
                            process=False)
    with pytest.raises(OSError, match=rf"--metrics-listen 127\.0\.0\.1:{station.http_port}: .*in use"):
        other.serve(f"127.0.0.1:{station.http_port}")
    other.close()


# -- the Grafana dashboard ------------------------------------------------------------------------------------

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "checkpoint-dashboard.json"


def _full_service() -> tuple[SimpleNamespace, SimpleNamespace]:
    """A station on a shared register with a worker pool: every metric of the service's own is exported."""
    status = {"shared": True, "ready": True, "applied_seq": 1, "seconds_since_sync": 0.5, "register_connected": True,
              "audit_pending": 0, "outbox_pending": 0, "provisional": 0, "last_drain": {}}
    service = SimpleNamespace(station="tuapejat-port", statistics=TrafficStatistics(), gallery_size=lambda: (1, 1),
                              ready=lambda: True, sync_status=lambda: status, extractor=object())
    pool = SimpleNamespace(workers=2, ready=lambda: True, restarts=0, queue_depth=lambda: 0)
    return service, pool


def series_names(text: str) -> set[str]:
    """Every series name a scrape declares, whether or not it has a sample yet (a counter never incremented)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {family.name + suffix for family in text_string_to_metric_families(text)
            for suffix in suffixes.get(family.type, ("",))}


def test_the_grafana_dashboard_charts_only_metrics_the_endpoint_exports(station: SimpleNamespace) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    service, pool = _full_service()
    exported = series_names(scrape(station.http_port))
    exported |= series_names(OperatorMetrics(service, pool=pool, process=False).scrape().decode())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    charted: set[str] = set()
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']!r} overlaps another panel"
        cells |= mine
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            selectors = re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr)
            assert selectors, expr
            for name, matchers in selectors:
                assert name in exported, f"{panel['title']!r} charts {name}, which /metrics does not export"
                assert 'station=~"$station"' in matchers, expr
                charted.add(name)
            for grouping in re.findall(r"by \(([^)]*)\)", expr):
                assert {g.strip() for g in grouping.split(",")} <= ALLOWED_LABELS, expr
    for name in ("grpc_server_handled_total", "grpc_server_started_total", "grpc_server_handling_seconds_bucket",
                 "checkpoint_decisions_total", "checkpoint_gallery_subjects",
                 "checkpoint_face_extraction_seconds_bucket", "checkpoint_face_worker_queue_depth",
                 "checkpoint_register_sync_lag_seconds"):
        assert name in charted, f"the dashboard has no panel on {name}"



def _outcome_matchers(expr: str) -> list[str]:
    """The `outcome` label matchers of a PromQL expression, each as a Python regular expression."""
    return [m.group(2) if m.group(1) == "=~" else re.escape(m.group(2))
            for m in re.finditer(r'outcome(=~|=)"([^"]*)"', expr)]


def test_the_dashboard_shows_travellers_referred_on_a_finger_alone() -> None:
    """A finger-alone referral sends a traveller to an officer: it has a panel. The Verify PROCEED share counts
    only matches answered PROCEED over every Verify answer: a match referred to an officer (a watchlisted subject,
    a subject in review) is not PROCEED."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    for outcome in ("verify_finger_alone_referred", "identify_finger_alone_referred"):
        assert any(re.fullmatch(m, outcome) for e in exprs for m in _outcome_matchers(e)), \
            f"no panel selects the outcome {outcome}"
    share = next(p for p in dashboard["panels"] if p["title"].startswith("Verify: share answered PROCEED"))
    expr = share["targets"][0]["expr"]
    numerator, denominator = _outcome_matchers(expr)
    verify_outcomes = ("verify_match", "verify_match_referred", "verify_no_match", "verify_finger_alone_referred")
    assert all(re.fullmatch(denominator, o) for o in verify_outcomes), f"the share's denominator misses some: {expr}"
    assert [o for o in verify_outcomes if re.fullmatch(numerator, o)] == ["verify_match"]


def test_a_match_referred_to_an_officer_is_not_counted_as_proceed(tmp_path: Path) -> None:
    """A review: a watchlisted subject's match (SEE_OFFICER for the kiosk) was counted ``verify_match``, which the
    dashboard reads as PROCEED. Each answer's outcome now says what the traveller was told (its name not why)."""
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    try:
        assert service.enrol("W1000001", SubjectInfo(name="Flagged", watchlist=True),
                             [Sample(Modality.FACE, face("Megawati_Sukarnoputri_0001.jpg"))]).enrolled
        assert service.enrol("K1000001", SubjectInfo(name="Clear"),
                             [Sample(Modality.FACE, face("Kofi_Annan_0001.jpg"))]).enrolled
        flagged = [Sample(Modality.FACE, face("Megawati_Sukarnoputri_0002.jpg"))]
        clear = [Sample(Modality.FACE, face("Kofi_Annan_0002.jpg"))]
        referred = service.verify("W1000001", flagged)
        assert referred.match and verification_outcome(referred).decision is SEE_OFFICER
        proceeds = service.verify("K1000001", clear)
        assert verification_outcome(proceeds).decision is PROCEED
        assert identification_outcome(service.identify(flagged)).decision is SEE_OFFICER
        assert identification_outcome(service.identify(clear)).decision is PROCEED
        decisions = service.statistics.decisions()
        assert decisions.get("verify_match") == 1 and decisions.get("verify_match_referred") == 1
        assert decisions.get("identify_hit") == 1 and decisions.get("identify_hit_referred") == 1
        assert all(outcome_label(o) == o for o in decisions)  # words of the vocabulary: each its own label
    finally:
        service.close()

# -- checkpoint-server --metrics-listen, as a process ---------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    done = subprocess.run([sys.executable, "-m", "verify.certs", "init", str(root)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.server
def test_checkpoint_server_serves_metrics_on_its_own_port(pki: Path, tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", tls=pki,
                         args=("--metrics-listen", "127.0.0.1:0")).start()
    try:
        found = wait_until(lambda: re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", "".join(proc.output)),
                           message="the server's metrics address in its log")
        port = int(found.group(1))
        before = samples(scrape(port))
        with pytest.raises(grpc.RpcError) as refused:  # a kiosk may not enrol: refused, and counted
            proc.stub("kiosk").Enroll(pb.EnrollRequest(subject_id=SUBJECT, info=INFO,
                                                       samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        officer = proc.stub("officer")
        assert officer.Enroll(pb.EnrollRequest(subject_id=SUBJECT, info=INFO,
                                               samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]),
                              timeout=120).enrolled
        assert proc.stub("kiosk").Verify(pb.VerifyRequest(
            subject_id=SUBJECT, samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")]), timeout=120
        ).decision == pb.PROCEED
        text = scrape(port)
        after = samples(text)
        enroll = grpc_labels("unary", CHECKPOINT, "Enroll")
        assert value(after, "grpc_server_handled_total", **enroll, grpc_code="PermissionDenied") - value(
            before, "grpc_server_handled_total", **enroll, grpc_code="PermissionDenied") == 1
        assert value(after, "grpc_server_handled_total", **enroll, grpc_code="OK") - value(
            before, "grpc_server_handled_total", **enroll, grpc_code="OK") == 1
        assert value(after, "checkpoint_decisions_total", station="", outcome="verify_match") == 1
        assert value(after, "checkpoint_face_workers", station="") == 1
        assert value(after, "checkpoint_gallery_subjects", station="") == 1
        for personal in (SUBJECT, INFO.name, *INFO.name.split()):
            assert personal not in text
    finally:
        assert proc.stop() == 0
    with pytest.raises(OSError):  # the endpoint stopped with the server
        scrape(port)
