"""End to end through a real gRPC channel on loopback, with real LFW images and dlib's models."""

from __future__ import annotations

import math
import struct
import zlib
from types import SimpleNamespace

import cv2
import grpc
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import FACES, ServerProcess, face, face_sample, side_by_side
from waiting import wait_until

from biometrics.errors import InvalidSample
from biometrics.service import ServiceConfig
from biometrics.types import Modality
from verify.servicer import CheckpointServicer


class _Station:
    """A station that records every capture it is asked for (and returns a grey frame)."""

    def __init__(self) -> None:
        self.captures: list[tuple[str, str, float]] = []

    def capture_face(self, device: str = "", timeout_s: float = 0.0) -> np.ndarray:
        self.captures.append(("face", device, timeout_s))
        return np.zeros((8, 8, 3), np.uint8)

    def capture_fingerprint(self, device: str = "", timeout_s: float = 0.0) -> np.ndarray:
        self.captures.append(("fingerprint", device, timeout_s))
        return np.zeros((8, 8), np.uint8)


def _servicer(station: _Station) -> CheckpointServicer:
    service = SimpleNamespace(config=ServiceConfig(max_samples=3))
    return CheckpointServicer(service, station)  # type: ignore[arg-type]


CAPTURE = pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(timeout_seconds=5))


@pytest.mark.parametrize(("samples", "words"), [
    ([CAPTURE, pb.Sample(modality=pb.FINGERPRINT, finger=11, image=b"png")], "ISO/IEC 19794-2"),
    ([CAPTURE, pb.Sample(modality=pb.FINGERPRINT, capture=pb.DeviceCapture(timeout_seconds=math.inf))],
     "capture timeout"),
    ([CAPTURE, pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(timeout_seconds=1e9))], "capture timeout"),
    ([CAPTURE, pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(timeout_seconds=math.nan))], "capture timeout"),
    ([CAPTURE, pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(device="d" * 300))], "too long"),
    ([CAPTURE, pb.Sample(modality=pb.MODALITY_UNSPECIFIED, image=b"x")], "modality"),
    ([CAPTURE, pb.Sample(modality=pb.FACE)], "neither an image nor a capture"),
    ([CAPTURE] * 4, "4 samples were sent; at most 3"),
    ([], "No sample was sent"),
])
def test_every_sample_is_checked_before_any_capture(samples: list[pb.Sample], words: str) -> None:
    station = _Station()
    with pytest.raises(InvalidSample, match=words):
        _servicer(station).samples(samples)
    assert station.captures == []  # nothing was captured for a request that is refused


def test_captures_are_taken_once_the_request_passes() -> None:
    station = _Station()
    samples = _servicer(station).samples([CAPTURE, pb.Sample(modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX,
                                                             capture=pb.DeviceCapture(device="zfm0"))])
    assert station.captures == [("face", "", 5.0), ("fingerprint", "zfm0", 0.0)]
    assert [(s.modality, s.finger) for s in samples] == [(Modality.FACE, 0), (Modality.FINGERPRINT, 2)]


INFO_A = pb.SubjectInfo(name="Megawati Sukarnoputri", nationality="IDN", date_of_birth="1947-01-23")
INFO_B = pb.SubjectInfo(name="Kofi Annan", nationality="GHA", date_of_birth="1938-04-08", watchlist=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("checkpoint")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def enrolled(server: ServerProcess):
    """Subjects A (Megawati) and B (Kofi Annan, on the watchlist) enrolled once for the module."""
    stub = server.stub()
    for subject_id, info, image in (("A1000001", INFO_A, "Megawati_Sukarnoputri_0001.jpg"),
                                    ("B2000002", INFO_B, "Kofi_Annan_0001.jpg")):
        r = stub.Enroll(pb.EnrollRequest(subject_id=subject_id, info=info, samples=[face_sample(image)]))
        assert r.enrolled, r
        assert not r.possible_duplicates
        assert r.decision_id
        assert r.qualities[0].quality > 0
    return stub


def _code(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return excinfo.value.code()


@pytest.mark.server
def test_health_and_reflection_are_served(server: ServerProcess) -> None:
    channel = grpc.insecure_channel(server.target)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "checkpoint.v1.Checkpoint"):  # SERVING once the face workers have loaded their models
        wait_until(lambda service=service: health.Check(health_pb2.HealthCheckRequest(service=service)).status
                   == health_pb2.HealthCheckResponse.SERVING, timeout=120, message=f"health of {service!r}")
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert "checkpoint.v1.Checkpoint" in names


@pytest.mark.server
@pytest.mark.parametrize("method", ["Check", "Watch"])
def test_garbage_bytes_to_health_are_an_invalid_argument_not_internal(server: ServerProcess, method: str) -> None:
    channel = grpc.insecure_channel(server.target)
    kind = channel.unary_unary if method == "Check" else channel.unary_stream
    call = kind(f"/grpc.health.v1.Health/{method}", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as refused:
        answer = call(b"\xff\xff\xff\xff", timeout=30)
        if method == "Watch":
            next(answer)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == f"The /grpc.health.v1.Health/{method} request is not a valid message."
    assert "Traceback" not in "".join(server.output)


@pytest.mark.server
def test_verify_genuine_matches_and_impostor_does_not(enrolled) -> None:
    genuine = enrolled.Verify(pb.VerifyRequest(subject_id="A1000001",
                                               samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")]))
    assert genuine.match
    assert genuine.score >= genuine.threshold
    assert genuine.threshold == pytest.approx(3.0)  # FMR 0.1% on the -log10(FMR) scale
    impostor = enrolled.Verify(pb.VerifyRequest(subject_id="A1000001", samples=[face_sample("Hans_Blix_0001.jpg")]))
    assert not impostor.match
    assert impostor.score < impostor.threshold
    assert genuine.decision_id != impostor.decision_id
    other = enrolled.Verify(pb.VerifyRequest(subject_id="B2000002",
                                             samples=[face_sample("Megawati_Sukarnoputri_0004.jpg")]))
    assert not other.match


@pytest.mark.server
def test_identify_finds_the_enrolled_subject_first(enrolled) -> None:
    r = enrolled.Identify(pb.IdentifyRequest(samples=[face_sample("Kofi_Annan_0004.jpg")]))
    assert r.candidates, "the enrolled subject must be found"
    assert r.candidates[0].subject_id == "B2000002"
    assert r.candidates[0].watchlist
    assert all(c.score >= r.threshold for c in r.candidates)
    assert [c.score for c in r.candidates] == sorted((c.score for c in r.candidates), reverse=True)
    stranger = enrolled.Identify(pb.IdentifyRequest(samples=[face_sample("Hans_Blix_0001.jpg")]))
    assert list(stranger.candidates) == []


@pytest.mark.server
def test_duplicate_is_held_for_the_officer_then_overridden(enrolled) -> None:
    held = enrolled.Enroll(pb.EnrollRequest(subject_id="B9999999", info=INFO_B,
                                            samples=[face_sample("Kofi_Annan_0002.jpg")]))
    assert not held.enrolled
    assert [c.subject_id for c in held.possible_duplicates] == ["B2000002"]
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.GetSubject(pb.GetSubjectRequest(subject_id="B9999999"))
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND
    allowed = enrolled.Enroll(pb.EnrollRequest(subject_id="B9999999", info=INFO_B, allow_duplicate=True,
                                               override_reason="second passport, checked with the embassy",
                                               samples=[face_sample("Kofi_Annan_0002.jpg")]))
    assert allowed.enrolled
    assert [c.subject_id for c in allowed.possible_duplicates] == ["B2000002"]
    enrolled.DeleteSubject(pb.DeleteSubjectRequest(subject_id="B9999999", reason="test cleanup"))


@pytest.mark.server
def test_get_and_delete_subject(enrolled) -> None:
    r = enrolled.Enroll(pb.EnrollRequest(subject_id="C3000003", info=pb.SubjectInfo(name="Hans Blix"),
                                         samples=[face_sample("Hans_Blix_0001.jpg")]))
    assert r.enrolled
    subject = enrolled.GetSubject(pb.GetSubjectRequest(subject_id="C3000003"))
    assert subject.info.name == "Hans Blix"
    assert [t.modality for t in subject.templates] == [pb.FACE]
    deleted = enrolled.DeleteSubject(pb.DeleteSubjectRequest(subject_id="C3000003", reason="erasure request"))
    assert deleted.deleted and deleted.decision_id
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.Verify(pb.VerifyRequest(subject_id="C3000003", samples=[face_sample("Hans_Blix_0001.jpg")]))
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND
    gone = enrolled.Identify(pb.IdentifyRequest(samples=[face_sample("Hans_Blix_0001.jpg")]))
    assert "C3000003" not in [c.subject_id for c in gone.candidates]
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.DeleteSubject(pb.DeleteSubjectRequest(subject_id="C3000003", reason="erasure request"))
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND


def _png(width: int, height: int, pixels: bytes | None = None) -> bytes:
    """A PNG whose header declares width x height (pixels: the compressed data, or one row of zeros)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = pixels if pixels is not None else zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _two_faces() -> bytes:
    left = cv2.imread(str(FACES / "Megawati_Sukarnoputri_0001.jpg"))
    right = cv2.imread(str(FACES / "Hans_Blix_0001.jpg"))
    return cv2.imencode(".jpg", np.hstack([left, right]))[1].tobytes()


def _blank() -> bytes:
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    return cv2.imencode(".png", gradient)[1].tobytes()


@pytest.mark.server
@pytest.mark.parametrize(
    ("image", "code", "words"),
    [
        (b"this is not an image", grpc.StatusCode.INVALID_ARGUMENT, "not a JPEG or PNG"),
        (b"GIF89a" + b"\x00" * 100, grpc.StatusCode.INVALID_ARGUMENT, "not a JPEG or PNG"),
        (face("Hans_Blix_0001.jpg")[:2000], grpc.StatusCode.INVALID_ARGUMENT, "damaged"),
        (_blank(), grpc.StatusCode.INVALID_ARGUMENT, "No face"),
        (_two_faces(), grpc.StatusCode.INVALID_ARGUMENT, "2 faces"),
        (_png(60000, 60000), grpc.StatusCode.RESOURCE_EXHAUSTED, "megapixels"),
    ],
    ids=["text", "gif", "truncated-jpeg", "no-face", "two-faces", "decompression-bomb"],
)
def test_bad_enrolment_images_get_their_own_status(enrolled, image: bytes, code: grpc.StatusCode, words: str) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.Enroll(pb.EnrollRequest(subject_id="X0000001", samples=[pb.Sample(modality=pb.FACE, image=image)]))
    assert _code(excinfo) == code
    assert words in excinfo.value.details()


@pytest.mark.server
def test_a_transaction_of_more_than_three_attempts_is_an_invalid_argument(enrolled) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.Verify(pb.VerifyRequest(subject_id="A1000001", samples=[face_sample("Hans_Blix_0001.jpg")],
                                         attempts=4))
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 to 3 attempts" in excinfo.value.details()


@pytest.mark.server
def test_identify_with_two_travellers_is_refused_and_verify_scores_the_nearest(enrolled) -> None:
    """The review's case: watchlisted B (Kofi Annan, 220 px) beside a larger face (250 px) was searched on the
    larger one (Identify: SEE OFFICER, no candidate, no alert); a second traveller is refused, the kiosk told why.
    Verify asks about the traveller nearest the camera (the largest face): B2000002 is not that traveller."""
    sample = pb.Sample(modality=pb.FACE, image=side_by_side(("Kofi_Annan_0004.jpg", 220), ("Hans_Blix_0001.jpg", 250)))
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.Identify(pb.IdentifyRequest(samples=[sample]))
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert "Two faces are in the picture: one traveller at a time, please." in excinfo.value.details()
    nearest = enrolled.Verify(pb.VerifyRequest(subject_id="B2000002", samples=[sample]))
    assert not nearest.match and nearest.decision == pb.SEE_OFFICER


@pytest.mark.server
def test_unknown_subject_existing_subject_and_oversized_request(enrolled) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.Verify(pb.VerifyRequest(subject_id="NOPE0000", samples=[face_sample("Hans_Blix_0001.jpg")]))
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.Enroll(pb.EnrollRequest(subject_id="A1000001", samples=[face_sample("Hans_Blix_0001.jpg")]))
    assert _code(excinfo) == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.Verify(pb.VerifyRequest(subject_id="A1000001",
                                         samples=[pb.Sample(modality=pb.FACE, image=b"\xff" * (20 * 1024 * 1024))]))
    assert _code(excinfo) == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.Verify(pb.VerifyRequest(subject_id="A1000001",
                                         samples=[pb.Sample(modality=pb.FACE, image=b"\xff\xd8\xff" * 3_000_000)]))
    assert _code(excinfo) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "MB" in excinfo.value.details()


@pytest.mark.server
def test_malformed_requests_are_refused_cleanly(enrolled) -> None:
    cases = [
        pb.VerifyRequest(subject_id="A1000001"),  # no sample
        pb.VerifyRequest(subject_id="", samples=[face_sample("Hans_Blix_0001.jpg")]),
        pb.VerifyRequest(subject_id="A1000001", samples=[pb.Sample(image=face("Hans_Blix_0001.jpg"))]),
        pb.VerifyRequest(subject_id="A1000001", samples=[pb.Sample(modality=pb.FACE)]),
    ]
    for request in cases:
        with pytest.raises(grpc.RpcError) as excinfo:
            enrolled.Verify(request)
        assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT, request


@pytest.mark.server
@pytest.mark.parametrize(("request_", "words"), [
    (pb.EnrollRequest(subject_id="T1", info=pb.SubjectInfo(name="n" * 257)), "info.name is too long"),
    (pb.EnrollRequest(subject_id="T1", info=pb.SubjectInfo(nationality="INDONESIA")), "three-letter ISO 3166-1"),
    (pb.EnrollRequest(subject_id="T1", info=pb.SubjectInfo(date_of_birth="1990-02-30")), "YYYY-MM-DD"),
    (pb.EnrollRequest(subject_id="T1\n"), "1 to 64 letters"),
    (pb.EnrollRequest(subject_id="T1", override_reason="r" * 2001), "override_reason is too long"),
    (pb.DeleteSubjectRequest(subject_id="A1000001", reason="r" * 2001), "reason is too long"),
    (pb.VerifyRequest(subject_id="A1000001", samples=[pb.Sample(modality=pb.FINGERPRINT, finger=11,
                                                               image=b"png")]), "ISO/IEC 19794-2"),
], ids=["name", "nationality", "date-of-birth", "subject-id-newline", "override-reason", "delete-reason", "finger"])
def test_fields_are_validated_by_the_core(enrolled, request_, words: str) -> None:
    if isinstance(request_, pb.EnrollRequest):
        request_.samples.append(face_sample("Hans_Blix_0001.jpg"))
    call = {pb.EnrollRequest: enrolled.Enroll, pb.DeleteSubjectRequest: enrolled.DeleteSubject,
            pb.VerifyRequest: enrolled.Verify}[type(request_)]
    with pytest.raises(grpc.RpcError) as excinfo:
        call(request_)
    assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
    assert words in excinfo.value.details()


@pytest.mark.server
def test_a_duplicate_override_needs_a_reason(enrolled) -> None:
    for reason in ("", "   "):
        with pytest.raises(grpc.RpcError) as excinfo:
            enrolled.Enroll(pb.EnrollRequest(subject_id="B8888888", info=INFO_B, allow_duplicate=True,
                                             override_reason=reason, samples=[face_sample("Kofi_Annan_0002.jpg")]))
        assert _code(excinfo) == grpc.StatusCode.INVALID_ARGUMENT
        assert "override_reason is required" in excinfo.value.details()
    with pytest.raises(grpc.RpcError) as excinfo:
        enrolled.GetSubject(pb.GetSubjectRequest(subject_id="B8888888"))
    assert _code(excinfo) == grpc.StatusCode.NOT_FOUND


@pytest.mark.server
def test_statistics_count_calls_and_decisions(enrolled) -> None:
    enrolled.Verify(pb.VerifyRequest(subject_id="A1000001", samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")]))
    stats = enrolled.GetStatistics(pb.GetStatisticsRequest())
    verify = next(c for c in stats.calls if c.method == "Verify")
    assert verify.by_status["OK"] >= 1
    assert verify.p50_ms > 0
    assert stats.decisions["verify_match"] >= 1
    assert stats.gallery_subjects >= 2


@pytest.mark.server
def test_gallery_survives_a_restart(tmp_path) -> None:
    first = ServerProcess(tmp_path).start()
    try:
        stub = first.stub()
        assert stub.Enroll(pb.EnrollRequest(subject_id="R1", info=INFO_A,
                                            samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")])).enrolled
        assert stub.Enroll(pb.EnrollRequest(subject_id="R2", info=INFO_B,
                                            samples=[face_sample("Kofi_Annan_0001.jpg")])).enrolled
        stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id="R2", reason="erasure request"))
    finally:
        assert first.stop() == 0  # SIGTERM: a graceful exit
    second = ServerProcess(tmp_path).start()
    try:
        stub = second.stub()
        r = stub.Verify(pb.VerifyRequest(subject_id="R1", samples=[face_sample("Megawati_Sukarnoputri_0004.jpg")]))
        assert r.match
        assert stub.GetSubject(pb.GetSubjectRequest(subject_id="R1")).info.name == INFO_A.name
        with pytest.raises(grpc.RpcError) as excinfo:
            stub.GetSubject(pb.GetSubjectRequest(subject_id="R2"))
        assert _code(excinfo) == grpc.StatusCode.NOT_FOUND
        stats = stub.GetStatistics(pb.GetStatisticsRequest())
        assert (stats.gallery_subjects, stats.gallery_templates) == (1, 1)
    finally:
        second.stop()


@pytest.mark.server
def test_one_to_many_threshold_grows_with_the_gallery_to_hold_the_fpir(tmp_path) -> None:
    # --fpir 1e-4: a gallery of N subjects needs s >= 4 + log10(N); Verify keeps its 1:1 threshold of 3.
    server = ServerProcess(tmp_path, args=("--fpir", "0.0001")).start()
    try:
        stub = server.stub()
        first = stub.Enroll(pb.EnrollRequest(subject_id="A1000001", info=INFO_A,
                                             samples=[face_sample("Megawati_Sukarnoputri_0001.jpg")]))
        assert first.enrolled and first.threshold == pytest.approx(4.0)  # searched against an empty gallery
        second = stub.Enroll(pb.EnrollRequest(subject_id="B2000002", info=INFO_B,
                                              samples=[face_sample("Kofi_Annan_0001.jpg")]))
        assert second.enrolled and second.threshold == pytest.approx(4.0)  # searched against 1 subject
        for probe in ("Kofi_Annan_0004.jpg", "Megawati_Sukarnoputri_0002.jpg", "Hans_Blix_0001.jpg"):
            r = stub.Identify(pb.IdentifyRequest(samples=[face_sample(probe)]))
            assert r.threshold == pytest.approx(4.0 + np.log10(2))
            verify = {sid: stub.Verify(pb.VerifyRequest(subject_id=sid, samples=[face_sample(probe)]))
                      for sid in ("A1000001", "B2000002")}
            assert all(v.threshold == pytest.approx(3.0) for v in verify.values())
            expected = {sid for sid, v in verify.items() if v.score >= r.threshold}
            assert {c.subject_id for c in r.candidates} == expected, (probe, {k: v.score for k, v in verify.items()})
        assert "1:N 4.00 at FPIR 0.0001" in "".join(server.output)  # at start, with an empty gallery
    finally:
        server.stop()
