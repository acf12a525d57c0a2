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
