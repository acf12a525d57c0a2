"""The desk and kiosk command lines against a live server: faces and fingerprints from files, captures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, ServerProcess

from enroll import cli as desk
from verify import client as kiosk
from verify.channel import add_channel_arguments, add_sample_arguments, channel_credentials_for, samples_from_args
from verify.tls import TLSConfigError

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


def test_face_images_and_the_camera_are_all_sent(capsys):
    """review: `enrol DOC photo.jpg --camera` silently dropped photo.jpg; every face named is sent (the server
    combines them, and refuses faces of two people), as the help says."""
    photo = FACES / "Hans_Blix_0001.jpg"
    for parser in (desk.build_parser(), kiosk.build_parser()):
        command = ["enrol", "P1"] if parser.prog == "checkpoint-enroll" else ["verify", "P1"]
        samples = samples_from_args(parser.parse_args([*command, str(photo), "--camera"]))
        assert [(s.modality, s.WhichOneof("source")) for s in samples] == [(pb.FACE, "image"), (pb.FACE, "capture")]
        assert samples[0].image == photo.read_bytes()
    with pytest.raises(SystemExit):
        desk.main(["enrol", "--help"])
    assert "face images given too are sent with the capture" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("bad", "message"), [("toe:x.png", "unknown finger position 'toe'"),
                                              ("right-index", "--finger wants POSITION:FILE"),
                                              ("right-index:", "--finger wants POSITION:FILE")])
def test_a_bad_finger_argument_is_refused_with_a_message(bad: str, message: str, capsys):
    with pytest.raises(SystemExit) as exit_info:
        kiosk.main(["verify", "P1", "--finger", bad])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_sample_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        desk.main(["enrol", "P1"])
    assert "give face images" in capsys.readouterr().err


def test_attempts_without_a_scanned_finger_is_a_usage_error(capsys):
    """A second attempt takes the finger again from the scanner: with files only it would resend the same."""
    with pytest.raises(SystemExit) as exit_info:
        kiosk.main(["verify", "P1", "--finger", f"right-index:{FINGERS / 'DB1_B_101_2.png'}", "--attempts", "2"])
    assert exit_info.value.code == 2
    assert "--attempts takes the finger again from the scanner" in capsys.readouterr().err
    for bad in ("4", "-1", "0"):  # a transaction of 1 to 3 calls (the contract's limit), refused before any call
        with pytest.raises(SystemExit):
            kiosk.main(["verify", "P1", "--scan", "right-index", "--attempts", bad])
        assert "invalid choice" in capsys.readouterr().err


class _Answers:
    """A Verify endpoint that answers from a list and keeps what it was asked (the transaction loop alone)."""

    def __init__(self, *decisions: int) -> None:
        self.decisions, self.asked = list(decisions), []

    def Verify(self, request: pb.VerifyRequest, timeout: float | None = None) -> pb.VerifyResponse:  # noqa: N802
        self.asked.append((request.attempt, request.attempts))
        return pb.VerifyResponse(decision=self.decisions.pop(0))


def test_each_call_of_a_transaction_says_which_attempt_it_is():
    asked_again: list[tuple[int, int]] = []
    stub = _Answers(pb.SEE_OFFICER, pb.SEE_OFFICER, pb.PROCEED)
    r = kiosk.verify_transaction(stub, pb.VerifyRequest(subject_id="P1", attempts=3),
                                 on_retry=lambda n, of: asked_again.append((n, of)))
    assert r.decision == pb.PROCEED and stub.asked == [(1, 3), (2, 3), (3, 3)] and asked_again == [(2, 3), (3, 3)]
    stub = _Answers(pb.PROCEED)
    assert kiosk.verify_transaction(stub, pb.VerifyRequest(subject_id="P1", attempts=2)).decision == pb.PROCEED
    assert stub.asked == [(1, 2)]  # accepted at once: no second call
    stub = _Answers(pb.SEE_OFFICER)
    assert kiosk.verify_transaction(stub, pb.VerifyRequest(subject_id="P1")).decision == pb.SEE_OFFICER
    assert stub.asked == [(0, 0)]  # a one-call transaction is not numbered


def _channel_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_channel_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("target", ["127.0.0.1:50051", "127.3.2.1:1", "localhost:50051", "[::1]:50051"])
def test_plaintext_to_a_loopback_target(target: str) -> None:
    assert channel_credentials_for(_channel_args("--target", target)) is None


@pytest.mark.parametrize("target", ["10.0.0.5:50051", "checkpoint.local:50051", "0.0.0.0:50051", "[::]:50051",
                                    "localhost.example.org:1", "dns:///localhost:50051", "192.168.1.2"])
def test_no_plaintext_off_loopback(target: str) -> None:
    with pytest.raises(TLSConfigError, match=r"not a loopback address.*--tls-dir"):
        channel_credentials_for(_channel_args("--target", target))


@pytest.mark.parametrize("tool", [kiosk, desk])
def test_a_remote_target_without_tls_is_a_usage_error(tool, capsys) -> None:
    argv = {kiosk: ["verify", "P1", str(FACES / "Hans_Blix_0001.jpg")], desk: ["show", "P1"]}[tool]
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--target", "checkpoint.local:50051", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--target checkpoint.local:50051 is not a loopback address" in err and "--tls-dir" in err


def test_incomplete_tls_files_are_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        desk.main(["--cert", str(tmp_path / "client.pem"), "show", "P1"])
    assert exit_info.value.code == 2
    assert "--cert, --key and --ca go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        desk.main(["--tls-dir", str(tmp_path), "show", "P1"])
    assert "cannot read the TLS certificate" in capsys.readouterr().err


def test_a_duplicate_override_needs_a_reason(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        desk.main(["enrol", "P1", str(FACES / "Hans_Blix_0001.jpg"), "--allow-duplicate", "--reason", "  "])
    assert exit_info.value.code == 2
    assert "--allow-duplicate needs --reason" in capsys.readouterr().err


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("clients")).start()
    yield proc
    proc.stop()


@pytest.mark.server
def test_enrol_and_verify_with_face_and_fingers_from_the_command_line(server: ServerProcess, capsys):
    target = ["--target", server.target]
    finger = lambda name: f"right-index:{FINGERS / name}"  # noqa: E731
    assert desk.main([*target, "enrol", "CLI0001", str(FACES / "Kofi_Annan_0001.jpg"),
                      "--finger", finger("DB1_B_101_1.png"), "--finger", finger("DB1_B_101_2.png"),
                      "--name", "Kofi Annan"]) == 0
    out = capsys.readouterr().out
    assert "enrolled CLI0001" in out and "(right-index)" in out and "(face)" in out

    # plaintext on loopback: the caller is an officer, who sees the decision and the scores under it; a finger
    # alone under the shipped calibration (which cannot measure FMR 0.001) matches, and is referred, saying why
    assert kiosk.main([*target, "verify", "CLI0001", "--finger", finger("DB1_B_101_3.png")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SEE OFFICER: ") and out[1].startswith("  MATCH score")
    assert out[2] == f"  referred: {kiosk.REFERRALS['finger_alone_unmeasured']}"
    assert kiosk.main([*target, "verify", "CLI0001", "--finger", finger("DB1_B_103_1.png")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SEE OFFICER: ") and out[1].startswith("  NO MATCH score")

    assert kiosk.main([*target, "verify", "CLI0001", str(FACES / "Kofi_Annan_0004.jpg"),
                       "--finger", finger("DB1_B_101_3.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PROCEED") and "face " in out and "fingerprint right-index " in out

    assert kiosk.main([*target, "identify", "--finger", finger("DB1_B_101_3.png")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("SEE OFFICER") and "CLI0001 score" in out and "referred: fingerprints alone" in out
    assert kiosk.main([*target, "identify", str(FACES / "Kofi_Annan_0004.jpg"),
                       "--finger", finger("DB1_B_101_3.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PROCEED") and "CLI0001 score" in out and "referred" not in out


@pytest.mark.server
def test_the_desk_lists_watchlist_alerts(server: ServerProcess, capsys):
    target = ["--target", server.target]
    assert desk.main([*target, "alerts"]) == 0
    assert capsys.readouterr().out == "no watchlist alerts\n"
    assert desk.main([*target, "enrol", "CLI0002", str(FACES / "Megawati_Sukarnoputri_0001.jpg"),
                      "--watchlist"]) == 0
    capsys.readouterr()
    assert kiosk.main([*target, "verify", "CLI0002", str(FACES / "Megawati_Sukarnoputri_0002.jpg")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("SEE OFFICER: ") and "  MATCH score" in out  # a watchlist match: see an officer
    decision = out.split("decision ")[1].split(")")[0]
    assert desk.main([*target, "alerts", "--limit", "5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert "watchlist_verify CLI0002 score" in line and f"decision {decision}" in line
    assert desk.main([*target, "alerts", "--limit", "501"]) == 2
    assert capsys.readouterr().out.startswith("refused: INVALID_ARGUMENT")


@pytest.mark.server
def test_a_scan_without_a_scanner_is_refused_with_the_servers_message(server: ServerProcess, capsys):
    assert kiosk.main(["--target", server.target, "verify", "CLI0001", "--scan", "right-index"]) == 2
    assert capsys.readouterr().out.startswith("refused: FAILED_PRECONDITION")


def test_paths_are_files(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        kiosk.main(["verify", "P1", "--finger", f"right-index:{tmp_path / 'missing.png'}"])
    assert "missing.png" in capsys.readouterr().err


def test_the_desk_scans_each_finger_three_times_and_the_kiosk_once():
    """Enrolment takes several impressions of each scanned finger (--impressions, default 3); a kiosk one,
    or as many as it asks for."""
    parser = desk.build_parser()
    three = samples_from_args(parser.parse_args(["enrol", "P1", "--scan", "right-index", "--scan", "left-index"]))
    assert [(s.finger, s.WhichOneof("source")) for s in three] == [(pb.RIGHT_INDEX, "capture")] * 3 + [
        (pb.LEFT_INDEX, "capture")] * 3
    one = samples_from_args(parser.parse_args(["enrol", "P1", "--scan", "right-index", "--impressions", "1"]))
    assert len(one) == 1
    files = samples_from_args(parser.parse_args(["enrol", "P1", "--finger", f"7:{FINGERS / 'DB1_B_101_1.png'}"]))
    assert len(files) == 1, "a file is one impression: --impressions counts captures only"
    assert len(_samples("--scan", "right-index")) == 1, "no --impressions option: one capture"
    kiosk_args = kiosk.build_parser().parse_args(["verify", "P1", "--scan", "right-index"])
    assert len(samples_from_args(kiosk_args)) == 1, "the kiosk probes with one capture unless asked for more"
    kiosk_args = kiosk.build_parser().parse_args(["verify", "P1", "--scan", "right-index", "--impressions", "2"])
    assert len(samples_from_args(kiosk_args)) == 2
    with pytest.raises(SystemExit):
        desk.main(["enrol", "P1", "--scan", "right-index", "--impressions", "0"])


@pytest.mark.server
def test_the_desk_takes_the_applicants_data_from_standard_input_not_the_command_line(
        server: ServerProcess, capsys, monkeypatch: pytest.MonkeyPatch):
    """--applicant - reads the document number and personal data as JSON from standard input, so they never
    appear in the process's arguments; personal data given as arguments draws a warning."""
    import io

    target = ["--target", server.target]
    applicant = {"document_number": "CLI0003", "name": "Siti Rahma", "nationality": "IDN",
                 "date_of_birth": "1990-05-01"}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(applicant)))
    again = ["--allow-duplicate", "--reason", "a photo the other tests enrol too"]  # the module's server
    assert desk.main([*target, "enrol", "-", str(FACES / "Hans_Blix_0001.jpg"), "--applicant", "-", *again]) == 0
    captured = capsys.readouterr()
    assert "enrolled CLI0003" in captured.out and "warning" not in captured.err
    monkeypatch.setattr("sys.stdin", io.StringIO("CLI0003\n"))
    assert desk.main([*target, "show", "-"]) == 0
    assert "Siti Rahma IDN 1990-05-01" in capsys.readouterr().out

    assert desk.main([*target, "enrol", "CLI0004", str(FACES / "Kofi_Annan_0001.jpg"), "--name", "Kofi",
                      *again]) == 0
    assert "visible to every user" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        desk.main([*target, "enrol", "-", str(FACES / "Kofi_Annan_0001.jpg")])
    assert "from --applicant" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({**applicant, "document_number": "OTHER1"})))
    with pytest.raises(SystemExit):
        desk.main([*target, "enrol", "CLI0005", str(FACES / "Kofi_Annan_0001.jpg"), "--applicant", "-"])
    assert "not the document number given" in capsys.readouterr().err


@pytest.mark.server
def test_an_erasure_needs_a_reason_and_the_kiosk_reads_the_document_number_from_standard_input(
        server: ServerProcess, capsys, monkeypatch: pytest.MonkeyPatch):
    """A review erased a subject by accident with `delete DOC` and no reason: the desk asks for --reason, and the
    service refuses a blank one (INVALID_ARGUMENT: an erasure is recorded with why, as an override is). The kiosk
    tool takes the document number from standard input (`verify -`), as the desk does."""
    import io

    target = ["--target", server.target]
    assert desk.main([*target, "enrol", "CLI0007", str(FACES / "Megawati_Sukarnoputri_0001.jpg"), "--name", "M",
                      "--allow-duplicate", "--reason", "a photo the other tests enrol too"]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("CLI0007\n"))
    assert kiosk.main([*target, "verify", "-", str(FACES / "Megawati_Sukarnoputri_0002.jpg")]) == 0
    assert capsys.readouterr().out.startswith("PROCEED")
    with pytest.raises(SystemExit):
        desk.main([*target, "delete", "CLI0007"])
    assert "--reason" in capsys.readouterr().err
    stub = server.stub()
    with pytest.raises(grpc.RpcError) as refused:
        stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id="CLI0007", reason="  "))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reason" in refused.value.details()
    assert stub.GetSubject(pb.GetSubjectRequest(subject_id="CLI0007")).subject_id == "CLI0007"  # still there
    monkeypatch.setattr("sys.stdin", io.StringIO("CLI0007\n"))
    assert desk.main([*target, "delete", "-", "--reason", "erasure request"]) == 0


@pytest.mark.server
def test_transport_failures_say_what_staff_can_do(server: ServerProcess, tmp_path: Path, capsys) -> None:
    """gRPC's own failures (no server, a request over the size limit) were printed as "refused: ..." with gRPC's
    words, as if the server had refused the traveller."""
    from benchmarks.portal_bench import free_port

    nobody = ["--target", f"127.0.0.1:{free_port()}", "--timeout", "5"]
    assert kiosk.main([*nobody, "verify", "P1", str(FACES / "Kofi_Annan_0001.jpg")]) == 2
    out = capsys.readouterr().out
    assert out.startswith("failed: UNAVAILABLE: no checkpoint-server answers at this address"), out
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\\xff" * (17 * 1024 * 1024))
    assert kiosk.main(["--target", server.target, "verify", "P1", str(huge)]) == 2
    out = capsys.readouterr().out
    assert out.startswith("failed: RESOURCE_EXHAUSTED: the request is larger than the server takes"), out


class _Refusal(grpc.RpcError):
    """An RpcError as a client sees it: a status and its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_the_one_resource_exhausted_to_retry_says_so(capsys) -> None:
    """RESOURCE_EXHAUSTED is a request too large, never sent again as it is; the server's own busy refusals are
    UNAVAILABLE. gRPC's own concurrent-call limit (a burst beyond the refusal threads) is the one
    RESOURCE_EXHAUSTED to try again: the clients say so (it was printed as a refusal, in gRPC's words)."""
    from verify.channel import fail

    assert fail(_Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")) == 2
    out = capsys.readouterr().out
    assert out.startswith("failed: RESOURCE_EXHAUSTED: the server is overloaded"), out
    assert "try again in a moment" in out


@pytest.mark.parametrize(("tool", "argv", "message"), [
    ("kiosk", ["identify", "x.jpg", "--max-candidates", "3000000000"],
     "argument --max-candidates: must be a whole number from 0 to 2147483647, not 3000000000"),
    ("kiosk", ["identify", "x.jpg", "--max-candidates", "-1"], "argument --max-candidates: must be a whole number"),
    ("desk", ["alerts", "--limit", "3000000000"], "argument --limit: must be a whole number from 0 to 2147483647"),
    ("desk", ["reviews", "--limit", "-5"], "argument --limit: must be a whole number from 0 to 2147483647, not -5"),
    ("desk", ["reviews", "--limit", "ten"], "argument --limit: 'ten' is not a whole number"),
    ("kiosk", ["verify", "P1", "--scan", "right-index", "--impressions", "300000000"],
     "argument --impressions: must be a whole number from 1 to 10"),
    ("kiosk", ["--timeout", "nan", "verify", "P1", "x.jpg"], "argument --timeout: must be a number of seconds above 0"),
    ("desk", ["--timeout", "-1", "show", "P1"], "argument --timeout: must be a number of seconds above 0"),
    ("desk", ["--timeout", "inf", "show", "P1"], "argument --timeout: must be a number of seconds above 0"),
])
def test_a_number_a_request_cannot_carry_is_a_usage_error(tool, argv, message, capsys) -> None:
    """Review: ``identify --max-candidates 3000000000`` and ``alerts/reviews --limit 3000000000`` were a protobuf
    ValueError traceback, exit status 1 (checkpoint-verify's SEE OFFICER), and ``--impressions 300000000`` built
    the samples until memory ran out; now a usage error (exit status 2), before any connection."""
    main = kiosk.main if tool == "kiosk" else desk.main
    with pytest.raises(SystemExit) as exit_info:
        main(["--target", "127.0.0.1:9", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.server
def test_the_clients_own_deadline_says_to_look_before_trying_again(server: ServerProcess, capsys) -> None:
    """Review: a call past the client's own deadline printed gRPC's "refused: DEADLINE_EXCEEDED: Deadline
    Exceeded", as if the server had refused it; an enrolment or an erasure may still have been made."""
    target = ["--target", server.target, "--timeout", "0.001"]
    assert desk.main([*target, "enrol", "CLI0099", str(FACES / "Kofi_Annan_0001.jpg")]) == 2
    out = capsys.readouterr().out
    assert out.startswith("failed: DEADLINE_EXCEEDED: no answer within the call's time"), out
    assert "look (show) whether it was made before you try again" in out
    assert kiosk.main([*target, "verify", "CLI0099", str(FACES / "Kofi_Annan_0001.jpg")]) == 2
    assert capsys.readouterr().out.startswith("failed: DEADLINE_EXCEEDED: no answer within the call's time")
