"""devices.camera with fake captures: an OpenCV error in the middle of a read is a failed read (release, reopen,
then the camera reported disconnected), and a frame that is not 8-bit is refused as corrupt data instead of
being wrapped modulo 256 (16-bit) or truncated to 0 and 1 (float)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from devices.camera import Camera
from devices.errors import DeviceCorruptData, DeviceDisconnected


class FakeCapture:
    """A capture whose reads raise cv2.error ``failures`` times (a device gone), then return ``frame``."""

    def __init__(self, frame: np.ndarray, failures: int = 0) -> None:
        self.frame, self.failures, self.released = frame, failures, False

    def isOpened(self) -> bool:  # noqa: N802 (cv2.VideoCapture's name)
        return True

    def get(self, _prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True

    def read(self) -> tuple[bool, np.ndarray]:
        if self.failures:
            self.failures -= 1
            raise cv2.error("V4L2: select() timeout / device gone")
        return True, self.frame.copy()


def frame_of(dtype: type, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(7)
    shape = (48, 64, channels) if channels else (48, 64)
    return (rng.random(shape) * (65535 if dtype is np.uint16 else 255 if dtype is np.uint8 else 1)).astype(dtype)


def test_a_read_that_raises_is_a_failed_read_the_camera_reopens_then_reports_disconnected() -> None:
    made: list[FakeCapture] = []

    def factory(_source: object) -> FakeCapture:
        made.append(FakeCapture(frame_of(np.uint8), failures=10))
        return made[-1]

    camera = Camera("0", capture_factory=factory)
    try:
        with pytest.raises(DeviceDisconnected, match="stopped delivering frames"):
            camera.grab(timeout_s=2)
        assert len(made) == 2 and all(c.released for c in made) and not camera.is_open
        assert isinstance(camera.last_error, DeviceDisconnected)
    finally:
        camera.close()


def test_a_camera_whose_read_raised_once_recovers_on_the_reopened_source() -> None:
    made: list[FakeCapture] = []

    def factory(_source: object) -> FakeCapture:
        made.append(FakeCapture(frame_of(np.uint8), failures=1 if not made else 0))
        return made[-1]

    camera = Camera("0", capture_factory=factory)
    try:
        frame = camera.grab(timeout_s=2)
    finally:
        camera.close()
    assert camera.opens == 2 and made[0].released
    np.testing.assert_array_equal(frame, cv2.cvtColor(made[1].frame, cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint16, 3), (np.uint16, 0), (np.float32, 3), (np.uint8, 2)])
def test_a_frame_that_is_not_8_bit_grey_bgr_or_bgra_is_refused_as_corrupt(dtype: type, channels: int) -> None:
    camera = Camera("0", capture_factory=lambda _source: FakeCapture(frame_of(dtype, channels)))
    try:
        with pytest.raises(DeviceCorruptData, match=f"delivered a {np.dtype(dtype)} frame .*8-bit format"):
            camera.grab(timeout_s=2)
    finally:
        camera.close()


@pytest.mark.parametrize("channels", [0, 1, 3, 4])
def test_8_bit_frames_come_back_rgb(channels: int) -> None:
    frame = frame_of(np.uint8, channels)
    camera = Camera("0", capture_factory=lambda _source: FakeCapture(frame))
    try:
        rgb = camera.grab(timeout_s=2)
    finally:
        camera.close()
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3)
    if channels == 3:
        np.testing.assert_array_equal(rgb, frame[:, :, ::-1])
