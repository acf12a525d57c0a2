"""Does a station's own fingerprint calibration hold the FMR its threshold states, where the shipped one does not?

For each FVC2002 set taken as another station's scanner (DB2_B-DB4_B by default: sensors the shipped calibration,
fitted on DB1_B, never saw), every image is cut as the station's ZFM gives it (``fingerprint_eval.sensor_cut``:
500 dpi, 256x288, 4 bits), centred and in the shifted protocol's four runs of placements (five captures an
impression). The fingers are split in two halves (odd and even numbers); a station calibration
(``checkpoint-bench calibrate --modality fingerprint``'s fit: every pair of captures of different fingers) is
fitted on one half and judged on the other, then the halves swap, so no finger is judged by a calibration it
helped fit. Printed per set: the impostor comparisons of the judged halves at or over s = 2 and s = 3 (FMR
1/100 and 1/1000 stated) under the shipped calibration and under the station's, and the genuine comparisons
under s = 3. Captures of one impression in different placements share the image, so the comparisons are not
independent: read the counts as what they are. Usage::

    checkpoint-bench station-calibration --data ../shared/data/fingerprints/fvc2002
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.calibrate import finger_pair_scores
from benchmarks.fingerprint_eval import DEFAULT_DATA, SENSOR_DPI, SHIFTED_RUNS, extract_set

COMMAND = "station-calibration"
LEVELS = (2.0, 3.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the fvc2002 folder")
    parser.add_argument("--sets", nargs="+", default=["DB2_B", "DB3_B", "DB4_B"], choices=list(SENSOR_DPI))
    parser.add_argument("--workers", type=int, default=2)


def captures(folder: Path, dpi: int, workers: int) -> tuple[list, np.ndarray]:
    """Templates of every image cut centred and in each shifted run, with each one's finger."""
    templates, fingers = [], []
    for run in (None, *range(SHIFTED_RUNS)):
        by_name, _ = extract_set(folder, dpi, True, workers, run)
        for name, template in sorted(by_name.items()):
            templates.append(template)
            fingers.append(name.split("_")[0])
    return templates, np.array(fingers)


def judge(shipped, station, genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """Counts over one judged half: impostors at or over each level, genuine under s = 3, by each calibration."""
    out = {"n_impostor": int(impostor.size), "n_genuine": int(genuine.size)}
    for name, cal in (("shipped", shipped), ("station", station)):
        imp, gen = np.asarray(cal.score(impostor)), np.asarray(cal.score(genuine))
        out[name] = {**{f"impostor_at_s{level:g}": int((imp >= level).sum()) for level in LEVELS},
                     "genuine_under_s3": int((gen < 3.0).sum())}
    return out


def run(args: argparse.Namespace) -> int:
    """Fit on one half of the fingers, judge on the other, both ways, per set; print the table."""
    from biometrics.scores import ScoreCalibration

    shipped = ScoreCalibration.for_modality("fingerprint")
    rows = []
    for set_name in args.sets:
        t0 = time.perf_counter()
        templates, fingers = captures(args.data / set_name, SENSOR_DPI[set_name], args.workers)
        numbers = np.array([int(f) for f in fingers])
        total: dict = {}
        for half in (0, 1):
            fit_on, judged = numbers % 2 == half, numbers % 2 != half
            _, impostor_fit = finger_pair_scores([t for t, k in zip(templates, fit_on, strict=True) if k],
                                                 fingers[fit_on])
            station = ScoreCalibration.fit(impostor_fit, higher_is_better=True, modality="fingerprint")
            genuine, impostor = finger_pair_scores([t for t, k in zip(templates, judged, strict=True) if k],
                                                   fingers[judged])
            part = judge(shipped, station, genuine, impostor)
            for key, value in part.items():
                if isinstance(value, dict):
                    total.setdefault(key, {})
                    for k, v in value.items():
                        total[key][k] = total[key].get(k, 0) + v
                else:
                    total[key] = total.get(key, 0) + value
        total.update(set=set_name, seconds=round(time.perf_counter() - t0, 1),
                     refused=sum(t is None for t in templates), captures=len(templates))
        rows.append(total)
        print(f"<!-- {set_name}: {total['seconds']} s -->", file=sys.stderr, flush=True)
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    """The markdown table: per set, impostors at or over s = 2 and 3 (expected n/100, n/1000) and genuine
    comparisons under s = 3, by the shipped calibration and the station's."""
    lines = ["| set | captures (refused) | impostor / genuine comparisons judged | at s >= 2: expected, shipped, "
             "station | at s >= 3: expected, shipped, station | genuine under s = 3: shipped, station |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        n = r["n_impostor"]
        lines.append(
            f"| {r['set']} | {r['captures']} ({r['refused']}) | {n} / {r['n_genuine']} | {n / 100:.0f}, "
            f"{r['shipped']['impostor_at_s2']}, {r['station']['impostor_at_s2']} | {n / 1000:.1f}, "
            f"{r['shipped']['impostor_at_s3']}, {r['station']['impostor_at_s3']} | "
            f"{r['shipped']['genuine_under_s3']}, {r['station']['genuine_under_s3']} |")
    return "\n".join(lines)
