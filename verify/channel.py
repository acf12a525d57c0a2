"""Client channels to a checkpoint server, shared by the kiosk and desk tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc

from biometrics.validation import MAX_SAMPLES
from devices.timeouts import CAMERA_DEFAULT_TIMEOUT_S, SCANNER_DEFAULT_TIMEOUT_S
from verify.tls import TLSConfigError, add_tls_arguments, channel_credentials, is_loopback, tls_files

MIB = 1024 * 1024
#: The largest value of a request's int32 field (``max_candidates``, ``limit``).
INT32_MAX = 2**31 - 1


def whole_number(low: int, high: int = INT32_MAX) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``, else a usage error naming the range (a number
    a request's field cannot carry was a protobuf ValueError traceback, exit status 1: SEE OFFICER for
    checkpoint-verify). The server's own rules (at most 500 alerts, say) are the server's to state."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, not {value}")
        return value

    parse.__name__ = "whole number"
    return parse


#: The longest --timeout a client takes, in seconds (a day: gRPC's own deadline arithmetic overflows far beyond).
MAX_CALL_TIMEOUT_S = 86400.0


def call_seconds(text: str) -> float:
    """An argparse type for --timeout: seconds above 0 and at most :data:`MAX_CALL_TIMEOUT_S` (NaN, infinity, 0 or a
    negative number gave a call that ended at once, reported as if the server had not answered in time)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_CALL_TIMEOUT_S:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0 and at most {MAX_CALL_TIMEOUT_S:g}, "
                                         f"not {text}")
    return value


def add_channel_arguments(parser: argparse.ArgumentParser) -> None:
    """--target, --timeout, and the mutual-TLS files (--tls-dir, or --cert --key --ca; plaintext without, to a
    loopback target only)."""
    parser.add_argument("--target", default="127.0.0.1:50051", help="server HOST:PORT")
    parser.add_argument("--timeout", type=call_seconds, default=30.0,
                        help="seconds before a call gives up, on top of the time its captures may wait for the "
                        "traveller (each capture's timeout, or the device's default: camera "
                        f"{CAMERA_DEFAULT_TIMEOUT_S:g} s, scanner {SCANNER_DEFAULT_TIMEOUT_S:g} s)")
    add_tls_arguments(parser, side="client")


#: The help of a document-number argument that may come from standard input.
DOCUMENT_FROM_STDIN = ("travel-document number, or - to read it from standard input (not visible to other users, "
                       "as the process's arguments are)")


def document_number(parser: argparse.ArgumentParser, given: str) -> str:
    """A document-number argument as given, or read from the first line of standard input when it is ``-``
    (a usage error when that line is empty)."""
    if given != "-":
        return given
    try:
        number = sys.stdin.readline().strip()
    except UnicodeDecodeError:
        parser.error("the document number on standard input is not UTF-8 text")
    if not number:
        parser.error("no document number on standard input")
    return number


def require_text(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Exit with a usage error (status 2) naming the first of the arguments ``names`` that is not UTF-8 text: a
    byte that is not UTF-8 on the command line (or an escaped lone surrogate in a JSON file) becomes a lone
    surrogate, which no request can carry (before: a UnicodeEncodeError traceback). Arguments not set are
    passed over."""
    for name in names:
        value = getattr(args, name, None)
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            parser.error(f"{name.replace('_', '-')} is not UTF-8 text (character {exc.start + 1} is not): give it "
                         "in UTF-8")


def channel_credentials_for(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """Mutual-TLS credentials from the command line, or None (plaintext) for a loopback target given none.

    Raises :class:`~verify.tls.TLSConfigError` for incomplete or unreadable TLS files, and for a target off
    loopback without them: a client never sends a traveller's face in the clear over a network.
    """
    files = tls_files(args, side="client")
    if files is not None:
        return channel_credentials(files)
    if not is_loopback(args.target):
        raise TLSConfigError(
            f"--target {args.target} is not a loopback address, and plaintext is only for 127.0.0.0/8, ::1 or "
            "localhost: give --tls-dir DIR (or --cert, --key and --ca) for mutual TLS")
    return None


def capture_allowance(samples: list[pb.Sample]) -> float:
    """The seconds the captures ``samples`` ask for may wait for the traveller, one after the other: each one's
    timeout, or the device's default. A call's deadline is this plus ``--timeout`` (:func:`call_timeout`), so
    that a traveller who takes each capture's whole time is not cut off by the client (the server stops a
    capture, and stores nothing, once the call's deadline has passed)."""
    total = 0.0
    for sample in samples:
        if sample.WhichOneof("source") == "capture":
            default = CAMERA_DEFAULT_TIMEOUT_S if sample.modality == pb.FACE else SCANNER_DEFAULT_TIMEOUT_S
            total += sample.capture.timeout_seconds or default
    return total


def call_timeout(args: argparse.Namespace, samples: list[pb.Sample]) -> float:
    """The deadline of a call carrying ``samples``: ``--timeout`` plus :func:`capture_allowance`."""
    return args.timeout + capture_allowance(samples)


def open_stub(args: argparse.Namespace) -> pb_grpc.CheckpointStub:
    """A stub on a channel to ``args.target``: mutual TLS when TLS files are given, else plaintext to a loopback
    target (demos); see :func:`channel_credentials_for` for the refusals."""
    options = [("grpc.max_send_message_length", 16 * MIB), ("grpc.max_receive_message_length", 16 * MIB)]
    credentials = channel_credentials_for(args)
    if credentials is None:
        return pb_grpc.CheckpointStub(grpc.insecure_channel(args.target, options=options))
    return pb_grpc.CheckpointStub(grpc.secure_channel(args.target, credentials, options=options))


def open_stub_or_usage_error(parser: argparse.ArgumentParser, args: argparse.Namespace) -> pb_grpc.CheckpointStub:
    """:func:`open_stub`, or exit with a usage error naming the problem (no TLS off loopback, bad TLS files)."""
    try:
        return open_stub(args)
    except TLSConfigError as error:
        parser.error(str(error))


def face_samples(paths: list[Path], capture: bool = False, device: str = "") -> list[pb.Sample]:
    """Face samples from image files and, with ``capture``, one capture request to the station's camera after
    them: every face the command line names is sent (the server combines a traveller's faces)."""
    samples = [pb.Sample(modality=pb.FACE, image=p.read_bytes()) for p in paths]
    if capture:
        samples.append(pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(device=device)))
    return samples


def finger_name(position: int) -> str:
    """The command-line name of an ISO/IEC 19794-2 finger position: ``right-index``, ``unknown-finger``..."""
    return pb.FingerPosition.Name(position).lower().replace("_", "-")


def finger_position(name: str) -> int:
    """The ISO/IEC 19794-2 finger position of a name such as ``right-index`` (or its code, 0..10)."""
    text = name.strip().lower().replace("_", "-")
    if text.isdigit() and int(text) in pb.FingerPosition.values():
        return int(text)
    for value in pb.FingerPosition.values():
        if finger_name(value) in (text, f"{text}-finger"):
            return value
    names = ", ".join(finger_name(value) for value in pb.FingerPosition.values())
    raise argparse.ArgumentTypeError(f"unknown finger position {name!r}: one of {names}")


ENROL_IMPRESSIONS = 3  # captures of each scanned finger at the desk: docs/benchmarks.md, "Fused verification"


def add_sample_arguments(parser: argparse.ArgumentParser, *, impressions: int | None = None) -> None:
    """Face images, --camera, and fingerprints (--finger POSITION:FILE, --scan POSITION), each repeatable.

    ``impressions``: also offer ``--impressions N`` (default ``impressions``), the captures taken of each
    ``--scan`` finger (the desk enrols a finger from three impressions; a kiosk probes with one or two).
    """
    parser.add_argument("images", nargs="*", type=Path, help="face images (JPEG/PNG); with --camera, sent as well")
    parser.add_argument("--camera", action="store_true",
                        help="capture the face from the station's camera; face images given too are sent with the "
                        "capture, all of them the traveller's face (the server combines them)")
    parser.add_argument("--finger", action="append", default=[], metavar="POSITION:FILE",
                        help="a fingerprint image (PNG/JPEG), e.g. right-index:scan.png; repeat for more "
                        "impressions or fingers")
    parser.add_argument("--scan", action="append", default=[], metavar="POSITION",
                        help="capture a finger from the station's scanner, e.g. right-index; repeat for more")
    if impressions is not None:
        parser.add_argument("--impressions", type=whole_number(1, MAX_SAMPLES), default=impressions, metavar="N",
                            help=f"captures of each --scan finger, 1 to {MAX_SAMPLES} (a request's samples at the "
                            f"most), the finger lifted and placed again between "
                            f"them (default {impressions}; the desk takes 3; a kiosk asks for another placement "
                            f"only when a call is not accepted, --attempts: docs/benchmarks.md)")


def samples_from_args(args: argparse.Namespace) -> list[pb.Sample]:
    """The samples the command line names: faces first, then fingerprints in the order given."""
    samples = face_samples(args.images, args.camera)
    for item in args.finger:
        position, sep, path = item.partition(":")
        if not sep or not path:
            raise argparse.ArgumentTypeError(f"--finger wants POSITION:FILE, got {item!r}")
        samples.append(pb.Sample(modality=pb.FINGERPRINT, finger=finger_position(position),
                                 image=Path(path).read_bytes()))
    captures = getattr(args, "impressions", 1)
    if captures < 1:
        raise argparse.ArgumentTypeError(f"--impressions wants 1 or more, got {captures}")
    for position in args.scan:
        samples += [pb.Sample(modality=pb.FINGERPRINT, finger=finger_position(position), capture=pb.DeviceCapture())
                    for _ in range(captures)]
    return samples


def scan_instructions(args: argparse.Namespace) -> list[str]:
    """What to tell the traveller before a call that scans fingers (``--scan``): one line a finger, saying, when it
    is taken more than once (``--impressions``), that it is lifted and placed again between the impressions (the
    scanner takes the next impression only once it has seen the finger lifted)."""
    captures = getattr(args, "impressions", 1)
    lines = []
    for position in args.scan:
        finger = finger_name(finger_position(position))
        if captures > 1:
            lines.append(f"SCAN: place the {finger} finger on the scanner {captures} times, lifting it between the "
                         "impressions")
        else:
            lines.append(f"SCAN: place the {finger} finger on the scanner")
    return lines


def samples_or_usage_error(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[pb.Sample]:
    """:func:`samples_from_args`, or exit with a usage error (bad argument, unreadable file, no sample)."""
    try:
        samples = samples_from_args(args)
    except (argparse.ArgumentTypeError, OSError) as error:
        parser.error(str(error))
    if not samples:
        parser.error("give face images, --camera, --finger POSITION:FILE or --scan POSITION")
    return samples


#: gRPC's own transport failures (not the server's refusals), by a phrase of their details: what staff can do.
TRANSPORT_FAILURES = (
    ("failed to connect", "no checkpoint-server answers at this address: is it running, and is --target right?"),
    ("Sent message larger than max", "the request is larger than the server takes: send smaller or fewer images"),
    ("Received message larger than max", "the request is larger than the server takes: send smaller or fewer "
                                         "images"),
    ("Concurrent RPC limit exceeded", "the server is overloaded (more calls at once than it refuses one by one): "
                                      "try again in a moment"),
    ("Deadline Exceeded", "no answer within the call's time (--timeout, plus the time its captures may wait): the "
                          "server may still have acted on it; for a change (enrol, delete, resolve) look (show) "
                          "whether it was made before you try again; otherwise try again, with a longer --timeout "
                          "if it keeps happening"),
    ("Cancelling all calls", "the server stopped before it answered: look (show, or the audit log) whether the "
                             "change was made before you try again"),
    ("Socket closed", "the connection was closed without an answer: a server that wants TLS (give --tls-dir) or "
                      "one that stopped; look whether a change was made before you try again"),
    ("Stream removed", "the connection was lost before an answer: look whether a change was made before you try "
                       "again"),
)


def fail(error: grpc.RpcError) -> int:
    """Print a call's refusal as the server gave it, or, for gRPC's own transport failures (the server not
    running, a message over the size limit, the connection lost), what staff can do; exit status 2."""
    details = error.details() or ""
    for phrase, advice in TRANSPORT_FAILURES:
        if phrase in details:
            print(f"failed: {error.code().name}: {advice} ({details})")
            return 2
    print(f"refused: {error.code().name}: {details}")
    return 2
