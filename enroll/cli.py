"""``checkpoint-enroll``: the officers' enrolment desk. Enrol, look up and erase subjects; see watchlist alerts;
review enrolments made offline that found possible duplicates."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb

from verify.channel import (
    DOCUMENT_FROM_STDIN,
    ENROL_IMPRESSIONS,
    add_channel_arguments,
    add_sample_arguments,
    call_timeout,
    document_number,
    fail,
    finger_name,
    open_stub_or_usage_error,
    require_text,
    samples_or_usage_error,
    scan_instructions,
    whole_number,
)


def build_parser() -> argparse.ArgumentParser:
    """The desk tool's command line."""
    p = argparse.ArgumentParser(prog="checkpoint-enroll", description=__doc__.splitlines()[0])
    add_channel_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enrol", help="enrol an applicant (a 1:N duplicate search runs first)")
    e.add_argument("subject_id", help="travel-document number, or - to take it from --applicant")
    add_sample_arguments(e, impressions=ENROL_IMPRESSIONS)
    e.add_argument("--applicant", metavar="FILE",
                   help="the applicant's data as a JSON object (document_number, name, nationality, "
                   "date_of_birth), from a file or - for standard input: unlike arguments, not visible to other "
                   "users of the desk machine (ps, /proc) nor kept in the shell's history")
    e.add_argument("--name", default="", help="(prefer --applicant: arguments are visible to every local user)")
    e.add_argument("--nationality", default="", help="ISO 3166-1 alpha-3")
    e.add_argument("--date-of-birth", default="", help="YYYY-MM-DD (prefer --applicant)")
    e.add_argument("--watchlist", action="store_true")
    e.add_argument("--allow-duplicate", action="store_true",
                   help="officer's override of a possible duplicate (recorded); give --reason")
    e.add_argument("--reason", default="", help="why the duplicate check is overridden (required with "
                   "--allow-duplicate; recorded until this subject or the duplicate is erased; no names, no document "
                   "numbers: the erasure of anyone else it names does not reach it)")
    s = sub.add_parser("show", help="a subject's data and enrolled templates")
    s.add_argument("subject_id", help=DOCUMENT_FROM_STDIN)
    d = sub.add_parser("delete", help="erase a subject (templates and personal data)")
    d.add_argument("subject_id", help=DOCUMENT_FROM_STDIN)
    d.add_argument("--reason", required=True, help="why (required; recorded in the audit log, which outlives the "
                   "erasure: no names, no document numbers)")
    a = sub.add_parser("alerts", help="watchlist alerts raised by Verify and Identify, newest first")
    a.add_argument("--limit", type=whole_number(0), default=0, help="how many (default 50, at most 500)")
    r = sub.add_parser("reviews", help="enrolments made offline whose upload found possible duplicates, oldest first")
    r.add_argument("--limit", type=whole_number(0), default=0, help="how many (default 50, at most 500)")
    v = sub.add_parser("resolve", help="resolve a review: keep-both (two people), link (one person, two "
                       "documents) or reject")
    v.add_argument("review_id")
    v.add_argument("resolution", choices=["keep-both", "link", "reject"])
    v.add_argument("--reason", required=True, help="why (required; recorded in the audit log: no names, no "
                   "document numbers)")
    return p


APPLICANT_FIELDS = ("document_number", "name", "nationality", "date_of_birth")


def read_applicant(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill the enrolment's document number and personal data from ``--applicant`` (a JSON object, a file or -
    for standard input), which take precedence over arguments; warn when personal data came as arguments."""
    if args.applicant is None:
        if args.subject_id == "-":
            parser.error("the document number - means: from --applicant; give --applicant FILE or -")
        if args.name or args.date_of_birth:
            print("warning: the applicant's name or date of birth given as arguments is visible to every user of "
                  "this machine while the call runs (ps) and stays in the shell's history; use --applicant",
                  file=sys.stderr)
        return
    try:
        text = sys.stdin.read() if args.applicant == "-" else Path(args.applicant).read_text(encoding="utf-8")
        doc = json.loads(text)
    except (OSError, ValueError) as exc:
        parser.error(f"--applicant: cannot read a JSON object ({exc})")
    if not isinstance(doc, dict) or set(doc) - set(APPLICANT_FIELDS) or not all(
            isinstance(v, str) for v in doc.values()):
        parser.error(f"--applicant: a JSON object of strings with the fields {', '.join(APPLICANT_FIELDS)}")
    if args.subject_id == "-":
        if not doc.get("document_number"):
            parser.error("--applicant: document_number is missing (the document number given was -)")
        args.subject_id = doc["document_number"]
    elif doc.get("document_number", args.subject_id) != args.subject_id:
        parser.error("--applicant: its document_number is not the document number given")
    for name in ("name", "nationality", "date_of_birth"):
        if doc.get(name):
            setattr(args, name, doc[name])


def _enrol(stub, args: argparse.Namespace, samples: list[pb.Sample]) -> int:  # type: ignore[no-untyped-def]
    info = pb.SubjectInfo(name=args.name, nationality=args.nationality, date_of_birth=args.date_of_birth,
                          watchlist=args.watchlist)
    for line in scan_instructions(args):
        print(line, flush=True)
    r = stub.Enroll(pb.EnrollRequest(subject_id=args.subject_id, info=info,
                                     samples=samples,
                                     allow_duplicate=args.allow_duplicate, override_reason=args.reason),
                    timeout=call_timeout(args, samples))
    for q in r.qualities:
        what = "face" if q.modality == pb.FACE else finger_name(q.finger)
        print(f"sample quality {q.quality:.0f}/100 ({what})")
    for c in r.possible_duplicates:
        print(f"POSSIBLE DUPLICATE: {c.subject_id} score {c.score:.2f} (threshold {r.threshold:.2f})")
    if r.enrolled and r.provisional:
        print(f"enrolled {r.subject_id} PROVISIONALLY (this station is offline: it will be searched against the "
              f"whole register when the link returns) decision {r.decision_id}")
        return 0
    if r.enrolled:
        print(f"enrolled {r.subject_id} decision {r.decision_id}")
        return 0
    print(f"NOT enrolled: possible duplicate; an officer must review (decision {r.decision_id})")
    return 1


def _alerts(stub, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    r = stub.ListAlerts(pb.ListAlertsRequest(limit=args.limit), timeout=args.timeout)
    if not r.alerts:
        print("no watchlist alerts")
    for a in r.alerts:
        print(f"{a.raised_at} {a.kind} {a.subject_id} score {a.score:.2f} decision {a.decision_id} by {a.caller}")
    return 0


def _reviews(stub, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    r = stub.ListReviews(pb.ListReviewsRequest(limit=args.limit), timeout=args.timeout)
    if not r.reviews:
        print("no enrolment waits for review")
    for v in r.reviews:
        print(f"review {v.review_id}: {v.subject_id} ({v.info.name}) enrolled offline at {v.station} "
              f"{v.enrolled_offline_at}; found {v.created_at}")
        for c in v.candidates:
            print(f"  possible duplicate {c.subject_id} score {c.score:.2f} (threshold {v.threshold:.2f})")
    return 0


def _resolve(stub, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    resolution = {"keep-both": pb.KEEP_BOTH, "link": pb.LINK, "reject": pb.REJECT}[args.resolution]
    stub.ResolveReview(pb.ResolveReviewRequest(review_id=args.review_id, resolution=resolution,
                                               reason=args.reason), timeout=args.timeout)
    print(f"review {args.review_id} resolved: {args.resolution}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run one desk call."""
    parser = build_parser()
    args = parser.parse_args(argv)
    samples: list[pb.Sample] = []
    if args.command in ("show", "delete"):
        args.subject_id = document_number(parser, args.subject_id)
    if args.command == "enrol":
        read_applicant(parser, args)
    require_text(parser, args, "target", "subject_id", "name", "nationality", "date_of_birth", "reason", "review_id")
    if args.command == "enrol":
        samples = samples_or_usage_error(parser, args)
        if args.allow_duplicate and not args.reason.strip():
            parser.error("--allow-duplicate needs --reason \"...\": the override is recorded with its reason")
    stub = open_stub_or_usage_error(parser, args)
    try:
        if args.command == "enrol":
            return _enrol(stub, args, samples)
        if args.command == "show":
            s = stub.GetSubject(pb.GetSubjectRequest(subject_id=args.subject_id), timeout=args.timeout)
            print(f"{s.subject_id}: {s.info.name} {s.info.nationality} {s.info.date_of_birth} "
                  f"enrolled {s.enrolled_at}{' WATCHLIST' if s.info.watchlist else ''}")
            for t in s.templates:
                print(f"  {pb.Modality.Name(t.modality)} finger {t.finger} quality {t.quality:.0f} {t.created_at}")
            return 0
        if args.command == "alerts":
            return _alerts(stub, args)
        if args.command == "reviews":
            return _reviews(stub, args)
        if args.command == "resolve":
            return _resolve(stub, args)
        r = stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id=args.subject_id, reason=args.reason),
                               timeout=args.timeout)
        print(f"erased {args.subject_id} decision {r.decision_id}")
        return 0
    except grpc.RpcError as error:
        return fail(error)


if __name__ == "__main__":
    sys.exit(main())
