"""A fingerprint's size is checked before it costs memory: from bytes (the header, before decoding) and from a
decoded array (its shape, before any float32 conversion), against a fingerprint pixel cap of 4.2 MP."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, ServerProcess

from biometrics.errors import InvalidSample, SampleTooLarge
from biometrics.fingerprint import extract_fingerprint, fingerprint_quality
from biometrics.imaging import DEFAULT_LIMITS, MAX_FINGERPRINT_PIXELS, ImageLimits, decode_grey

# 4800 x 4800 = 23 MP: under the general 24 MP cap, so only a fingerprint cap refuses it; zeros compress
# to about 30 kB, and the pipeline held it as about 140 MB (uint8, float32, masks) before refusing its size.
SIDE = 4800
MB = 1_000_000


@pytest.fixture(scope="module")
def bomb() -> bytes:
    ok, png = cv2.imencode(".png", np.zeros((SIDE, SIDE), np.uint8))
    assert ok and len(png) < 100_000
    return png.tobytes()


def _peak(call, *args, **kwargs) -> tuple[BaseException, int]:
    """What ``call`` raised and the peak memory it allocated (bytes, tracemalloc: numpy arrays included)."""
    tracemalloc.start()
    try:
        call(*args, **kwargs)
    except Exception as exc:  # the refusal under test
        raised = exc
    else:
        raise AssertionError(f"{call.__name__} accepted the image")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


def _service_path(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> None:
    """What the service does with a FINGERPRINT sample's bytes."""
    extract_fingerprint(decode_grey(data, limits))


def test_the_fingerprint_cap_is_4_megapixels_and_a_real_capture_is_well_under_it() -> None:
    assert MAX_FINGERPRINT_PIXELS == 2048 * 2048
    grey = decode_grey((DATA / "fingerprints" / "DB1_B_101_1.png").read_bytes())
    assert grey.size < MAX_FINGERPRINT_PIXELS / 10
    assert len(extract_fingerprint(grey).minutiae) > 10  # the cap does not get in the way of a real capture


def test_a_compressible_png_over_the_fingerprint_cap_is_refused_before_decoding(bomb: bytes) -> None:
    raised, peak = _peak(_service_path, bomb)
    assert isinstance(raised, SampleTooLarge), raised
    assert f"{SIDE}x{SIDE}" in str(raised) and "megapixels" in str(raised)
    assert peak < 1 * MB  # nothing decoded


def test_the_fingerprint_cap_is_a_limit_the_server_can_set(bomb: bytes) -> None:
    small = ImageLimits(max_fingerprint_pixels=100_000)
    png = cv2.imencode(".png", np.zeros((400, 400), np.uint8))[1].tobytes()
    with pytest.raises(SampleTooLarge, match="400x400"):
        decode_grey(png, small)
    assert decode_grey(png).shape == (400, 400)


@pytest.mark.parametrize("shape, dtype", [
    ((SIDE, SIDE), np.uint8),        # a decoded image handed over as it is (a device's frame)
    ((2500, 2500, 3), np.float64),   # colour, float: would be converted twice before any size check
])
def test_an_oversized_array_is_refused_before_any_conversion(shape, dtype) -> None:
    pixels = np.zeros(shape, dtype)
    for call in (extract_fingerprint, fingerprint_quality):
        raised, peak = _peak(call, pixels)
        assert isinstance(raised, SampleTooLarge), raised
        assert peak < 1 * MB, (call.__name__, peak)


def test_a_wrong_shape_under_the_cap_is_refused_before_any_conversion() -> None:
    pixels = np.zeros((500, 3000), np.uint8)  # 1.5 MP, but 3000 pixels wide: not a fingerprint at 500 dpi
    raised, peak = _peak(extract_fingerprint, pixels)
    assert isinstance(raised, InvalidSample) and "expected sides between" in str(raised)
    assert peak < 1 * MB


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.server
def test_ten_compressible_pngs_in_one_request_cost_the_server_nothing(tmp_path, bomb: bytes) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        stub = server.stub()
        before = _peak_rss_kb(server.proc.pid)
        samples = [pb.Sample(modality=pb.FINGERPRINT, image=bomb, finger=2) for _ in range(10)]
        for call, request in ((stub.Verify, pb.VerifyRequest(subject_id="IDN0000001", samples=samples)),
                              (stub.Identify, pb.IdentifyRequest(samples=samples))):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
            assert "megapixels" in refused.value.details()
        grown_mb = (_peak_rss_kb(server.proc.pid) - before) / 1000
        assert grown_mb < 40, f"the server's peak memory grew by {grown_mb:.0f} MB"
    finally:
        assert server.stop() == 0
