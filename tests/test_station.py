"""devices.station: the video camera and the emulated ZFM scanner behind the interface the server calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devices.errors import (
    DeviceNotConfigured,
    DevicePortMissing,
    DeviceSilent,
    DeviceUnavailable,
    InvalidCaptureRequest,
)
from devices.station import MAX_CAPTURE_TIMEOUT_S, Station, parse_scanner
from devices.zfm_emulator import Fault
from devices.zfm_protocol import quantize_4bit

DATA = Path(__file__).parent / "data"
VIDEO = DATA / "camera" / "fake_camera_Tony_Blair.avi"
PRINTS = DATA / "scanner"


@pytest.fixture
def station():
    s = Station.from_config(camera=str(VIDEO), scanner=f"emulator:{PRINTS}")
    s.scanner.byte_timeout_s = 0.3
    yield s
    s.close()


def test_parse_scanner():
    assert parse_scanner("/dev/ttyUSB0") == ("/dev/ttyUSB0", 57600)
    assert parse_scanner("/dev/ttyUSB0:115200") == ("/dev/ttyUSB0", 115200)


def test_lists_both_devices_ready(station):
    devices = {d.name: d for d in station.list_devices()}
    assert set(devices) == {"camera0", "scanner0"}
    camera, scanner = devices["camera0"], devices["scanner0"]
    assert (camera.modality, camera.state, camera.is_default) == ("face", "ready", True)
    assert camera.parameters["width"] == "640" and camera.parameters["kind"] == "file"
    assert (scanner.modality, scanner.state) == ("fingerprint", "ready")
    assert scanner.parameters["packet_size"] == "128" and scanner.parameters["emulator_images"] == "5"
    assert "emulated" in scanner.detail


def test_captures_from_both_devices(station):
    face = station.capture_face(timeout_s=5)
    assert face.dtype == np.uint8 and face.shape == (480, 640, 3)
    finger = station.capture_fingerprint("scanner0", timeout_s=5)
    assert finger.dtype == np.uint8 and finger.shape == (288, 256)
    served = station.emulator.served[-1]
    np.testing.assert_array_equal(finger, quantize_4bit(station.emulator.sensor_image(served)))


def test_default_device_names(station):
    assert station.default_device("face") == "camera0"
    assert station.default_device("fingerprint") == "scanner0"
    assert Station().default_device("face") == ""


def test_unknown_device_name(station):
    with pytest.raises(DeviceNotConfigured, match="no camera named 'scanner0'"):
        station.capture_face("scanner0")
    with pytest.raises(DeviceNotConfigured, match="no fingerprint scanner named 'camera9'"):
        station.capture_fingerprint("camera9")


def test_no_camera_configured():
    station = Station.from_config(camera=None, scanner=f"emulator:{PRINTS}")
    try:
        with pytest.raises(DeviceNotConfigured, match="no camera"):
            station.capture_face()
        assert [d.name for d in station.list_devices()] == ["scanner0"]
        assert station.capture_fingerprint(timeout_s=5).shape == (288, 256)
    finally:
        station.close()


def test_no_scanner_configured():
    station = Station.from_config(camera=str(VIDEO), scanner=None)
    try:
        with pytest.raises(DeviceNotConfigured, match="no fingerprint scanner"):
            station.capture_fingerprint()
    finally:
        station.close()


def test_face_path_keeps_serving_when_the_scanner_is_gone(station):
    station.emulator.inject(Fault.UNPLUGGED)
    with pytest.raises(DeviceUnavailable):
        station.capture_fingerprint(timeout_s=2)
    states = {d.name: d.state for d in station.list_devices()}
    assert states == {"camera0": "ready", "scanner0": "disconnected"}
    assert station.capture_face(timeout_s=5).shape == (480, 640, 3)
    station.emulator.clear(Fault.UNPLUGGED)
    assert {d.name: d.state for d in station.list_devices()}["scanner0"] == "ready"
    assert station.capture_fingerprint(timeout_s=5).shape == (288, 256)


def test_a_silent_scanner_is_a_fault(station):
    station.emulator.inject(Fault.SILENT)
    with pytest.raises(DeviceSilent):
        station.capture_fingerprint(timeout_s=2)
    scanner = {d.name: d for d in station.list_devices()}["scanner0"]
    assert scanner.state == "fault" and "does not answer" in scanner.detail


def test_missing_camera_and_port_are_reported_not_raised_at_start(tmp_path):
    station = Station.from_config(camera=str(tmp_path / "none.avi"), scanner=str(tmp_path / "ttyUSB7:115200"))
    try:
        devices = {d.name: d for d in station.list_devices()}
        assert devices["camera0"].state == "disconnected" and "not found" in devices["camera0"].detail
        assert devices["scanner0"].state == "disconnected"
        assert devices["scanner0"].parameters["baud_rate"] == "115200"
        with pytest.raises(DevicePortMissing):
            station.capture_face(timeout_s=1)
    finally:
        station.close()


def test_emulator_folder_must_exist(tmp_path):
    from devices.station import DeviceSettingError

    with pytest.raises(DeviceSettingError, match=r"--scanner emulator:.*: fingerprint image folder not found"):
        Station.from_config(camera=None, scanner=f"emulator:{tmp_path / 'absent'}")


@pytest.mark.parametrize("timeout_s", [float("inf"), float("-inf"), float("nan"), -1.0, 60.5, 1e9])
def test_a_capture_timeout_out_of_bounds_is_refused_before_any_device_is_touched(station, timeout_s):
    station.camera.close()
    station.scanner.close()
    opens = station.camera.opens
    with pytest.raises(InvalidCaptureRequest, match=r"from 0 .* to 60 seconds"):
        station.capture_face(timeout_s=timeout_s)
    with pytest.raises(InvalidCaptureRequest, match=r"from 0 .* to 60 seconds"):
        station.capture_fingerprint(timeout_s=timeout_s)
    assert not station.camera.is_open and station.camera.opens == opens
    assert not station.scanner.connected
    assert not station.camera.lock.busy and not station.scanner.lock.busy
    # the devices are not at fault: they stay ready, and a valid request captures
    assert {d.name: d.state for d in station.list_devices()} == {"camera0": "ready", "scanner0": "ready"}
    assert station.capture_fingerprint(timeout_s=5).shape == (288, 256)


def test_the_timeout_bounds_themselves_are_accepted(station):
    assert MAX_CAPTURE_TIMEOUT_S == 60.0
    assert station.capture_face(timeout_s=0).shape == (480, 640, 3)  # 0: the camera's default
    assert station.capture_fingerprint(timeout_s=MAX_CAPTURE_TIMEOUT_S).shape == (288, 256)


def test_a_bad_timeout_is_refused_even_with_no_such_device():
    """The request is checked first: a kiosk learns what is wrong with what it sent."""
    with pytest.raises(InvalidCaptureRequest):
        Station().capture_face(timeout_s=float("inf"))


def test_the_device_bound_is_the_core_bound():
    from biometrics.validation import MAX_CAPTURE_TIMEOUT_S as CORE_MAX

    assert MAX_CAPTURE_TIMEOUT_S == CORE_MAX


def test_an_invalid_capture_request_is_answered_invalid_argument() -> None:
    import grpc

    from verify.status import status_for

    assert status_for(InvalidCaptureRequest("The capture timeout must be ...")) == grpc.StatusCode.INVALID_ARGUMENT


def test_the_start_up_log_never_shows_a_cameras_credentials(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="devices.station"):
        station = Station.from_config(camera="rtsp://admin:s3cret@127.0.0.1:9/stream?user=admin&pwd=s3cret",
                                      scanner=None)
    try:
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "camera0" in logged, logged
        assert "s3cret" not in logged and "admin:" not in logged, logged
    finally:
        station.close()
