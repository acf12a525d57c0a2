"""Shared test helpers: a real checkpoint-server process on loopback, and the test data paths."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from checkpoint.v1 import checkpoint_pb2 as pb
from checkpoint.v1 import checkpoint_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from biometrics.fingerprint.template import FingerprintTemplate

DATA = Path(__file__).resolve().parent / "data"
FACES = DATA / "faces"
START_TIMEOUT = 60.0


def face(name: str) -> bytes:
    """Bytes of a face image in tests/data/faces."""
    return (FACES / name).read_bytes()


def side_by_side(first: tuple[str, int], second: tuple[str, int], size: tuple[int, int] = (500, 250)) -> bytes:
    """JPEG of two tests/data/faces images, each (name, side in px) scaled to that square, on a grey canvas of
    ``size`` (width, height): the first at the left edge, the second at the right, both centred vertically.
    Two travellers at a kiosk (sides alike), or a traveller with someone far behind (a small second face)."""
    import cv2
    import numpy as np

    width, height = size
    canvas = np.full((height, width, 3), 128, np.uint8)
    for (name, side), left in ((first, 0), (second, width - second[1])):
        image = cv2.resize(cv2.imread(str(FACES / name)), (side, side), interpolation=cv2.INTER_AREA)
        top = (height - side) // 2
        canvas[top : top + side, left : left + side] = image
    return cv2.imencode(".jpg", canvas)[1].tobytes()


def face_sample(name: str) -> pb.Sample:
    """A FACE Sample message carrying an image from tests/data/faces."""
    return pb.Sample(modality=pb.FACE, image=face(name))


def fingerprint_image(name: str) -> Path:
    """A sample of tests/data/fingerprints, or of fingerprints-more (impressions the emulator does not serve)."""
    path = DATA / "fingerprints" / f"{name}.png"
    return path if path.exists() else DATA / "fingerprints-more" / f"{name}.png"


def fingerprint_template(name: str) -> FingerprintTemplate:
    """The template the service extracts from :func:`fingerprint_image` ``name``."""
    import numpy as np
    from PIL import Image

    import biometrics.fingerprint as fp

    return fp.extract_fingerprint(np.array(Image.open(fingerprint_image(name)).convert("L")))


def measured_fingerprint_calibration(folder: Path) -> Path:
    """A station's own fingerprint calibration, for tests of what a station that has one does (its kiosk's
    attempts, the desk): the shipped calibration's scores stated as measured on as many distinct pairs of
    captures as comparisons, as a station's own is (100 fingers, four placements each: 79,200 pairs), so that a
    decision on fingerprints alone is the station's to make. Not a calibration of anything: the tests that
    use it are about the station's behaviour, not its scores. Written to ``folder``; its path."""
    import json

    from biometrics.scores import CALIBRATION_DIR

    doc = json.loads((CALIBRATION_DIR / "fingerprint.json").read_text())
    doc.update(n_distinct_pairs=None, source="tests: the shipped scores, stated as a station's own")
    path = folder / "station-fingerprint.json"
    path.write_text(json.dumps(doc))
    return path


def refused_at_start(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``checkpoint-server --plaintext`` on a fresh data directory under ``tmp_path`` with ``options``, expected to
    refuse them at start (exit status 2, before the data directory is touched); its output."""
    done = subprocess.run([sys.executable, "-m", "verify.server", "--plaintext", "--listen", "127.0.0.1:0",
                           "--data-dir", str(tmp_path / "data"), "--key-dir", str(tmp_path / "keys"), *options],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "data").exists()
    return done


@dataclass
class ServerProcess:
    """A ``checkpoint-server`` subprocess listening on a free loopback port.

    Plaintext (``--plaintext``, every caller an officer) unless ``tls`` names a directory written by
    ``checkpoint-certs init``: then the server uses ``tls/server`` and :meth:`stub` takes a role.
    Face extraction runs in one worker process (``--workers 1``: the production path, at half the memory and
    start-up work of the default one per core) unless ``args`` say otherwise.
    """

    data_dir: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    output: list[str] = field(default_factory=list)
    tls: Path | None = None
    key_dir: Path | None = None  # None: DATA_DIR's sibling DATA_DIR-keys (never inside the data directory)

    def __post_init__(self) -> None:
        if self.key_dir is None:
            self.key_dir = self.data_dir.parent / f"{self.data_dir.name}-keys"

    @property
    def keys(self) -> Path:
        """The server's key directory (outside its data directory)."""
        return self.key_dir or self.data_dir.parent / f"{self.data_dir.name}-keys"

    @property
    def target(self) -> str:
        """HOST:PORT of the server."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Start the server and wait until it says where it listens."""
        cmd = [sys.executable, "-m", "verify.server", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir),
               "--key-dir", str(self.key_dir), *self.transport_args(), *self.worker_args(), *self.args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            found = re.search(r"listening on [\d.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                # Keep draining output so the server never blocks on a full pipe.
                import threading

                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def worker_args(self) -> list[str]:
        """``--workers 1``, unless the test's own ``args`` set ``--workers``."""
        return [] if any(a.startswith("--workers") for a in self.args) else ["--workers", "1"]

    def transport_args(self) -> list[str]:
        """``--tls-dir TLS/server`` or ``--plaintext``."""
        return ["--tls-dir", str(self.tls / "server")] if self.tls else ["--plaintext"]

    def channel(self, role: str = "officer") -> grpc.Channel:
        """A new channel to the server: plaintext, or mutual TLS with the certificate in ``tls/<role>``."""
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if self.tls is None:
            return grpc.insecure_channel(self.target, options=options)
        d = self.tls / role
        creds = grpc.ssl_channel_credentials((d / "ca.pem").read_bytes(), (d / "client.key").read_bytes(),
                                             (d / "client.pem").read_bytes())
        return grpc.secure_channel(self.target, creds, options=options)

    def stub(self, role: str = "officer") -> pb_grpc.CheckpointStub:
        """A stub on a new channel to the server (see :meth:`channel`)."""
        return pb_grpc.CheckpointStub(self.channel(role))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal the server and wait for it to exit; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
