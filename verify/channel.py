"""Client channels to a checkpoint server, shared by the kiosk and desk tools."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc

from verify.tls import add_tls_arguments, channel_credentials, tls_files

MIB = 1024 * 1024


def add_channel_arguments(parser: argparse.ArgumentParser) -> None:
    """--target, --timeout, and the mutual-TLS files (--tls-dir, or --cert --key --ca; plaintext without)."""
    parser.add_argument("--target", default="127.0.0.1:50051", help="server HOST:PORT")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a call gives up")
    add_tls_arguments(parser, side="client")


def open_stub(args: argparse.Namespace) -> pb_grpc.CheckpointStub:
    """A stub on a channel to ``args.target``: mutual TLS when TLS files are given, else plaintext (loopback demos)."""
    options = [("grpc.max_send_message_length", 16 * MIB), ("grpc.max_receive_message_length", 16 * MIB)]
    files = tls_files(args, side="client")
    if files is None:
        return pb_grpc.CheckpointStub(grpc.insecure_channel(args.target, options=options))
    return pb_grpc.CheckpointStub(grpc.secure_channel(args.target, channel_credentials(files), options=options))


def face_samples(paths: list[Path], capture: bool = False, device: str = "") -> list[pb.Sample]:
    """Face samples from image files, or one capture request to the station's camera."""
    if capture:
        return [pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture(device=device))]
    return [pb.Sample(modality=pb.FACE, image=p.read_bytes()) for p in paths]


def fail(error: grpc.RpcError) -> int:
    """Print a call's refusal as the server gave it; exit status 2."""
    print(f"refused: {error.code().name}: {error.details()}")
    return 2
