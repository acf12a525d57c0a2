"""A kiosk's message about a device never carries the credentials of the device's configured source.

Review: the plain messages kiosks get for a device fault were masked (``redact_url``) only when they were the
officer's detail; the ones that keep the device's own words (busy, not configured, timed out) name the device as
configured, and went to the kiosk as they were. Here the station's camera is an RTSP stream named by its URL, user
and password included; the handlers are called in this process with the caller's identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from servicer_calls import Aborted, Call

from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Actor
from devices.camera import Camera
from devices.station import Station
from verify.roles import acting_as
from verify.servicer import CheckpointServicer

SOURCE = "rtsp://gate:s3cret@10.0.0.7:554/stream1"
MASKED = "rtsp://***@10.0.0.7:554/stream1"
KIOSK = Actor(role="kiosk", identity="CN=kiosk-1,OU=kiosk,O=Checkpoint")
OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint")


def never_opened(source: Any) -> Any:
    raise AssertionError("the camera is not opened by these calls")


@pytest.fixture
def camera() -> Iterator[Camera]:
    cam = Camera(SOURCE, name=SOURCE, capture_factory=never_opened)
    yield cam
    cam.close()


@pytest.fixture
def servicer(tmp_path: Path, camera: Camera) -> Iterator[CheckpointServicer]:
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    yield CheckpointServicer(service, Station(camera=camera))
    service.close()


def capture_refused(servicer: CheckpointServicer, method: str, device: str, actor: Actor) -> Aborted:
    """The refusal of a face capture (CaptureFace, or Verify with the camera's capture) within a call of 0.3 s."""
    if method == "CaptureFace":
        request: Any = pb.CaptureRequest(device=device)
    else:
        request = pb.VerifyRequest(subject_id="P1234567",
                                   samples=[pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(device=device))])
    with acting_as(actor), pytest.raises(Aborted) as refused:
        getattr(servicer, method)(request, Call(seconds=0.3))
    return refused.value


@pytest.mark.parametrize("method", ["CaptureFace", "Verify"])
def test_a_kiosk_told_the_camera_is_busy_is_not_told_its_password(servicer: CheckpointServicer, camera: Camera,
                                                                    method: str) -> None:
    with camera.lock.hold(1.0):  # another traveller's capture holds the camera
        refusal = capture_refused(servicer, method, "", KIOSK)
    assert refusal.code == grpc.StatusCode.UNAVAILABLE
    assert "s3cret" not in refusal.details and "gate:" not in refusal.details
    assert refusal.details == f"{MASKED} is busy with another capture; try again"


@pytest.mark.parametrize("method", ["CaptureFace", "Verify"])
def test_a_kiosk_asking_for_another_device_is_not_told_the_cameras_password(servicer: CheckpointServicer,
                                                                            method: str) -> None:
    for actor in (KIOSK, OFFICER):
        refusal = capture_refused(servicer, method, "camera1", actor)
        assert refusal.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "s3cret" not in refusal.details and "gate:" not in refusal.details, actor.role
        assert refusal.details == f"This station has no camera named 'camera1' (its devices: {MASKED}).", actor.role
