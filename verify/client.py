"""``checkpoint-verify``: the kiosk's client. Verify a traveller 1:1, or identify 1:N, from image files
or from the station's camera and fingerprint scanner.

It prints the decision for the traveller and the message to show (``PROCEED`` or ``SEE OFFICER``, exit status
0 or 1; 2 for a refusal); an officer's certificate (or a plaintext loopback server) also gets the scores and
candidates, printed below it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb

from verify.channel import (
    DOCUMENT_FROM_STDIN,
    add_channel_arguments,
    add_sample_arguments,
    call_timeout,
    document_number,
    fail,
    finger_name,
    open_stub_or_usage_error,
    require_text,
    samples_or_usage_error,
    whole_number,
)

DECISIONS = {pb.PROCEED: "PROCEED", pb.SEE_OFFICER: "SEE OFFICER"}
# Calls a kiosk transaction with a scanned finger allows by default: a second placement only for a traveller
# whose first is not accepted (about 1 genuine traveller in 100 at the default threshold; docs/benchmarks.md, "up to
# two attempts").
SCAN_ATTEMPTS = 2


def build_parser() -> argparse.ArgumentParser:
    """The kiosk client's command line."""
    p = argparse.ArgumentParser(prog="checkpoint-verify", description=__doc__.splitlines()[0])
    add_channel_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="1:1: is this traveller the holder of SUBJECT_ID?")
    v.add_argument("subject_id", help=DOCUMENT_FROM_STDIN)
    add_sample_arguments(v, impressions=1)
    v.add_argument("--attempts", type=int, choices=(1, 2, 3), metavar="N",
                   help="calls this transaction allows (1-3; needs --scan): a call not accepted asks the traveller "
                        "to place the finger again, the next call scanning it anew; every call is scored as one "
                        f"of N, so the transaction keeps the threshold's FMR (default {SCAN_ATTEMPTS} with --scan, "
                        "else 1; docs/benchmarks.md)")
    i = sub.add_parser("identify", help="1:N: who is this?")
    add_sample_arguments(i, impressions=1)
    i.add_argument("--max-candidates", type=whole_number(0), default=0, metavar="N",
                   help="ranked candidates an officer's answer lists (0: the server's default)")
    for command in (v, i):
        command.add_argument("--nationality", default="", metavar="ALPHA3",
                             help="the travel document's nationality code as in its MRZ (e.g. IDN; "
                                  "Germany's D<< is counted as DEU), for the published statistics")
    r = sub.add_parser("rate", help="the traveller's rating of a decision (once per decision)")
    r.add_argument("feedback_id", help="the feedback id a verify or identify printed")
    r.add_argument("rating", type=int, choices=(1, 2, 3, 4), help="1 very unhappy .. 4 very happy")
    sub.add_parser("devices", help="list the station's devices")
    return p


#: What an officer reads for each ``referral`` of an answer (why a match sends the traveller to an officer).
REFERRALS = {
    "watchlist": "a watchlist match (an alert is raised)",
    "in_review": "the subject's offline enrolment waits for a review as a possible duplicate",
    "contradicted": "a candidate found by one modality and contradicted by another",
    "ambiguous_identity": "two or more different subjects match (one person enrolled twice, or a false match)",
    "finger_alone_unmeasured": "fingerprints alone, and this station's fingerprint calibration cannot measure the "
                               "operating FMR (fit the station's own: docs/operations.md)",
}


def main(argv: list[str] | None = None) -> int:
    """Run one kiosk call and print its decision."""
    parser = build_parser()
    args = parser.parse_args(argv)
    samples: list[pb.Sample] = []
    if args.command == "verify":
        args.subject_id = document_number(parser, args.subject_id)
    require_text(parser, args, "target", "subject_id", "nationality", "feedback_id")
    if args.command in ("verify", "identify"):
        samples = samples_or_usage_error(parser, args)
    if args.command == "verify":
        if args.attempts is None:
            args.attempts = SCAN_ATTEMPTS if args.scan else 1
        elif args.attempts != 1 and not args.scan:
            parser.error("--attempts takes the finger again from the scanner: give --scan POSITION")
    stub = open_stub_or_usage_error(parser, args)
    try:
        if args.command == "verify":
            request = pb.VerifyRequest(subject_id=args.subject_id, samples=samples,
                                       document_nationality=args.nationality, attempts=args.attempts)
            r = verify_transaction(stub, request, timeout=call_timeout(args, samples), on_retry=_ask_again)
            print(_decision(r))
            if r.modality_scores:  # an officer's view
                print(f"  {'MATCH' if r.match else 'NO MATCH'} score {r.score:.2f} threshold {r.threshold:.2f}")
                if len(r.modality_scores) > 1:
                    print("  " + "; ".join(_modality_score(m) for m in r.modality_scores))
                _print_referral(r.referral)
            return 0 if r.decision == pb.PROCEED else 1
        if args.command == "identify":
            r = stub.Identify(pb.IdentifyRequest(samples=samples, max_candidates=args.max_candidates,
                                                 document_nationality=args.nationality),
                              timeout=call_timeout(args, samples))
            print(_decision(r))
            for c in r.candidates:  # an officer's view
                print(f"  {c.subject_id} score {c.score:.2f}{'  WATCHLIST' if c.watchlist else ''}")
            _print_referral(r.referral)
            return 0 if r.decision == pb.PROCEED else 1
        if args.command == "rate":
            rated = rate(stub, args.feedback_id, args.rating, timeout=args.timeout)
            print(rated.message)
            return 0
        r = stub.ListDevices(pb.ListDevicesRequest(), timeout=args.timeout)
        for d in r.devices:
            line = f"{d.name} {pb.Modality.Name(d.modality)} {pb.DeviceState.Name(d.state)}"
            print(f"{line}{' default' if d.is_default else ''} {d.detail}".rstrip())
        return 0
    except grpc.RpcError as error:
        return fail(error)


def verify_transaction(stub: Any, request: pb.VerifyRequest, *, timeout: float | None = None,
                       on_retry: Callable[[int, int], None] | None = None) -> pb.VerifyResponse:
    """One kiosk transaction of up to ``request.attempts`` Verify calls (0: one): the next call, the same
    request numbered ``attempt`` n (every device capture in it taken anew: the scanner's, and the camera's when
    the face is captured too; face images sent as files are sent again as they are), only when the one before
    was not PROCEED and not ``final``; ``on_retry(n, attempts)`` is called before call n > 1 (to ask the
    traveller to place the finger again). The last answer is returned; a refusal raises grpc.RpcError and ends
    the transaction."""
    attempts = max(1, request.attempts)
    for n in range(1, attempts + 1):
        if n > 1 and on_retry is not None:
            on_retry(n, attempts)
        call = pb.VerifyRequest()
        call.CopyFrom(request)
        call.attempt = n if attempts > 1 else 0
        response = stub.Verify(call, timeout=timeout)
        if response.decision == pb.PROCEED or response.final:  # final: another placement would change nothing
            break
    return response


def _print_referral(referral: str) -> None:
    """Under an officer's answer: why it sends the traveller to an officer, if it says."""
    if referral:
        print(f"  referred: {REFERRALS.get(referral, referral)}")


def _ask_again(n: int, attempts: int) -> None:
    print(f"TRY AGAIN: lift your finger and place it on the scanner again (attempt {n} of {attempts})", flush=True)


def rate(stub: Any, feedback_id: str, rating: int, *, timeout: float | None = None) -> pb.RateDecisionResponse:
    """The traveller's rating (1..4) of the decision whose answer gave ``feedback_id``; raises grpc.RpcError
    (ALREADY_EXISTS for a second rating, NOT_FOUND for an unknown id, INVALID_ARGUMENT for a bad rating), each
    with a message the kiosk can show."""
    return stub.RateDecision(pb.RateDecisionRequest(feedback_id=feedback_id, rating=rating), timeout=timeout)


def _decision(r: pb.VerifyResponse | pb.IdentifyResponse) -> str:
    what = DECISIONS.get(r.decision, "NO DECISION")
    feedback = f" [feedback {r.feedback_id}]" if r.feedback_id else ""
    return f"{what}: {r.traveller_message} (threshold {r.threshold:.2f}, decision {r.decision_id}){feedback}"


def _modality_score(m: pb.ModalityScore) -> str:
    what = pb.Modality.Name(m.modality).lower()
    if m.modality == pb.FINGERPRINT:
        what += " " + finger_name(m.finger)
    return f"{what} {m.score:.2f}"


if __name__ == "__main__":
    sys.exit(main())
