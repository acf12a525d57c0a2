"""``checkpoint-enroll``: the officers' enrolment desk. Enrol, look up and erase subjects."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb

from verify.channel import add_channel_arguments, face_samples, fail, open_stub


def build_parser() -> argparse.ArgumentParser:
    """The desk tool's command line."""
    p = argparse.ArgumentParser(prog="checkpoint-enroll", description=__doc__.splitlines()[0])
    add_channel_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("enrol", help="enrol an applicant (a 1:N duplicate search runs first)")
    e.add_argument("subject_id", help="travel-document number")
    e.add_argument("images", nargs="*", type=Path, help="face images (JPEG/PNG)")
    e.add_argument("--camera", action="store_true", help="capture from the station's camera instead")
    e.add_argument("--name", default="")
    e.add_argument("--nationality", default="", help="ISO 3166-1 alpha-3")
    e.add_argument("--date-of-birth", default="", help="YYYY-MM-DD")
    e.add_argument("--watchlist", action="store_true")
    e.add_argument("--allow-duplicate", action="store_true",
                   help="officer's override of a possible duplicate (recorded); give --reason")
    e.add_argument("--reason", default="", help="why the duplicate check is overridden")
    s = sub.add_parser("show", help="a subject's data and enrolled templates")
    s.add_argument("subject_id")
    d = sub.add_parser("delete", help="erase a subject (templates and personal data)")
    d.add_argument("subject_id")
    d.add_argument("--reason", default="")
    return p


def _enrol(stub, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    if not args.images and not args.camera:
        print("give face images, or --camera")
        return 2
    info = pb.SubjectInfo(name=args.name, nationality=args.nationality, date_of_birth=args.date_of_birth,
                          watchlist=args.watchlist)
    r = stub.Enroll(pb.EnrollRequest(subject_id=args.subject_id, info=info,
                                     samples=face_samples(args.images, args.camera),
                                     allow_duplicate=args.allow_duplicate, override_reason=args.reason),
                    timeout=args.timeout)
    for q in r.qualities:
        print(f"sample quality {q.quality:.0f}/100")
    for c in r.possible_duplicates:
        print(f"POSSIBLE DUPLICATE: {c.subject_id} score {c.score:.2f} (threshold {r.threshold:.2f})")
    if r.enrolled:
        print(f"enrolled {r.subject_id} decision {r.decision_id}")
        return 0
    print(f"NOT enrolled: possible duplicate; an officer must review (decision {r.decision_id})")
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run one desk call."""
    args = build_parser().parse_args(argv)
    stub = open_stub(args)
    try:
        if args.command == "enrol":
            return _enrol(stub, args)
        if args.command == "show":
            s = stub.GetSubject(pb.GetSubjectRequest(subject_id=args.subject_id), timeout=args.timeout)
            print(f"{s.subject_id}: {s.info.name} {s.info.nationality} {s.info.date_of_birth} "
                  f"enrolled {s.enrolled_at}{' WATCHLIST' if s.info.watchlist else ''}")
            for t in s.templates:
                print(f"  {pb.Modality.Name(t.modality)} finger {t.finger} quality {t.quality:.0f} {t.created_at}")
            return 0
        r = stub.DeleteSubject(pb.DeleteSubjectRequest(subject_id=args.subject_id, reason=args.reason),
                               timeout=args.timeout)
        print(f"erased {args.subject_id} decision {r.decision_id}")
        return 0
    except grpc.RpcError as error:
        return fail(error)


if __name__ == "__main__":
    sys.exit(main())
