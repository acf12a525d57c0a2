"""Face extraction on several threads of one process (``checkpoint-server --workers 0`` runs it on the gRPC
threads): every thread gets what one thread alone gets. dlib's model objects are not safe to run from two
threads at once (a review: one-face images read as 31 or 153 faces, and the process aborted), so the script
runs in a process of its own, where a crash is a failed test and not a dead test run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import FACES

SCRIPT = """
import sys, threading
import numpy as np
from biometrics.face import face_template_of

paths = sys.argv[1:]
images = [open(p, "rb").read() for p in paths]
alone = [face_template_of(b, "enrolment") for b in images]  # one thread: the reference
failures = []

def run(offset):
    for round_ in range(2):
        for i in range(len(images)):
            k = (i + offset) % len(images)
            got = face_template_of(images[k], "enrolment")
            if got.box != alone[k].box or not np.array_equal(got.template, alone[k].template):
                failures.append((offset, k))

threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("mismatches", len(failures))
"""


def test_eight_threads_extracting_at_once_get_what_one_thread_gets() -> None:
    paths = [str(FACES / name) for name in ("Hans_Blix_0001.jpg", "Kofi_Annan_0001.jpg", "Kofi_Annan_0004.jpg",
                                            "Megawati_Sukarnoputri_0001.jpg")]
    done = subprocess.run([sys.executable, "-c", SCRIPT, *paths], capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parent.parent)
    assert (done.returncode, done.stdout.strip()) == (0, "mismatches 0"), done.stderr[-2000:]
