"""Fingerprint accuracy on FVC2002 (EER, FMR100, FMR1000, ZeroFMR), full images and ZFM-sized cuts.

Rates follow ``benchmarks.metrics`` (the conventions of ``checkpoint-bench accuracy``): a comparison
matches when score >= threshold, and the EER is FVC2000's (Maio et al. 2002), given with its interval
``[EER_low, EER_high]``.

Protocols (per set, DB1_B..DB4_B):
- ``full``: every pair of the set's pairs.csv (280 same-finger, 2,880 different-finger), whole images at
  the set's sensor resolution (README: DB2_B 569 dpi, the others 500 dpi).
- ``sensor1``: the same pairs, each image cut as the ZFM scanner would give it: resampled to 500 dpi,
  centre-cropped to 256x288 (w x h), grey values quantised to 16 levels (4 bits).
- ``sensor3``: ZFM-sized cuts, three-impression enrolment: each finger's reference is impressions 1-3
  (score = best of the three), probed with impressions 4-8 of every finger: 10 x 5 = 50 same-finger and
  10 x 9 x 5 = 450 different-finger comparisons.
- ``shifted``: the pairs of pairs.csv, each image cut as the ZFM gives it but with the finger placed off
  centre: the 256x288 window moves by one of ``SHIFTS`` (image i of run k takes shift (i + k) mod 5), in
  ``SHIFTED_RUNS`` runs pooled (4 x 280 same-finger, 4 x 2,880 different-finger). Small windows that overlap
  in part are the deployed case, and four times the genuine pairs make the tuning set's figures less
  coarse than one pair in 280 (0.36%): the tuning criterion for DB1_B.

A capture the extractor refuses (``PoorQuality``) takes part with score 0 (counted as a failure to
extract). Parameters were chosen on DB1_B (``full``; ``shifted`` is the finer tuning criterion added
since); nothing here depends on the set but the dpi.
``--calibrate`` first writes ``biometrics/calibration/fingerprint.json`` from the DB1_B ``sensor1`` and
``shifted`` impostor scores pooled (the tuning set, cut as the deployed ZFM sensor gives its images, centred
and placed off centre: 14,400 comparisons, so FMR 1/1000 rests on 14 impostors, not 3).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from benchmarks.cli import script_main

COMMAND = "fingerprint-eval"
DEFAULT_DATA = Path("../shared/data/fingerprints/fvc2002")
SENSOR_DPI = {"DB1_B": 500, "DB2_B": 569, "DB3_B": 500, "DB4_B": 500}  # from the data set's README
SENSOR_SIZE = (256, 288)  # ZFM image, width x height, about 500 dpi
CALIBRATION_SET = "DB1_B"
PROTOCOLS = ("full", "sensor1", "sensor3", "shifted")
SHIFTS = ((0, 0), (-40, -30), (40, -30), (-40, 30), (40, 30))  # window placements (x, y) from the centre, px
SHIFTED_RUNS = 4


def sensor_cut(grey: np.ndarray, dpi: int, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The image as a ZFM sensor would give it: 500 dpi, a 256x288 window (the centre one moved by ``shift``
    (x, y) pixels, kept inside the image; padded white where the image is smaller), 4 bits."""
    if dpi != 500:
        scale = 500.0 / dpi
        grey = cv2.resize(grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    w, h = SENSOR_SIZE
    out = np.full((h, w), 255, dtype=np.uint8)
    gh, gw = grey.shape
    sy = min(max(0, (gh - h) // 2 + shift[1]), max(0, gh - h))
    sx = min(max(0, (gw - w) // 2 + shift[0]), max(0, gw - w))
    crop = grey[sy:sy + h, sx:sx + w]
    oy, ox = (h - crop.shape[0]) // 2, (w - crop.shape[1]) // 2
    out[oy:oy + crop.shape[0], ox:ox + crop.shape[1]] = crop
    return ((out >> 4) * 17).astype(np.uint8)


def shift_of(index: int, run: int) -> tuple[int, int]:
    """Window placement of the ``index``-th image (sorted by name) in run ``run`` of the shifted protocol."""
    return SHIFTS[(index + run) % len(SHIFTS)]


def extract_job(job: tuple[str, int, bool, tuple[int, int]]) -> tuple[str, bytes | None, str]:
    """(path, template bytes or None, refusal message) of one image (``job``: path, dpi, cut as the ZFM gives
    it, window shift), for a worker process."""
    from biometrics.errors import InvalidSample
    from biometrics.fingerprint import extract_fingerprint

    path, dpi, cut, shift = job
    grey = np.array(Image.open(path).convert("L"))
    if cut:
        grey, dpi = sensor_cut(grey, dpi, shift), 500
    try:
        return path, extract_fingerprint(grey, dpi=dpi).to_bytes(), ""
    except InvalidSample as exc:
        return path, None, str(exc)


def extract_set(folder: Path, dpi: int, cut: bool, workers: int, run: int | None = None
                ) -> tuple[dict, list[str]]:
    """Templates of every image of a set by file name (None where refused), and the refusal messages.

    ``cut``: as the ZFM gives it; ``run``: with the shifted protocol's placements of that run (else centred).
    """
    from biometrics.fingerprint import FingerprintTemplate

    jobs = [(str(p), dpi, cut, (0, 0) if run is None else shift_of(i, run))
            for i, p in enumerate(sorted(folder.glob("*.png")))]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(extract_job, jobs, chunksize=4))
    else:
        results = [extract_job(j) for j in jobs]
    templates, failures = {}, []
    for path, data, message in results:
        templates[Path(path).name] = FingerprintTemplate.from_bytes(data) if data else None
        if data is None:
            failures.append(f"{Path(path).name}: {message}")
    return templates, failures


def error_rates(genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """EER (with its FVC interval), FNMR at FMR 1%, 0.1% and 0, by the project's one set of conventions
    (``benchmarks.metrics``: a comparison matches when score >= threshold; EER as FVC2000 defines it)."""
    from benchmarks.metrics import VerificationScores, equal_error_rate, fnmr_at_fmr, zero_fmr

    scores = VerificationScores(genuine=np.asarray(genuine, dtype=np.float64),
                                impostor=np.asarray(impostor, dtype=np.float64))
    eer = equal_error_rate(scores)
    return {"eer": eer.eer, "eer_low": eer.low, "eer_high": eer.high,
            "fmr100": fnmr_at_fmr(scores, 0.01).fnmr, "fmr1000": fnmr_at_fmr(scores, 0.001).fnmr,
            "zero_fmr": zero_fmr(scores).fnmr, "n_genuine": len(genuine), "n_impostor": len(impostor)}


def score_pairs(folder: Path, templates: dict, probes: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every pair in pairs.csv: (genuine, impostor). ``probes``: the templates of each pair's second
    image (``path_b``) come from there instead (another capture of the same images)."""
    from biometrics.fingerprint import compare_fingerprints

    probes = templates if probes is None else probes
    genuine, impostor = [], []
    with open(folder / "pairs.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            a, b = templates[row["path_a"]], probes[row["path_b"]]
            s = compare_fingerprints(a, b) if a is not None and b is not None else 0.0
            (genuine if row["same"] == "1" else impostor).append(s)
    return np.array(genuine), np.array(impostor)


def score_multi(templates: dict, enrol=(1, 2, 3), probes=(4, 5, 6, 7, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Three-impression references against single-impression probes: (genuine, impostor)."""
    from biometrics.fingerprint import compare_fingerprint_gallery

    fingers = sorted({name.split("_")[0] for name in templates})
    refs = [[templates[f"{f}_{i}.png"] for i in enrol if templates[f"{f}_{i}.png"] is not None] for f in fingers]
    genuine, impostor = [], []
    for pf in fingers:
        for i in probes:
            probe = templates[f"{pf}_{i}.png"]
            scores = (compare_fingerprint_gallery(probe, refs) if probe is not None
                      else np.zeros(len(fingers)))
            for rf, s in zip(fingers, scores, strict=True):
                (genuine if rf == pf else impostor).append(float(s))
    return np.array(genuine), np.array(impostor)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the fvc2002 folder")
    parser.add_argument("--sets", nargs="+", default=["DB1_B", "DB2_B", "DB3_B", "DB4_B"])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write figures (and raw scores) here")
    parser.add_argument("--plots", type=Path, help="write DET curves here, one plot per protocol (det-PROTOCOL.png)")
    parser.add_argument("--calibrate", action="store_true",
                        help=f"write biometrics/calibration/fingerprint.json from {CALIBRATION_SET} sensor1 + shifted "
                             "impostors")


class Measurements:
    """Templates and raw scores of each set and protocol, each computed once in a run: the calibration and
    the table ask for DB1_B's ZFM cuts alike."""

    def __init__(self, data: Path, workers: int) -> None:
        self.data = data
        self.workers = workers
        self._templates: dict[tuple[str, bool], tuple[dict, list[str]]] = {}
        self._scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, list[str]]] = {}

    def templates(self, name: str, cut: bool) -> tuple[dict, list[str]]:
        """A set's templates, whole or cut as the ZFM gives them (centred), and its refusals."""
        if (name, cut) not in self._templates:
            t0 = time.perf_counter()
            self._templates[name, cut] = extract_set(self.data / name, SENSOR_DPI[name], cut, self.workers)
            print(f"<!-- {name} {'cut' if cut else 'full'}: extracted in {time.perf_counter() - t0:.1f} s -->",
                  file=sys.stderr)
        return self._templates[name, cut]

    def scores(self, name: str, protocol: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(genuine, impostor, refusals) of a set under a protocol."""
        if (name, protocol) not in self._scores:
            folder = self.data / name
            if protocol == "shifted":
                self._scores[name, protocol] = score_shifted(folder, SENSOR_DPI[name], self.workers)
            else:
                templates, failures = self.templates(name, protocol != "full")
                genuine, impostor = (score_multi(templates) if protocol == "sensor3"
                                     else score_pairs(folder, templates))
                self._scores[name, protocol] = (genuine, impostor, failures)
        return self._scores[name, protocol]


def run(args: argparse.Namespace) -> int:
    """Measure and print a table."""
    results, raw = [], {}
    measured = Measurements(args.data, args.workers)
    if args.calibrate:
        parts = [measured.scores(CALIBRATION_SET, protocol) for protocol in ("sensor1", "shifted")]
        write_calibration(np.concatenate([impostor for _, impostor, _ in parts]),
                          np.concatenate([genuine for genuine, _, _ in parts]),
                          distinct_pairs=len(parts[0][1]))  # the shifted runs compare the same pairs again
    print("| set | protocol | EER % [FVC interval] | FMR100 % | FMR1000 % | ZeroFMR % | FMR % at s>=3 "
          "| FNMR % at s>=3 | genuine | impostor | refused |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        for protocol in args.protocols:
            genuine, impostor, failures = measured.scores(name, protocol)
            report(results, raw, name, protocol, SENSOR_DPI[name], genuine, impostor, failures,
                   3 if protocol == "sensor3" else 1)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "scores": raw}, indent=1))
    if args.plots:
        for path in det_plots(results, raw, args.plots):
            print(f"<!-- wrote {path} -->", file=sys.stderr)
    return 0


def det_plots(results: list[dict], raw: dict, folder: Path) -> list[Path]:
    """One DET plot per protocol, a curve per set, each marked at its EER."""
    from benchmarks import plots
    from benchmarks.metrics import VerificationScores, det_curve

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for protocol in dict.fromkeys(r["protocol"] for r in results):
        curves, marks = {}, {}
        for r in (r for r in results if r["protocol"] == protocol):
            label = f"{r['set']} ({r['n_genuine']} / {r['n_impostor']})"
            scores = raw[f"{r['set']}/{protocol}"]
            curves[label] = det_curve(VerificationScores(genuine=np.asarray(scores["genuine"]),
                                                         impostor=np.asarray(scores["impostor"])))
            marks[label] = [(r["eer"], r["eer"], f"EER {100 * r['eer']:.2f}%")]
        written.append(plots.det_plot(curves, folder / f"det-{protocol}.png",
                                      f"DET, FVC2002 {protocol} (genuine / impostor comparisons)", marks))
    return written


def score_shifted(folder: Path, dpi: int, workers: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The shifted protocol: pairs.csv scored in each of ``SHIFTED_RUNS`` placements, pooled."""
    genuine, impostor, failures = [], [], []
    for run in range(SHIFTED_RUNS):
        templates, refused = extract_set(folder, dpi, True, workers, run=run)
        g, i = score_pairs(folder, templates)
        genuine.append(g)
        impostor.append(i)
        failures += [f"run {run}: {message}" for message in refused]
    return np.concatenate(genuine), np.concatenate(impostor), failures


def report(results: list, raw: dict, name: str, protocol: str, dpi: int, genuine: np.ndarray,
           impostor: np.ndarray, failures: list[str], k: int) -> None:
    """Add one set and protocol's figures to ``results`` and ``raw`` and print its table row."""
    rates = error_rates(genuine, impostor)
    rates.update({"set": name, "protocol": protocol, "dpi": dpi, "refused": failures})
    rates.update(at_service_threshold(genuine, impostor, k))
    results.append(rates)
    raw[f"{name}/{protocol}"] = {"genuine": genuine.tolist(), "impostor": impostor.tolist()}
    print(f"| {name} | {protocol} | {100 * rates['eer']:.2f} [{100 * rates['eer_low']:.2f}, "
          f"{100 * rates['eer_high']:.2f}] | {100 * rates['fmr100']:.2f} | "
          f"{100 * rates['fmr1000']:.2f} | {100 * rates['zero_fmr']:.2f} | "
          f"{100 * rates['fmr_at_s3']:.2f} | {100 * rates['fnmr_at_s3']:.2f} | {rates['n_genuine']} | "
          f"{rates['n_impostor']} | {len(failures)} |", flush=True)


def at_service_threshold(genuine: np.ndarray, impostor: np.ndarray, k: int) -> dict:
    """FMR and FNMR at the service's operating point s >= 3 (FMR 1/1000 by the shipped calibration), with
    the service's best-of-k correction for a k-impression reference."""
    from biometrics.fingerprint.fusion import best_of_k
    from biometrics.scores import ScoreCalibration

    calibration = ScoreCalibration.for_modality("fingerprint")
    def s(raw: np.ndarray) -> np.ndarray:
        return best_of_k(np.atleast_1d(calibration.score(raw)), k)
    return {"fmr_at_s3": float((s(impostor) >= 3.0).mean()), "fnmr_at_s3": float((s(genuine) < 3.0).mean())}


def write_calibration(impostor: np.ndarray, genuine: np.ndarray, distinct_pairs: int) -> None:
    """Fit and save the fingerprint score calibration from the tuning set's impostor scores, of which
    ``distinct_pairs`` are distinct pairs of images (the rest compare them again in shifted windows)."""
    from biometrics.scores import CALIBRATION_DIR, ScoreCalibration

    calibration = ScoreCalibration.fit(
        impostor, higher_is_better=True, modality="fingerprint",
        source=(f"FVC2002 {CALIBRATION_SET} (500 dpi optical), {len(impostor)} different-finger comparisons: "
                "the 2,880 of pairs.csv with each image cut as a ZFM sensor gives it (500 dpi, 256x288, 16 grey "
                f"levels), once centred (sensor1) and in {SHIFTED_RUNS} runs of placements shifted by up to "
                "40 x 30 px (shifted); one impression per side; MCC bit cylinders + LSS-R raw similarity"))
    calibration.n_distinct_pairs = distinct_pairs
    calibration.notes.update({"tuning_set": CALIBRATION_SET, "protocol": "sensor1 + shifted",
                              "n_genuine": len(genuine),
                              "genuine_median_raw": float(np.median(genuine)),
                              "multi_impression": "a reference of k impressions scores its best: its FMR is at "
                                                  "most k times the single-impression FMR, so the service "
                                                  "subtracts log10(k) (biometrics.fingerprint.fusion.best_of_k)"})
    path = CALIBRATION_DIR / "fingerprint.json"
    calibration.save(path)
    print(f"<!-- wrote {path} -->", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point when run as a script."""
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
