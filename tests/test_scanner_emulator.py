"""The unmodified pyfingerprint, through devices.scanner, talking to the ZFM emulator on a real pty."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from waiting import wait_until

from devices.errors import (
    DeviceBusy,
    DeviceCorruptData,
    DeviceDisconnected,
    DevicePortMissing,
    DeviceSilent,
    DeviceTimeout,
    DeviceWrongPassword,
    FingerNotLifted,
)
from devices.scanner import FingerprintScanner
from devices.sensor_image import fit_to_sensor, list_images, load_grey
from devices.zfm_emulator import Fault, ZfmEmulator
from devices.zfm_protocol import ERROR_NO_FINGER, OK, pack_4bit, quantize_4bit, unpack_4bit

DATA = Path(__file__).parent / "data" / "scanner"
FAST = {"byte_timeout_s": 0.3, "poll_interval_s": 0.02}


@pytest.fixture
def emulator():
    with ZfmEmulator(DATA) as emu:
        yield emu


@pytest.fixture
def scanner(emulator):
    device = FingerprintScanner(emulator.port, **FAST)
    yield device
    device.close()


def test_capture_returns_each_served_image_after_4bit_packing(emulator, scanner):
    files = list_images(DATA)
    assert len(files) == 5
    for expected_file in files:
        image = scanner.capture(timeout_s=5)
        assert emulator.served[-1] == expected_file  # served in turn
        assert image.shape == (288, 256) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, quantize_4bit(emulator.sensor_image(expected_file)))
    assert scanner.capture(timeout_s=5).shape == (288, 256)
    assert emulator.served[-1] == files[0]  # and around again


@pytest.mark.parametrize("packet_size", [32, 256])
def test_download_is_exact_for_other_packet_sizes(packet_size):
    with ZfmEmulator(DATA, packet_size=packet_size) as emu:
        scanner = FingerprintScanner(emu.port, **FAST)
        try:
            assert scanner.parameters()["packet_size"] == str(packet_size)
            image = scanner.capture(timeout_s=5)
        finally:
            scanner.close()
        np.testing.assert_array_equal(image, quantize_4bit(emu.sensor_image(emu.served[-1])))


def test_sensor_parameters_are_reported(scanner):
    params = scanner.parameters(refresh=True)
    assert params["port"] == scanner.port
    assert params["baud_rate"] == "57600"
    assert params["address"] == "0xFFFFFFFF"
    assert params["packet_size"] == "128"
    assert params["security_level"] == "3"
    assert params["storage_capacity"] == "1000"


def test_address_and_password_are_used():
    with ZfmEmulator(DATA, address=0x12345678, password=0x0BADCAFE) as emu:
        good = FingerprintScanner(emu.port, address=0x12345678, password=0x0BADCAFE, **FAST)
        wrong_password = FingerprintScanner(emu.port, address=0x12345678, password=0, **FAST)
        wrong_address = FingerprintScanner(emu.port, password=0x0BADCAFE, **FAST)
        try:
            assert good.parameters()["address"] == "0x12345678"
            assert good.capture(timeout_s=5).shape == (288, 256)
            with pytest.raises(DeviceWrongPassword, match="password"):
                wrong_password.connect()
            with pytest.raises(DeviceSilent, match="does not answer"):  # a sensor ignores other addresses
                wrong_address.connect()
        finally:
            for device in (good, wrong_password, wrong_address):
                device.close()


def test_images_are_fitted_to_the_sensor_window_at_500_dpi():
    tiff = DATA / "DB2_B_104_1.tif"
    grey, dpi = load_grey(tiff)
    assert dpi == pytest.approx(569)
    assert grey.shape == (560, 296)
    fitted = fit_to_sensor(grey, dpi)
    assert fitted.shape == (288, 256)
    # 560 rows at 569 dpi are 492 rows at 500 dpi: the middle 288 are kept, not squeezed.
    centre = grey[280 - 20 : 280 + 20, 148 - 20 : 148 + 20].astype(float)
    fitted_centre = fit_to_sensor(grey, 569)[144 - 17 : 144 + 18, 128 - 17 : 128 + 18].astype(float)
    assert abs(centre.mean() - fitted_centre.mean()) < 12
    small = np.zeros((100, 80), dtype=np.uint8)  # padded with the empty (white) platen
    padded = fit_to_sensor(small)
    assert padded[0, 0] == 255 and padded[144, 128] == 0 and (padded == 0).sum() == 100 * 80


def test_4bit_packing_round_trip():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(288, 256), dtype=np.uint8)
    packed = pack_4bit(image)
    assert len(packed) == 288 * 128
    assert packed[0] >> 4 == image[0, 0] >> 4 and packed[0] & 0x0F == image[0, 1] >> 4
    np.testing.assert_array_equal(unpack_4bit(packed), quantize_4bit(image))


def test_pyfingerprint_writes_the_same_image_as_the_driver_returns(emulator, tmp_path):
    """The raw library, without the driver: its downloadImage file is the served image, 4-bit."""
    from pyfingerprint.pyfingerprint import PyFingerprint

    sensor = PyFingerprint(emulator.port, 57600, 0xFFFFFFFF, 0x00000000)
    assert sensor.verifyPassword()
    assert sensor.readImage()
    sensor.downloadImage(str(tmp_path / "finger.png"))
    written = np.asarray(Image.open(tmp_path / "finger.png"))
    np.testing.assert_array_equal(written, quantize_4bit(emulator.sensor_image(emulator.served[-1])))
    del sensor


# -- faults: each gives its own error, and the scanner recovers once the fault is gone --------------


def test_no_finger_times_out(emulator, scanner):
    emulator.inject(Fault.NO_FINGER)
    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match="no finger"):
        scanner.capture(timeout_s=0.4)
    assert 0.3 < time.monotonic() - started < 3
    assert scanner.connected  # a timeout is not a fault of the line
    emulator.clear(Fault.NO_FINGER)
    assert scanner.capture(timeout_s=5).shape == (288, 256)


def test_silent_sensor(emulator, scanner):
    scanner.connect()
    emulator.inject(Fault.SILENT)
    with pytest.raises(DeviceSilent, match="does not answer"):
        scanner.capture(timeout_s=5)
    assert not scanner.connected
    emulator.clear(Fault.SILENT)
    assert scanner.capture(timeout_s=5).shape == (288, 256)


def test_silent_sensor_at_connect(emulator, scanner):
    emulator.inject(Fault.SILENT)
    with pytest.raises(DeviceSilent):
        scanner.connect()


def test_bad_checksum(emulator, scanner):
    scanner.connect()
    emulator.inject(Fault.BAD_CHECKSUM)
    with pytest.raises(DeviceCorruptData, match="bad packet"):
        scanner.capture(timeout_s=5)
    emulator.clear(Fault.BAD_CHECKSUM)
    assert scanner.capture(timeout_s=5).shape == (288, 256)


def test_wrong_password(emulator, scanner):
    emulator.inject(Fault.WRONG_PASSWORD)
    with pytest.raises(DeviceWrongPassword, match="refused the password"):
        scanner.capture(timeout_s=5)
    emulator.clear(Fault.WRONG_PASSWORD)
    assert scanner.capture(timeout_s=5).shape == (288, 256)


def test_unplugged_mid_session_then_missing_then_back(emulator, scanner):
    scanner.connect()
    emulator.inject(Fault.UNPLUGGED)
    with pytest.raises(DeviceDisconnected, match="disconnected"):
        scanner.capture(timeout_s=5)
    with pytest.raises(DevicePortMissing, match="not found"):
        scanner.capture(timeout_s=5)
    emulator.clear(Fault.UNPLUGGED)
    assert scanner.capture(timeout_s=5).shape == (288, 256)


def test_a_scanner_plugged_back_in_while_idle_serves_the_next_capture(emulator, scanner):
    """Review: unplugged and plugged back in with no call in between, the scanner kept the dead port, and the next
    traveller's capture failed "disconnected" although the scanner was connected again. The capture's first
    command failing on a connection of an earlier call drops it and connects once more."""
    assert scanner.capture(timeout_s=5).shape == (288, 256)  # a traveller: the connection is open
    emulator.inject(Fault.UNPLUGGED)
    emulator.clear(Fault.UNPLUGGED)  # back in, while nobody used the scanner
    served = len(emulator.served)
    assert scanner.capture(timeout_s=5).shape == (288, 256)
    assert len(emulator.served) == served + 1 and scanner.last_error is None


def test_missing_port(tmp_path):
    scanner = FingerprintScanner(str(tmp_path / "ttyUSB9"), **FAST)
    with pytest.raises(DevicePortMissing, match="not found"):
        scanner.capture(timeout_s=1)


def test_second_concurrent_capture_is_refused_as_busy(emulator, scanner):
    emulator.inject(Fault.NO_FINGER)
    first_error: list[Exception] = []

    def first() -> None:
        try:
            scanner.capture(timeout_s=1.5)
        except Exception as exc:
            first_error.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    wait_until(lambda: scanner.lock.busy, timeout=10, message="the first capture to hold the scanner")
    with pytest.raises(DeviceBusy, match="busy"):
        scanner.capture(timeout_s=0.2)
    worker.join()
    assert len(first_error) == 1 and isinstance(first_error[0], DeviceTimeout)


def test_a_placed_finger_is_served_next_then_the_turn_resumes(emulator, scanner):
    files = list_images(DATA)
    emulator.place(files[3])
    first = scanner.capture(timeout_s=5)
    second = scanner.capture(timeout_s=5)
    assert emulator.served == [files[3], files[0]]
    np.testing.assert_array_equal(first, quantize_4bit(emulator.sensor_image(files[3])))
    np.testing.assert_array_equal(second, quantize_4bit(emulator.sensor_image(files[0])))


def test_emulator_stops_cleanly():
    emu = ZfmEmulator(DATA).start()
    port = emu.port
    assert Path(port).exists()
    emu.stop()
    assert not Path(port).exists() and not emu.plugged
    emu.stop()  # idempotent


def test_emulator_refuses_an_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no PNG or TIFF"):
        ZfmEmulator(tmp_path)


def test_console_commands_inject_clear_and_place(emulator, capsys):
    from devices.zfm_emulator import _command

    assert _command(emulator, "silent")
    assert _command(emulator, "no_finger")
    assert emulator.faults == {Fault.SILENT, Fault.NO_FINGER}
    assert _command(emulator, "clear silent") and emulator.faults == {Fault.NO_FINGER}
    assert _command(emulator, "clear") and emulator.faults == set()
    assert _command(emulator, "unplugged") and not emulator.plugged
    assert _command(emulator, "clear unplugged") and emulator.plugged
    assert _command(emulator, "place " + str(DATA / "DB4_B_102_1.png"))
    assert _command(emulator, "status")
    assert "faults: none; finger on the sensor: none" in capsys.readouterr().out
    assert _command(emulator, "frobnicate") and "commands:" in capsys.readouterr().out
    assert not _command(emulator, "quit")


@pytest.mark.parametrize("timeout_s", [float("inf"), 1e9])
def test_the_scanner_never_waits_longer_than_the_capture_bound(monkeypatch, emulator, scanner, timeout_s):
    import devices.timeouts

    monkeypatch.setattr(devices.timeouts, "MAX_CAPTURE_TIMEOUT_S", 0.5)
    emulator.inject(Fault.NO_FINGER)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            scanner.capture(timeout_s=timeout_s)
        except BaseException as exc:  # reported to the test
            raised.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(15)
    assert len(raised) == 1 and isinstance(raised[0], DeviceTimeout), raised
    assert "within 0.5 s" in str(raised[0])
    assert time.monotonic() - started < 10
    assert not scanner.lock.busy


@pytest.mark.parametrize("default_s", [0.0, float("nan"), float("inf"), 600.0])
def test_a_scanner_default_timeout_must_be_within_the_bound(default_s):
    with pytest.raises(ValueError, match="default capture timeout"):
        FingerprintScanner("/dev/null", default_timeout_s=default_s)


def test_a_short_image_upload_is_corrupt_data_not_a_refusal(monkeypatch, emulator, scanner):
    """A sensor that ends its image upload early makes pyfingerprint index past its data (IndexError): a damaged
    transfer (UNAVAILABLE, try again), not the sensor refusing (FAILED_PRECONDITION); nothing of the port or of
    pyfingerprint reaches the kiosk's message."""
    from devices import zfm_emulator
    from devices.errors import plain_message

    full = zfm_emulator.zfm.pack_4bit
    monkeypatch.setattr(zfm_emulator.zfm, "pack_4bit", lambda image: full(image)[:1000])
    with pytest.raises(DeviceCorruptData, match="incomplete") as short:
        scanner.capture(timeout_s=5)
    assert plain_message(short.value) == ("The fingerprint scanner is not working properly. Please try again, or "
                                          "call an officer.")
    monkeypatch.undo()
    assert scanner.capture(timeout_s=5).shape == (288, 256)  # reconnected, whole images again


# -- a finger stays on the sensor until it is lifted -----------------------------------------------------------


def _gen_img(sensor) -> bool:
    """One GenImg through the unmodified pyfingerprint: True when a finger was imaged."""
    return sensor.readImage()


def test_a_finger_held_down_is_imaged_until_it_is_lifted_then_the_sensor_is_empty():
    """As on a real ZFM sensor, GenImg answers OK for as long as the finger stays on the platen, each time with the
    same finger; then "no finger" while it is off; then the next finger."""
    from pyfingerprint.pyfingerprint import PyFingerprint

    files = list_images(DATA)
    with ZfmEmulator(DATA, hold_polls=3, lift_polls=2) as emu:
        sensor = PyFingerprint(emu.port, 57600, 0xFFFFFFFF, 0x00000000)
        assert sensor.verifyPassword()
        assert [_gen_img(sensor) for _ in range(7)] == [True, True, True, False, False, True, True]
        assert emu.served == [files[0]] * 3 + [files[1]] * 2
        assert emu.placements == [files[0], files[1]]
        assert emu.finger_on_sensor == files[1]  # held for one more capture
        from devices.zfm_emulator import _command

        assert _command(emu, "lift")  # the traveller lifts the finger early
        assert emu.finger_on_sensor is None
        assert [_gen_img(sensor) for _ in range(3)] == [False, False, True]
        assert emu.placements == files[:3]
        del sensor


def test_a_placed_finger_waits_for_the_one_on_the_sensor_to_be_lifted():
    from pyfingerprint.pyfingerprint import PyFingerprint

    files = list_images(DATA)
    with ZfmEmulator(DATA, hold_polls=2) as emu:
        sensor = PyFingerprint(emu.port, 57600, 0xFFFFFFFF, 0x00000000)
        assert sensor.verifyPassword()
        assert _gen_img(sensor)
        emu.place(files[4])
        assert [_gen_img(sensor) for _ in range(3)] == [True, False, True]
        assert emu.served == [files[0], files[0], files[4]]
        del sensor


def test_no_finger_fault_lifts_the_finger(emulator):
    from pyfingerprint.pyfingerprint import PyFingerprint

    emulator.hold_polls = 100
    sensor = PyFingerprint(emulator.port, 57600, 0xFFFFFFFF, 0x00000000)
    assert sensor.verifyPassword()
    assert _gen_img(sensor) and emulator.finger_on_sensor is not None
    emulator.inject(Fault.NO_FINGER)
    assert emulator.finger_on_sensor is None and not _gen_img(sensor)
    assert emulator.gen_img_answers == [0x00, 0x02]
    del sensor


@pytest.mark.parametrize(("hold", "lift"), [(0, 1), (1, 0)])
def test_a_placement_lasts_and_a_lift_lasts_at_least_one_poll(hold, lift):
    with pytest.raises(ValueError, match="held for 1 or more"):
        ZfmEmulator(DATA, hold_polls=hold, lift_polls=lift)


# -- the driver takes each impression from a new placement -----------------------------------------------------


def test_three_impressions_with_the_finger_left_down_are_three_placements(caplog):
    """A traveller who keeps the finger on the sensor after each capture: the driver waits for it to be lifted
    (a "no finger" answer, and "lift your finger" in the log) before taking the next placement, so three
    impressions are three placements, never one placement imaged three times."""
    files = list_images(DATA)
    with ZfmEmulator(DATA, hold_polls=6, lift_polls=2) as emu:
        scanner = FingerprintScanner(emu.port, **FAST)
        try:
            with caplog.at_level("INFO", logger="devices.scanner"):
                images = [scanner.capture(timeout_s=5) for _ in range(3)]
        finally:
            scanner.close()
    assert emu.placements == files[:3]
    # Each impression is the first image of its placement; the driver then polled the finger still down (5 more
    # images of it) until the sensor answered "no finger" (2 polls), and took the next placement's first image.
    held, lifted = [OK] * 5, [ERROR_NO_FINGER] * 2
    assert emu.gen_img_answers == [OK, *held, *lifted, OK, *held, *lifted, OK]
    for image, file in zip(images, files, strict=False):
        np.testing.assert_array_equal(image, quantize_4bit(emu.sensor_image(file)))
    assert sum("lift your finger" in r.getMessage() for r in caplog.records) == 2


def test_a_finger_never_lifted_is_an_error_not_a_second_impression(caplog):
    with ZfmEmulator(DATA, hold_polls=10_000) as emu:
        scanner = FingerprintScanner(emu.port, **FAST)
        try:
            scanner.capture(timeout_s=5)
            with caplog.at_level("INFO", logger="devices.scanner"), pytest.raises(FingerNotLifted) as held:
                scanner.capture(timeout_s=0.5)
            assert "lift the finger, then place it again" in str(held.value)
            assert isinstance(held.value, DeviceTimeout) and scanner.connected  # the traveller's, not the line's
            assert emu.placements == list_images(DATA)[:1]  # one placement, taken once
            assert any("lift your finger" in r.getMessage() for r in caplog.records)
            emu.lift()  # the traveller lifts the finger at last and places the next one
            scanner.capture(timeout_s=5)
            assert emu.placements == list_images(DATA)[:2]
        finally:
            scanner.close()


def test_a_lifted_finger_is_not_waited_for(emulator, scanner):
    """The sensor already empty at the next capture: no lift is asked for, the next placement is taken."""
    scanner.capture(timeout_s=5)
    assert emulator.finger_on_sensor is None
    scanner.capture(timeout_s=5)
    assert emulator.gen_img_answers == [OK, ERROR_NO_FINGER, OK]


# -- a raw fingerprint never touches a disk ------------------------------------------------------------------

_WRITES: list[tuple[str, tuple]] = []  # what the audit hook saw while _RECORDING is set
_RECORDING = threading.Event()
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    if not _RECORDING.is_set():
        return
    if event == "open":
        path, mode, flags = args
        if isinstance(path, str | bytes) and ((mode and set(str(mode)) & set("wax+")) or flags & _WRITE_FLAGS):
            _WRITES.append((event, args))
    elif event in ("os.mkdir", "tempfile.mkdtemp", "tempfile.mkstemp", "os.rename", "os.link", "os.symlink"):
        _WRITES.append((event, args))


sys.addaudithook(_audit)  # inert unless a test sets _RECORDING


def test_a_capture_writes_no_file(monkeypatch, tmp_path, emulator, scanner):
    """README: raw images are never stored. The image upload is read into memory: while a finger is captured
    nothing is created in the system's temporary directory, nor opened for writing anywhere (review: every
    scanned finger was written as a PNG to a temporary directory, because pyfingerprint's downloadImage writes a
    file)."""
    scanner.connect()  # the port is opened before (read-write, as a serial port is)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    _WRITES.clear()
    _RECORDING.set()
    try:
        image = scanner.capture(timeout_s=5)
    finally:
        _RECORDING.clear()
    np.testing.assert_array_equal(image, quantize_4bit(emulator.sensor_image(emulator.served[-1])))
    assert _WRITES == []
    assert list(temp.iterdir()) == []


def test_a_bad_checksum_in_the_image_upload_is_corrupt_data(monkeypatch, emulator, scanner):
    from devices import zfm_emulator

    scanner.connect()
    sent = zfm_emulator.ZfmEmulator._send

    def damage_data(self, kind, payload):  # the line damages the image's data packets only
        if kind == zfm_emulator.zfm.DATA_PACKET:
            self.faults.add(Fault.BAD_CHECKSUM)
        try:
            return sent(self, kind, payload)
        finally:
            self.faults.discard(Fault.BAD_CHECKSUM)

    monkeypatch.setattr(zfm_emulator.ZfmEmulator, "_send", damage_data)
    with pytest.raises(DeviceCorruptData, match=r"bad packet \(the checksum is wrong\) \(sending the image\)"):
        scanner.capture(timeout_s=5)
    assert not scanner.connected
    monkeypatch.undo()
    with emulator._lock:  # the sensor has finished (or given up) sending the rest of the abandoned upload
        pass
    assert scanner.capture(timeout_s=5).shape == (288, 256)


class _Wire:
    """A serial port whose sensor has already answered with ``answer`` (bytes); records what the host wrote."""

    def __init__(self, answer: bytes) -> None:
        self.answer, self.written = bytearray(answer), b""

    @property
    def in_waiting(self) -> int:
        return len(self.answer)

    def read(self, size: int = 1) -> bytes:
        if not self.answer:
            raise TimeoutError("silent")
        chunk, self.answer = bytes(self.answer[:size]), self.answer[size:]
        return chunk

    def write(self, data: bytes) -> int:
        self.written += data
        return len(data)


def _answer(*packets: tuple[int, bytes]) -> bytes:
    from devices.zfm_protocol import DEFAULT_ADDRESS, encode_packet

    return b"".join(encode_packet(DEFAULT_ADDRESS, kind, payload) for kind, payload in packets)


def test_the_upload_reader_checks_what_the_sensor_sends():
    from devices.zfm_protocol import ACK_PACKET, DATA_PACKET, END_DATA_PACKET, ERROR_UPLOAD_IMAGE, IMAGE_BYTES
    from devices.zfm_upload import CorruptUpload, UploadRefused, upload_image

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(288, 256), dtype=np.uint8)
    packed = pack_4bit(image)
    whole = [(DATA_PACKET, packed[i : i + 256]) for i in range(0, IMAGE_BYTES - 256, 256)]
    wire = _Wire(_answer((ACK_PACKET, b"\x00"), *whole, (END_DATA_PACKET, packed[-256:])))
    np.testing.assert_array_equal(upload_image(wire), quantize_4bit(image))
    assert wire.written == bytes.fromhex("EF01 FFFFFFFF 01 0003 0A 000E")  # UpImage, as pyfingerprint sends it
    with pytest.raises(UploadRefused, match="0x0F"):
        upload_image(_Wire(_answer((ACK_PACKET, bytes([ERROR_UPLOAD_IMAGE])))))
    with pytest.raises(CorruptUpload, match="no acknowledgement"):
        upload_image(_Wire(_answer((DATA_PACKET, packed[:256]))))
    with pytest.raises(CorruptUpload, match="inside the image"):
        upload_image(_Wire(_answer((ACK_PACKET, b"\x00"), (ACK_PACKET, b"\x00"))))
    with pytest.raises(CorruptUpload, match="more than"):
        upload_image(_Wire(_answer((ACK_PACKET, b"\x00"), *whole, *whole)))
    with pytest.raises(CorruptUpload, match=r"incomplete image \(256 of"):
        upload_image(_Wire(_answer((ACK_PACKET, b"\x00"), (END_DATA_PACKET, packed[:256]))))
