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
independent: read the counts as what they are.

A shifted capture identical to another of its image (the run's placement is the centre, or the window cannot
move inside the image: the same template) is dropped, so that no comparison is counted twice and no capture is
compared with itself. Two placements of one impression are not a genuine comparison of the set's (one image,
not two impressions): they are left out of the genuine count and counted apart. Usage::

    checkpoint-bench station-calibration --data ../shared/data/fingerprints/fvc2002
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class Captures:
    """The distinct captures of a set: template (None where refused), finger and image of each."""

    templates: list
    fingers: np.ndarray  # finger id ("101") per capture
    images: np.ndarray  # image (impression) file name per capture
    identical_dropped: int  # shifted captures identical to one already kept of their image


def distinct_captures(runs: Sequence[dict[str, Any]]) -> Captures:
    """The captures of each run (image name -> template or None), the centred first, without a capture whose
    template is identical to one already kept of its image (the same window: a duplicate, not a placement)."""
    templates, names, dropped = [], [], 0
    kept: dict[str, set[bytes]] = {}
    for by_name in runs:
        for name, template in sorted(by_name.items()):
            if template is not None:
                data = template.to_bytes()
                if data in kept.setdefault(name, set()):
                    dropped += 1
                    continue
                kept[name].add(data)
            templates.append(template)
            names.append(name)
    return Captures(templates, np.array([n.split("_")[0] for n in names]), np.array(names), dropped)


def captures(folder: Path, dpi: int, workers: int) -> Captures:
    """The distinct captures of every image cut centred and in each shifted run (:func:`distinct_captures`)."""
    return distinct_captures([extract_set(folder, dpi, True, workers, run)[0] for run in (None, *range(SHIFTED_RUNS))])


def pair_scores(c: Captures, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw similarities of every pair of the captures ``keep`` selects: (genuine: one finger, two impressions;
    same image: two placements of one impression, counted apart; impostor: two fingers)."""
    templates = [t for t, k in zip(c.templates, keep, strict=True) if k]
    genuine, impostor = finger_pair_scores(templates, c.fingers[keep], c.images[keep])
    images = c.images[keep]
    same = [finger_pair_scores([t for t, i in zip(templates, images, strict=True) if i == image],
                               np.zeros(int((images == image).sum())))[0] for image in np.unique(images)]
    return genuine, np.concatenate([np.zeros(0), *same]), impostor


def judge(shipped, station, genuine: np.ndarray, impostor: np.ndarray, same_image: np.ndarray | None = None
          ) -> dict:
    """Counts over one judged half: impostors at or over each level, genuine (and, apart, same-image pairs)
    under s = 3, by each calibration."""
    same_image = np.zeros(0) if same_image is None else same_image
    out = {"n_impostor": int(impostor.size), "n_genuine": int(genuine.size), "n_same_image": int(same_image.size)}
    for name, cal in (("shipped", shipped), ("station", station)):
        imp, gen = np.asarray(cal.score(impostor)), np.asarray(cal.score(genuine))
        out[name] = {**{f"impostor_at_s{level:g}": int((imp >= level).sum()) for level in LEVELS},
                     "genuine_under_s3": int((gen < 3.0).sum()),
                     "same_image_under_s3": int((np.asarray(cal.score(same_image)) < 3.0).sum())}
    return out


def run(args: argparse.Namespace) -> int:
    """Fit on one half of the fingers, judge on the other, both ways, per set; print the table."""
    from biometrics.scores import ScoreCalibration

    shipped = ScoreCalibration.for_modality("fingerprint")
    rows = []
    for set_name in args.sets:
        t0 = time.perf_counter()
        c = captures(args.data / set_name, SENSOR_DPI[set_name], args.workers)
        numbers = np.array([int(f) for f in c.fingers])
        total: dict = {}
        for half in (0, 1):
            fit_on, judged = numbers % 2 == half, numbers % 2 != half
            _, impostor_fit = finger_pair_scores([t for t, k in zip(c.templates, fit_on, strict=True) if k],
                                                 c.fingers[fit_on])
            station = ScoreCalibration.fit(impostor_fit, higher_is_better=True, modality="fingerprint")
            genuine, same_image, impostor = pair_scores(c, judged)
            part = judge(shipped, station, genuine, impostor, same_image)
            for key, value in part.items():
                if isinstance(value, dict):
                    total.setdefault(key, {})
                    for k, v in value.items():
                        total[key][k] = total[key].get(k, 0) + v
                else:
                    total[key] = total.get(key, 0) + value
        total.update(set=set_name, seconds=round(time.perf_counter() - t0, 1),
                     refused=sum(t is None for t in c.templates), captures=len(c.templates),
                     identical_dropped=c.identical_dropped)
        rows.append(total)
        print(f"<!-- {set_name}: {total['seconds']} s -->", file=sys.stderr, flush=True)
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    """The markdown table: per set, impostors at or over s = 2 and 3 (expected n/100, n/1000) and genuine
    comparisons under s = 3, by the shipped calibration and the station's; same-image pairs apart; then what
    was left out."""
    lines = ["| set | captures (refused; identical dropped) | impostor / genuine comparisons judged | at s >= 2: "
             "expected, shipped, station | at s >= 3: expected, shipped, station | genuine under s = 3: shipped, "
             "station | apart, same-image pairs under s = 3: shipped, station (of n) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        n = r["n_impostor"]
        lines.append(
            f"| {r['set']} | {r['captures']} ({r['refused']}; {r.get('identical_dropped', 0)}) | {n} / "
            f"{r['n_genuine']} | {n / 100:.0f}, {r['shipped']['impostor_at_s2']}, {r['station']['impostor_at_s2']} | "
            f"{n / 1000:.1f}, {r['shipped']['impostor_at_s3']}, {r['station']['impostor_at_s3']} | "
            f"{r['shipped']['genuine_under_s3']}, {r['station']['genuine_under_s3']} | "
            f"{r['shipped'].get('same_image_under_s3', 0)}, {r['station'].get('same_image_under_s3', 0)} "
            f"(of {r.get('n_same_image', 0)}) |")
    lines += ["", "Identical captures dropped: a shifted capture whose template equals one already kept of its image "
              "(the centre placement again, or a window that cannot move). Genuine: two impressions of one finger; "
              "two placements of one impression (same image) are not counted as genuine but apart."]
    return "\n".join(lines)
