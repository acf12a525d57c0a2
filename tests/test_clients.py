"""The desk and kiosk command lines against a live server: faces and fingerprints from files, captures."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, ServerProcess

from enroll import cli as desk
from verify import client as kiosk
from verify.channel import add_sample_arguments, samples_from_args

FACES = DATA / "faces"
FINGERS = DATA / "fingerprints"


def _samples(*argv: str) -> list[pb.Sample]:
    parser = argparse.ArgumentParser()
    add_sample_arguments(parser)
    return samples_from_args(parser.parse_args(list(argv)))


def test_sample_arguments_name_faces_fingers_and_captures():
    samples = _samples(str(FACES / "Hans_Blix_0001.jpg"), "--finger", f"right-index:{FINGERS / 'DB1_B_101_1.png'}",
                       "--finger", f"LEFT_THUMB:{FINGERS / 'DB1_B_102_1.png'}", "--scan", "7")
    assert [(s.modality, s.finger, s.WhichOneof("source")) for s in samples] == [
        (pb.FACE, 0, "image"), (pb.FINGERPRINT, pb.RIGHT_INDEX, "image"), (pb.FINGERPRINT, pb.LEFT_THUMB, "image"),
        (pb.FINGERPRINT, pb.LEFT_INDEX, "capture")]
    assert samples[1].image == (FINGERS / "DB1_B_101_1.png").read_bytes()
    assert [s.WhichOneof("source") for s in _samples("--camera")] == ["capture"]


@pytest.mark.parametrize("bad", ["toe:x.png", "right-index", "right-index:"])
def test_a_bad_finger_argument_is_refused_with_a_message(bad: str, capsys):
    with pytest.raises(SystemExit) as exit_info:
        kiosk.main(["verify", "P1", "--finger", bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--finger wants POSITION:FILE" in err or "unknown finger position 'toe'" in err


def test_no_sample_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        desk.main(["enrol", "P1"])
    assert "give face images" in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("clients")).start()
    yield proc
    proc.stop()


def test_enrol_and_verify_with_face_and_fingers_from_the_command_line(server: ServerProcess, capsys):
    target = ["--target", server.target]
    finger = lambda name: f"right-index:{FINGERS / name}"  # noqa: E731
    assert desk.main([*target, "enrol", "CLI0001", str(FACES / "Kofi_Annan_0001.jpg"),
                      "--finger", finger("DB1_B_101_1.png"), "--finger", finger("DB1_B_101_2.png"),
                      "--name", "Kofi Annan"]) == 0
    out = capsys.readouterr().out
    assert "enrolled CLI0001" in out and "(right-index)" in out and "(face)" in out

    assert kiosk.main([*target, "verify", "CLI0001", "--finger", finger("DB1_B_101_3.png")]) == 0
    assert capsys.readouterr().out.startswith("MATCH")
    assert kiosk.main([*target, "verify", "CLI0001", "--finger", finger("DB1_B_103_1.png")]) == 1
    assert capsys.readouterr().out.startswith("NO MATCH")

    assert kiosk.main([*target, "verify", "CLI0001", str(FACES / "Kofi_Annan_0004.jpg"),
                       "--finger", finger("DB1_B_101_3.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MATCH") and "face " in out and "fingerprint right-index " in out

    assert kiosk.main([*target, "identify", "--finger", finger("DB1_B_101_3.png")]) == 0
    assert "CLI0001 score" in capsys.readouterr().out


def test_a_scan_without_a_scanner_is_refused_with_the_servers_message(server: ServerProcess, capsys):
    assert kiosk.main(["--target", server.target, "verify", "CLI0001", "--scan", "right-index"]) == 2
    assert capsys.readouterr().out.startswith("refused: FAILED_PRECONDITION")


def test_paths_are_files(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        kiosk.main(["verify", "P1", "--finger", f"right-index:{tmp_path / 'missing.png'}"])
    assert "missing.png" in capsys.readouterr().err
