"""``checkpoint-bench fingerprint-capture``: the measures the capture checks use, per set, as docs/fingerprint.md
reports them (the test prints pass; a face photograph's share is under the threshold, its colour spread over)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from helpers import DATA, FACES

from benchmarks import fingerprint_capture as fcap
from biometrics.fingerprint.capture import MAX_CHANNEL_SPREAD, MIN_RIDGE_SHARE


def test_a_print_and_a_face_measure_either_side_of_the_thresholds() -> None:
    spread, share, seconds = fcap.measure(DATA / "fingerprints" / "DB1_B_101_1.png", 500)
    assert spread == 0.0 and share >= MIN_RIDGE_SHARE and seconds >= 0
    spread, share, _ = fcap.measure(FACES / "Hans_Blix_0001.jpg", 500)
    assert spread >= MAX_CHANNEL_SPREAD and share < MIN_RIDGE_SHARE


def test_the_summary_names_the_minimum_and_the_empty_foregrounds() -> None:
    line = fcap.summary("x", np.array([0.5, np.nan, 0.9, 1.0]))
    assert line.startswith("x: n 3 (empty foreground 1) min 0.500 ") and line.endswith("max 1.000")


def test_the_command_reports_the_test_prints(capsys, tmp_path: Path) -> None:
    args = argparse.Namespace(data=tmp_path, sets=["tests"], lfw=tmp_path, degradations=[], every=1)
    assert fcap.run(args) == 0
    out = capsys.readouterr().out
    assert f"tests: 6 images; under MIN_RIDGE_SHARE {MIN_RIDGE_SHARE}: 0;" in out
