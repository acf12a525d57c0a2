"""checkpoint-server's start and stop: a port it cannot bind is a message, a burst of signals a clean stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ServerProcess


@pytest.mark.server
def test_a_burst_of_signals_stops_the_server_gracefully(tmp_path: Path) -> None:
    """Ctrl-C pressed twice, or ``timeout`` signalling the process and its group: every signal after the first
    must not keep the server from stopping (a handler that took a lock could deadlock on a second one)."""
    server = ServerProcess(tmp_path).start()
    assert server.proc is not None
    until = time.monotonic() + 3.0
    while server.proc.poll() is None and time.monotonic() < until:  # signals throughout the graceful stop
        server.proc.send_signal(signal.SIGTERM)
    try:
        code = server.proc.wait(60)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        pytest.fail("the server did not stop after a burst of SIGTERM:\n" + "".join(server.output[-20:]))
    assert code == 0
    deadline = time.monotonic() + 5
    while not any("stopped" in line for line in server.output) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("stopped" in line for line in server.output)  # the graceful path ran to its end


def test_a_port_in_use_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "verify.server", "--plaintext", "--workers", "0",
                               "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
                               "--key-dir", str(tmp_path / "keys")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"--listen 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


EMPTY_FOLDER = Path(__file__).resolve().parent / "data" / "camera"  # videos: no fingerprint image to serve


@pytest.mark.parametrize(("options", "message"), [
    (("--scanner", "emulator:/nonexistent/prints"), "--scanner emulator:/nonexistent/prints: fingerprint image "
                                                    "folder not found"),
    (("--scanner", f"emulator:{EMPTY_FOLDER}"), "no PNG or TIFF fingerprint images"),
    (("--scanner", "/dev/ttyUSB0:9601"), "--scanner /dev/ttyUSB0:9601: baud rate must be a multiple of 9600"),
    (("--camera", " "), "--camera ' ': empty camera source"),
    (("--log-level", "verbose"), "argument --log-level: invalid choice: 'VERBOSE'"),
])
def test_a_device_flag_or_log_level_that_cannot_work_is_refused_at_start(tmp_path: Path, options, message) -> None:
    """Review: these ended in a traceback (exit status 1) after the data directory, the keys and the gallery were
    opened, and left open; every other bad flag is a "checkpoint-server: ..." line and exit status 2."""
    from helpers import refused_at_start

    done = refused_at_start(tmp_path, "--workers", "0", *options)  # exit 2, the data directory never touched
    assert "Traceback" not in done.stderr
    assert message in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("checkpoint-server: "), done.stderr


def test_a_log_level_in_any_case_is_taken() -> None:
    from verify.server import build_parser

    assert build_parser().parse_args(["--log-level", "debug"]).log_level == "DEBUG"
