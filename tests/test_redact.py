"""Credentials masked in what is shown or logged (biometrics.redact), whatever a URL's password holds.

Review: a password holding a space, ``?``, ``#`` or ``/`` came back whole (``rtsp://admin:pa ss@10.0.0.7/s``
unchanged), and a camera's errors quote its source as configured.
"""

from __future__ import annotations

import pytest

from biometrics.redact import MASK, redact_url, redact_url_and_secret, url_password
from devices.camera import Camera
from devices.errors import DeviceError
from verify.convert import redact_url as convert_redact_url

PASSWORDS = ("pa ss", "pa?ss", "pa#ss", "pa/ss", "p@ss", "p@ s/?#x@y", "a:b", "ends with space ", "?", "/x://y#")


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_is_masked_whatever_it_holds(password: str) -> None:
    url = f"rtsp://admin:{password}@10.0.0.7:554/stream1?profile=1"
    assert redact_url(url) == "rtsp://***@10.0.0.7:554/stream1?profile=1"
    message = f"camera camera0 cannot open stream {url} (timeout)"
    assert redact_url(message) == ("camera camera0 cannot open stream rtsp://***@10.0.0.7:554/stream1?profile=1"
                                   " (timeout)")


@pytest.mark.parametrize(("text", "masked"), [
    # two URLs on a line, each with its own password: each masked, the text between them kept
    ("rtsp://a:x y@h1/s and rtsp://b:p/q@h2/t", "rtsp://***@h1/s and rtsp://***@h2/t"),
    ("'rtsp://a:x?y@h1/s', 'http://b:p#q@h2/t'", "'rtsp://***@h1/s', 'http://***@h2/t'"),
    ("rtsp://u:p w@h/s\nrtsp://v:q@h2/t", "rtsp://***@h/s\nrtsp://***@h2/t"),
    # a user name alone, or holding an @ (an e-mail address as the user name)
    ("http://admin@cam.local/video", "http://***@cam.local/video"),
    ("rtsp://ops@example.org:pa ss@cam/s", "rtsp://***@cam/s"),
])
def test_every_userinfo_is_masked(text: str, masked: str) -> None:
    assert redact_url(text) == masked


@pytest.mark.parametrize("text", [
    "rtsp://10.0.0.7:554/stream1",
    "rtsp://cam.local/s failed; mail ops@example.org",  # an @ after the path is no userinfo
    "http://cam/a b?c#d@e",
    "rtsp://cam/s\nadmin:x@y",  # nor one on the next line
    "a@b.example is not a URL",
    "/dev/video0",
])
def test_a_url_without_userinfo_is_left_alone(text: str) -> None:
    assert redact_url(text) == text


def test_an_ambiguous_text_is_masked_more_never_less() -> None:
    # host:port then an @ on the line reads as user:password@host; what is shown loses the host, not a secret
    assert redact_url("rtsp://10.0.0.7:554/s failed, ask admin@corp") == "rtsp://***@corp"


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_driver_message_quoting_the_password_alone_is_masked(password: str) -> None:
    url = f"postgresql://checkpoint:{password}secret@db.local/register"
    assert url_password(url) == f"{password}secret"
    text = redact_url_and_secret(f"{url}: bad password {password}secret", url)
    assert f"{password}secret" not in text and text.startswith(f"postgresql://{MASK}@db.local/register")


class _Closed:
    """A capture that never opens (a stream that refuses the connection)."""

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return False

    def release(self) -> None:
        pass


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_camera_error_reaches_a_caller_masked(password: str) -> None:
    """The servicer masks a device's error with verify.convert.redact_url before any caller sees it."""
    source = f"rtsp://admin:{password}@10.0.0.7/s"
    camera = Camera(source, capture_factory=lambda _source: _Closed())
    try:
        with pytest.raises(DeviceError) as refused:
            camera.open(timeout_s=2.0)
    finally:
        camera.close()
    assert source in str(refused.value)  # the device's own words name its source as configured
    shown = convert_redact_url(str(refused.value))
    assert shown == "camera camera0 cannot open stream rtsp://***@10.0.0.7/s"
