"""``checkpoint-verify``: the kiosk's client. Verify a traveller 1:1, or identify 1:N, from image files
or from the station's camera and fingerprint scanner."""

from __future__ import annotations

import argparse
import sys

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb

from verify.channel import (
    add_channel_arguments,
    add_sample_arguments,
    fail,
    finger_name,
    open_stub,
    samples_or_usage_error,
)


def build_parser() -> argparse.ArgumentParser:
    """The kiosk client's command line."""
    p = argparse.ArgumentParser(prog="checkpoint-verify", description=__doc__.splitlines()[0])
    add_channel_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="1:1: is this traveller the holder of SUBJECT_ID?")
    v.add_argument("subject_id")
    add_sample_arguments(v)
    i = sub.add_parser("identify", help="1:N: who is this?")
    add_sample_arguments(i)
    i.add_argument("--max-candidates", type=int, default=0)
    sub.add_parser("devices", help="list the station's devices")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one kiosk call and print its decision."""
    parser = build_parser()
    args = parser.parse_args(argv)
    samples: list[pb.Sample] = []
    if args.command in ("verify", "identify"):
        samples = samples_or_usage_error(parser, args)
    stub = open_stub(args)
    try:
        if args.command == "verify":
            r = stub.Verify(pb.VerifyRequest(subject_id=args.subject_id, samples=samples), timeout=args.timeout)
            verdict = "MATCH" if r.match else "NO MATCH"
            print(f"{verdict} score {r.score:.2f} threshold {r.threshold:.2f} decision {r.decision_id}")
            if len(r.modality_scores) > 1:
                print("  " + "; ".join(_modality_score(m) for m in r.modality_scores))
            return 0 if r.match else 1
        if args.command == "identify":
            r = stub.Identify(pb.IdentifyRequest(samples=samples, max_candidates=args.max_candidates),
                              timeout=args.timeout)
            print(f"{len(r.candidates)} candidate(s) at or over threshold {r.threshold:.2f} "
                  f"decision {r.decision_id}")
            for c in r.candidates:
                print(f"  {c.subject_id} score {c.score:.2f}{'  WATCHLIST' if c.watchlist else ''}")
            return 0
        r = stub.ListDevices(pb.ListDevicesRequest(), timeout=args.timeout)
        for d in r.devices:
            print(f"{d.name} {pb.Modality.Name(d.modality)} {pb.DeviceState.Name(d.state)} {d.detail}")
        return 0
    except grpc.RpcError as error:
        return fail(error)


def _modality_score(m: pb.ModalityScore) -> str:
    what = pb.Modality.Name(m.modality).lower()
    if m.modality == pb.FINGERPRINT:
        what += " " + finger_name(m.finger)
    return f"{what} {m.score:.2f}"


if __name__ == "__main__":
    sys.exit(main())
