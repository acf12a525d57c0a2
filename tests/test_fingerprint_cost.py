"""What a fingerprint may cost the server: its size is capped near what a scanner gives, refused before any
extraction (review: a 2048 x 2048 ridge-pattern JPEG of 410 kB took 9.5 s to extract on the gRPC thread, and ten
per call, sixteen calls, held every admission slot for minutes)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, face, refused_at_start
from PIL import Image
from servicer_calls import Aborted, Call

import biometrics.service as service_module
from biometrics.errors import FingerprintTooLarge
from biometrics.imaging import MAX_FINGERPRINT_SAMPLE, ImageLimits
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Actor, Modality, Sample
from verify.roles import acting_as
from verify.servicer import CheckpointServicer

KIOSK = Actor(role="kiosk", identity="CN=kiosk-1,OU=kiosk,O=Checkpoint", extra={"common_name": "kiosk-1"})
SCANNED = (DATA / "fingerprints" / "DB1_B_101_1.png").read_bytes()  # FVC2002 DB1: 388 x 374


def ridges(side: int) -> bytes:
    """A JPEG of a ridge-like pattern ``side`` pixels square (the review's reproduction, 410 kB at 2048)."""
    y, x = np.mgrid[0:side, 0:side]
    pixels = (127 + 100 * np.sin(x / 3.0 + 5 * np.sin(y / 40.0))).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=30)
    return out.getvalue()


class CountingFaces:
    """A face extractor that only counts its calls (none is expected)."""

    def __init__(self) -> None:
        self.calls = 0

    def extract_face(self, image: Any, purpose: str = "probe") -> Any:
        self.calls += 1
        raise AssertionError("a face was extracted before the fingerprint's size was checked")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CheckpointService]:
    s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    yield s
    s.close()


@pytest.fixture
def fingers_extracted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the fingerprints the service extracts (the real extraction runs)."""
    sizes: list[int] = []
    real = service_module.extract_fingerprint

    def counting(grey: np.ndarray, **kwargs: Any) -> Any:
        sizes.append(int(grey.size))
        return real(grey, **kwargs)

    monkeypatch.setattr(service_module, "extract_fingerprint", counting)
    return sizes


def test_the_default_cap_holds_a_whole_finger_and_every_scanner_image() -> None:
    assert MAX_FINGERPRINT_SAMPLE == 800 * 800
    assert ImageLimits().max_fingerprint_sample == MAX_FINGERPRINT_SAMPLE
    for width, height in ((256, 288), (388, 374), (296, 560)):  # ZFM window, FVC2002 DB1 and DB2
        assert width * height < MAX_FINGERPRINT_SAMPLE / 2


@pytest.mark.parametrize("method", ["verify", "identify", "enrol"])
def test_an_oversized_fingerprint_is_refused_before_anything_is_extracted(
        service: CheckpointService, fingers_extracted: list[int], method: str) -> None:
    faces = service.extractor = CountingFaces()  # type: ignore[assignment]
    samples = [Sample(Modality.FACE, face("Megawati_Sukarnoputri_0001.jpg")),
               Sample(Modality.FINGERPRINT, SCANNED, 2), Sample(Modality.FINGERPRINT, ridges(2048), 2)]
    calls = {"verify": lambda: service.verify("P1234567", samples, actor=KIOSK),
             "identify": lambda: service.identify(samples, actor=KIOSK),
             "enrol": lambda: service.enrol("P1234567", service_module.SubjectInfo(name="A B"), samples)}
    started = time.perf_counter()
    with pytest.raises(FingerprintTooLarge, match=r"2048x2048 pixels.*800x800"):
        calls[method]()
    assert time.perf_counter() - started < 2.0  # the extraction of the large one alone took 9.5 s
    assert faces.calls == 0 and fingers_extracted == []


def test_a_kiosk_hears_invalid_argument_with_a_message_it_can_show(service: CheckpointService) -> None:
    servicer = CheckpointServicer(service)
    request = pb.VerifyRequest(subject_id="P1234567",
                               samples=[pb.Sample(modality=pb.FINGERPRINT, image=ridges(1024), finger=2)])
    with acting_as(KIOSK), pytest.raises(Aborted) as refused:
        servicer.Verify(request, Call())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details.startswith("The fingerprint image is 1024x1024 pixels; a fingerprint scanner")


def test_a_device_image_over_the_cap_is_refused_too(service: CheckpointService, fingers_extracted: list[int]) -> None:
    pixels = np.zeros((1000, 1000), np.uint8)
    with pytest.raises(FingerprintTooLarge, match="1000x1000"):
        service.identify([Sample(Modality.FINGERPRINT, pixels, 2)], actor=KIOSK)
    assert fingers_extracted == []


def test_the_cap_is_the_server_s_to_set(tmp_path: Path, fingers_extracted: list[int]) -> None:
    small = ServiceConfig(limits=ImageLimits(max_fingerprint_sample=100_000))
    s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"), config=small)
    try:
        with pytest.raises(FingerprintTooLarge, match="388x374"):
            s.identify([Sample(Modality.FINGERPRINT, SCANNED, 2)], actor=KIOSK)
    finally:
        s.close()
    assert fingers_extracted == []


@pytest.mark.parametrize("value", ["0", "4.3"])
def test_the_server_refuses_a_fingerprint_cap_out_of_range(tmp_path: Path, value: str) -> None:
    done = refused_at_start(tmp_path, "--max-fingerprint-megapixels", value)
    assert "--max-fingerprint-megapixels must be above 0 and at most 4.2" in done.stderr


@pytest.mark.parametrize("method", ["Verify", "Identify", "Enroll"])
def test_a_call_abandoned_during_its_extractions_stops_extracting(
        service: CheckpointService, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """The caller's deadline passes while the first of ten fingerprints is extracted: the handler extracts no
    other sample (before, it extracted all ten, holding its admission slot, then found the caller gone)."""
    call, extracted = Call(), []
    real = service_module.extract_fingerprint

    def deadline_passes(grey: np.ndarray, **kwargs: Any) -> Any:
        extracted.append(grey.shape)
        template = real(grey, **kwargs)
        call.expire()  # the caller gives up during the extraction
        return template

    monkeypatch.setattr(service_module, "extract_fingerprint", deadline_passes)
    samples = [pb.Sample(modality=pb.FINGERPRINT, image=SCANNED, finger=2) for _ in range(10)]
    requests = {"Verify": pb.VerifyRequest(subject_id="P1234567", samples=samples),
                "Identify": pb.IdentifyRequest(samples=samples),
                "Enroll": pb.EnrollRequest(subject_id="P1234567", info=pb.SubjectInfo(name="A B"), samples=samples)}
    actor = KIOSK if method != "Enroll" else Actor(role="officer", identity="CN=Siti Rahma,OU=officer")
    with acting_as(actor), pytest.raises(Aborted) as refused:
        getattr(CheckpointServicer(service), method)(requests[method], call)
    assert refused.value.code == grpc.StatusCode.CANCELLED
    assert len(extracted) == 1
    kinds = [json.loads(e).get("kind") for e in service.alert_store.audit_entries()]
    assert not {"verify", "identify", "enrol"} & set(kinds)  # nothing decided or stored
    assert not service.holds("P1234567")
