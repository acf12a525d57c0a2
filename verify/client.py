"""``checkpoint-verify``: the kiosk's client. Verify a traveller 1:1, or identify 1:N, from image files
or from the station's camera."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb

from verify.channel import add_channel_arguments, face_samples, fail, open_stub


def build_parser() -> argparse.ArgumentParser:
    """The kiosk client's command line."""
    p = argparse.ArgumentParser(prog="checkpoint-verify", description=__doc__.splitlines()[0])
    add_channel_arguments(p)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="1:1: is this traveller the holder of SUBJECT_ID?")
    v.add_argument("subject_id")
    v.add_argument("images", nargs="*", type=Path, help="face images (JPEG/PNG)")
    v.add_argument("--camera", action="store_true", help="capture from the station's camera instead")
    i = sub.add_parser("identify", help="1:N: who is this?")
    i.add_argument("images", nargs="*", type=Path)
    i.add_argument("--camera", action="store_true", help="capture from the station's camera instead")
    i.add_argument("--max-candidates", type=int, default=0)
    sub.add_parser("devices", help="list the station's devices")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one kiosk call and print its decision."""
    args = build_parser().parse_args(argv)
    stub = open_stub(args)
    try:
        if args.command == "verify":
            if not args.images and not args.camera:
                print("give face images, or --camera")
                return 2
            r = stub.Verify(pb.VerifyRequest(subject_id=args.subject_id,
                                             samples=face_samples(args.images, args.camera)), timeout=args.timeout)
            verdict = "MATCH" if r.match else "NO MATCH"
            print(f"{verdict} score {r.score:.2f} threshold {r.threshold:.2f} decision {r.decision_id}")
            return 0 if r.match else 1
        if args.command == "identify":
            r = stub.Identify(pb.IdentifyRequest(samples=face_samples(args.images, args.camera),
                                                 max_candidates=args.max_candidates), timeout=args.timeout)
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


if __name__ == "__main__":
    sys.exit(main())
