"""Hostile input against a live server: more than 2,000 malformed requests, each answered with a clean status.

Property-based (hypothesis, derandomised so that a run is reproducible): mutated real JPEG/PNG bytes, random
bytes, bogus headers declaring huge dimensions, random strings and repeated fields, and random protobuf bytes
on the wire (a generic ``unary_unary`` with identity serialisers). Every answer must be OK or one of the
refusal statuses of the contract, never UNKNOWN, INTERNAL, or a dropped connection; afterwards the server is
still up and still verifies a genuine probe.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections import Counter

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, ServerProcess, face, face_sample
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verify.roles import SERVICE

# OK, or a refusal a kiosk can show. FAILED_PRECONDITION: a capture on a station without devices, or a
# modality the subject has no reference for; ALREADY_EXISTS: an enrolment under a taken id.
CLEAN = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
}
FACE_JPEG = face("Megawati_Sukarnoputri_0004.jpg")
FINGER_PNG = (DATA / "fingerprints" / "DB1_B_101_2.png").read_bytes()
RIGHT_INDEX = 2
SEEDS = {"jpeg": FACE_JPEG, "png": FINGER_PNG}
METHODS = list(SERVICE.methods_by_name)
SENT: Counter[str] = Counter()
CODES: Counter[tuple[str, str]] = Counter()
pytestmark = [pytest.mark.server, pytest.mark.filterwarnings("ignore:Generating overly large repr")]
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("fuzz")).start()
    stub = proc.stub()
    finger = pb.Sample(modality=pb.FINGERPRINT, finger=RIGHT_INDEX,
                       image=(DATA / "fingerprints" / "DB1_B_101_1.png").read_bytes())
    assert stub.Enroll(pb.EnrollRequest(subject_id="A1000001", info=pb.SubjectInfo(name="Megawati Sukarnoputri"),
                                        samples=[face_sample("Megawati_Sukarnoputri_0001.jpg"), finger])).enrolled
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stub(server: ServerProcess):
    """One channel for the whole module (a channel per request would measure TCP, not the server)."""
    return server.stub()


@pytest.fixture(scope="module")
def raw(server: ServerProcess):
    """Callables sending raw bytes to each Checkpoint method."""
    channel = server.channel()
    return {m: channel.unary_unary(f"/{SERVICE.full_name}/{m}", request_serializer=None,
                                   response_deserializer=None) for m in METHODS}


def answer(call, request, kind: str) -> grpc.StatusCode:
    """Send one request; the status it got (asserted clean)."""
    SENT[kind] += 1
    try:
        call(request, timeout=60)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        assert error.details(), f"{code} without a message"
    assert code in CLEAN, f"{kind}: {code}"
    CODES[kind, code.name] += 1
    return code


# -- image strategies --------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """A real file with a few byte-level mutations: flips, truncation, insertion, deletion, header damage.

    Positions and operations come from a drawn seed, so that they spread over the whole file (hypothesis's
    own integers lean towards small values, which would damage only the first bytes).
    """
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    data = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        if not data:
            break
        op = rng.choice(["flip", "flip", "flip", "truncate", "insert", "delete", "zero_run", "header"])
        at = rng.randrange(len(data))
        if op == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 64))
        elif op == "delete":
            del data[at : at + rng.randint(1, 256)]
        elif op == "zero_run":
            data[at : at + 32] = bytes(len(data[at : at + 32]))
        else:  # damage the first 64 bytes, where the headers are
            data[at % 64] = rng.randrange(256)
    return bytes(data)


def png_declaring(width: int, height: int, body: bytes) -> bytes:
    """A PNG whose IHDR (with a valid CRC) declares ``width`` x ``height``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + body


def jpeg_declaring(width: int, height: int) -> bytes:
    """The real JPEG with its frame header rewritten to declare ``width`` x ``height``."""
    data = bytearray(FACE_JPEG)
    at = data.find(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


huge = st.integers(5_000, 2**16 - 1)
bogus_images = st.one_of(
    st.binary(max_size=4096),
    st.binary(max_size=512).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=512).map(lambda b: b"\xff\xd8\xff" + b),
    st.tuples(huge, huge, st.binary(max_size=256)).map(lambda t: png_declaring(*t)),
    st.tuples(st.integers(2**16, 2**31 - 1), st.integers(1, 2**31 - 1), st.binary(max_size=64)).map(
        lambda t: png_declaring(*t)),
    st.tuples(huge, huge).map(lambda t: jpeg_declaring(*t)),
    st.tuples(st.integers(0, 31), st.integers(0, 31)).map(lambda t: jpeg_declaring(*t)),
    st.sampled_from([FINGER_PNG[:24], FACE_JPEG[:600], b"GIF89a" + FACE_JPEG, b"BM" + FINGER_PNG, b""]),
)
images = st.one_of(mutated(FACE_JPEG), mutated(FACE_JPEG), mutated(FINGER_PNG), bogus_images)
modalities = st.one_of(st.sampled_from([pb.FACE, pb.FINGERPRINT]), st.integers(-5, 10))
fingers = st.one_of(st.integers(0, 10), st.integers(-(2**31), 2**31 - 1))
texts = st.one_of(st.text(max_size=80), st.text(min_size=250, max_size=3000), st.just("A1000001"))


@st.composite
def samples(draw: st.DrawFn, image_strategy: st.SearchStrategy[bytes] = images) -> list[pb.Sample]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        modality, finger = draw(modalities), draw(fingers)
        if draw(st.integers(0, 9)) == 0:
            capture = pb.DeviceCapture(device=draw(st.text(max_size=300)),
                                       timeout_seconds=draw(st.floats(allow_nan=True, allow_infinity=True)))
            out.append(pb.Sample(modality=modality, finger=finger, capture=capture))
        elif draw(st.integers(0, 19)) == 0:
            out.append(pb.Sample(modality=modality, finger=finger))
        else:
            out.append(pb.Sample(modality=modality, finger=finger, image=draw(image_strategy)))
    return out


# -- the properties ----------------------------------------------------------------------------------


# Fingerprint extraction costs several times a face's: fingerprints get a smaller share.
labelled_images = st.one_of(
    st.tuples(st.just(pb.FACE), mutated(FACE_JPEG), st.just(0)),
    st.tuples(st.just(pb.FACE), mutated(FACE_JPEG), st.just(0)),
    st.tuples(st.just(pb.FINGERPRINT), mutated(FINGER_PNG), st.just(RIGHT_INDEX)),
    st.tuples(st.sampled_from([pb.FACE, pb.FINGERPRINT]), bogus_images, st.integers(0, 10)),
    st.tuples(st.sampled_from([pb.FACE, pb.FINGERPRINT]), bogus_images, st.integers(0, 10)),
    st.one_of(st.tuples(st.just(pb.FINGERPRINT), mutated(FACE_JPEG), st.just(RIGHT_INDEX)),  # mislabelled
              st.tuples(st.just(pb.FACE), mutated(FINGER_PNG), st.just(0))),
)


@pytest.mark.slow
@settings(FUZZ, max_examples=400)
@given(case=labelled_images, call=st.sampled_from(["Verify", "Identify"]))
def test_malformed_images_get_clean_refusals(stub, case: tuple[int, bytes, int], call: str) -> None:
    modality, image, finger = case
    sample = pb.Sample(modality=modality, finger=finger, image=image)
    if call == "Verify":
        answer(stub.Verify, pb.VerifyRequest(subject_id="A1000001", samples=[sample]), "image")
    else:
        answer(stub.Identify, pb.IdentifyRequest(samples=[sample]), "image")


@pytest.mark.slow
@settings(FUZZ, max_examples=600)
@given(subject_id=texts, name=texts, reason=texts, batch=samples(), max_candidates=st.integers(-(2**31), 2**31 - 1),
       allow_duplicate=st.booleans(), call=st.sampled_from(["Enroll", "Verify", "Identify", "GetSubject",
                                                            "DeleteSubject", "CaptureFace", "ListDevices"]))
def test_random_fields_get_clean_refusals(stub, subject_id: str, name: str, reason: str, batch: list[pb.Sample],
                                          max_candidates: int, allow_duplicate: bool, call: str) -> None:
    if subject_id == "A1000001" and call == "DeleteSubject":
        subject_id = "A1000001-not"  # keep the reference the last check verifies against
    requests = {
        "Enroll": pb.EnrollRequest(subject_id=subject_id, info=pb.SubjectInfo(name=name, nationality=reason[:5]),
                                   samples=batch, allow_duplicate=allow_duplicate, override_reason=reason),
        "Verify": pb.VerifyRequest(subject_id=subject_id, samples=batch),
        "Identify": pb.IdentifyRequest(samples=batch, max_candidates=max_candidates),
        "GetSubject": pb.GetSubjectRequest(subject_id=subject_id),
        "DeleteSubject": pb.DeleteSubjectRequest(subject_id=subject_id, reason=reason),
        "CaptureFace": pb.CaptureRequest(device=name, timeout_seconds=float(max_candidates)),
        "ListDevices": pb.ListDevicesRequest(),
    }
    answer(getattr(stub, call), requests[call], "fields")


def _serialised_requests() -> list[bytes]:
    sample = pb.Sample(modality=pb.FACE, image=FACE_JPEG[:2000])
    return [
        pb.VerifyRequest(subject_id="A1000001", samples=[sample]).SerializeToString(),
        pb.EnrollRequest(subject_id="Z1", info=pb.SubjectInfo(name="x"), samples=[sample]).SerializeToString(),
        pb.IdentifyRequest(samples=[sample, sample], max_candidates=3).SerializeToString(),
        pb.DeleteSubjectRequest(subject_id="NOBODY", reason="r").SerializeToString(),
    ]


wire = st.one_of(
    st.binary(max_size=2048),
    st.sampled_from(_serialised_requests()).flatmap(mutated),
    st.lists(st.tuples(st.integers(1, 20), st.integers(0, 5), st.binary(max_size=64)), max_size=8).map(
        lambda fields: b"".join(bytes([(n << 3) | (t % 6)]) + (bytes([len(v)]) + v if t % 6 == 2 else v[:8])
                                for n, t, v in fields)),
)


@pytest.mark.slow
@settings(FUZZ, max_examples=1200)
@given(method=st.sampled_from(METHODS), payload=wire)
def test_random_protobuf_bytes_on_the_wire_get_clean_statuses(raw, method: str, payload: bytes) -> None:
    answer(raw[method], payload, "wire")


def test_oversized_messages_and_images_are_resource_exhausted(server: ServerProcess) -> None:
    stub = server.stub()
    big = pb.Sample(modality=pb.FACE, image=b"\xff\xd8\xff" + bytes(9_000_000))
    assert answer(stub.Verify, pb.VerifyRequest(subject_id="A1000001", samples=[big]), "large") == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    huge_message = pb.Sample(modality=pb.FACE, image=bytes(17 * 1024 * 1024))
    assert answer(stub.Verify, pb.VerifyRequest(subject_id="A1000001", samples=[huge_message]), "large") == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    bomb = png_declaring(30_000, 30_000, b"")
    assert answer(stub.Identify, pb.IdentifyRequest(samples=[pb.Sample(modality=pb.FACE, image=bomb)]), "large") == \
        grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_server_survived_and_still_verifies(server: ServerProcess) -> None:
    """Runs last in this module: after everything above, the same process still serves a genuine probe."""
    if {"image", "fields", "wire"} <= SENT.keys():  # the whole module ran (not a -k selection)
        assert sum(SENT.values()) >= 2000, f"only {sum(SENT.values())} requests: {dict(SENT)}"
        # The mutations reach every depth: refused at the header, and decoded into images that were matched.
        for expected in (("image", "OK"), ("image", "INVALID_ARGUMENT"), ("image", "RESOURCE_EXHAUSTED"),
                         ("wire", "INVALID_ARGUMENT"), ("fields", "INVALID_ARGUMENT")):
            assert CODES[expected], f"no {expected} among {dict(CODES)}"
        print(dict(CODES))
    assert server.proc is not None and server.proc.poll() is None
    r = server.stub().Verify(pb.VerifyRequest(subject_id="A1000001",
                                              samples=[face_sample("Megawati_Sukarnoputri_0002.jpg")]), timeout=60)
    assert r.match
    log = "".join(server.output)
    assert "Traceback" not in log, log[-4000:]
