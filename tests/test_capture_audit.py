"""CaptureFace and CaptureFingerprint hand the caller a whole image from the station's devices: each one leaves
one record in the audit chain (who, which device and modality, the image's size), never the image."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, face
from servicer_calls import Call

from biometrics.imaging import decode_rgb
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Actor
from verify.roles import acting_as
from verify.servicer import CheckpointServicer

KIOSK = Actor(role="kiosk", identity="CN=kiosk-1,OU=kiosk,O=Checkpoint", extra={"common_name": "kiosk-1"})


class Devices:
    """The station's camera and scanner, each handing over a fixed image."""

    def __init__(self) -> None:
        self.face = decode_rgb(face("Kofi_Annan_0001.jpg"))
        self.finger = cv2.imread(str(DATA / "fingerprints" / "DB1_B_101_1.png"), cv2.IMREAD_GRAYSCALE)

    def default_device(self, modality: str) -> str:
        return {"face": "camera0", "fingerprint": "scanner0"}[modality]

    def capture_face(self, device: str, timeout_s: float, **limits: Any) -> np.ndarray:
        return self.face

    def capture_fingerprint(self, device: str, timeout_s: float, **limits: Any) -> np.ndarray:
        return self.finger


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CheckpointService]:
    s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    yield s
    s.close()


def audit_entries(service: CheckpointService) -> list[str]:
    return list(service.alert_store.audit_entries())


@pytest.mark.parametrize(("method", "modality", "device"), [("CaptureFace", "face", "camera0"),
                                                            ("CaptureFingerprint", "fingerprint", "scanner0")])
def test_a_capture_leaves_one_audit_record_without_the_image(service: CheckpointService, method: str,
                                                             modality: str, device: str) -> None:
    devices = Devices()
    servicer = CheckpointServicer(service, devices)
    before = len(audit_entries(service))
    with acting_as(KIOSK):
        answer = getattr(servicer, method)(pb.CaptureRequest(), Call())
    new = audit_entries(service)[before:]
    decisions = [json.loads(e) for e in new if json.loads(e).get("type") == "decision"]
    assert len(decisions) == 1, new
    record = decisions[0]
    assert record["kind"] == "capture"
    assert record["actor"]["identity"] == KIOSK.identity and record["actor"]["role"] == "kiosk"
    assert record["fields"] == {"modalities": [modality], "device": device, "width": answer.width,
                                "height": answer.height}
    pixels = devices.face if modality == "face" else devices.finger
    assert (answer.width, answer.height) == (pixels.shape[1], pixels.shape[0])
    text = "".join(new)
    assert len(text) < 2000  # an image, even a small one, would be far longer
    assert base64.b64encode(answer.image[:48]).decode()[:32] not in text
