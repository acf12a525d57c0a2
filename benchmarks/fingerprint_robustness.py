"""Fingerprint generalisation: EER, FMR100, FMR1000 on every FVC2002 set, clean and degraded, old vs new extractor.

Each set (DB1_B..DB4_B, whole images at the README's resolution) is scored clean and under each degradation
of ``benchmarks.degrade`` (contrast, blur, scale 0.9 / 1.1, rotation up to 30 degrees, dry, wet, textured
background), each image degraded deterministically (seeded by set, image and degradation). Two pair lists,
from the same templates (``benchmarks.fingerprint_eval``'s scoring and error rates):

- ``all``: every pair of the set's pairs.csv (280 same-finger, 2,880 different-finger);
- ``fvc``: the official FVC protocol: the 280 same-finger pairs and the 45 pairs of first impressions of
  different fingers (so FMR100 and FMR1000 rest on 45 impostors: read the EER);
- ``probe``: every pair of pairs.csv with its first image (the reference, as enrolled at a desk) clean and
  only its second (the probe, as a kiosk captures it) degraded. ``all`` and ``fvc`` degrade both images,
  and the target is judged on them; ``probe`` is what one bad capture at the kiosk costs against a
  desk enrolment (its clean row is ``all``'s).

Extractors: ``new``, the working tree's; ``old``, the extractor of commit ``OLD_COMMIT`` (its
``biometrics`` package exported with ``git archive`` and imported in worker processes of its own). Both
templates are compared by the working tree's matcher (the template format and cylinders are the same).
Templates are cached per (extractor code version, set, degradation) under ``--cache``, so a re-run only
extracts what changed. The target: no degradation more than doubles a set's clean EER (per extractor).
Run under ``flock -x /tmp/checkpoint-bench.lock``.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import pickle
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.degrade import DEGRADATIONS, EXTRA_DEGRADATIONS, degrade, seed_for
from benchmarks.fingerprint_eval import DEFAULT_DATA, SENSOR_DPI, error_rates, score_pairs
from benchmarks.provenance import code_version as code_version_of
from benchmarks.provenance import fingerprint_extractor_sources

COMMAND = "fingerprint-robustness"
OLD_COMMIT = "d7fb947"
EXTRACTORS = ("new", "old")
KINDS = ("clean", *DEGRADATIONS)
PROTOCOLS = ("all", "fvc", "probe")
ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the fvc2002 folder")
    parser.add_argument("--sets", nargs="+", default=list(SENSOR_DPI))
    parser.add_argument("--degradations", nargs="+", default=list(KINDS), choices=(*KINDS, *EXTRA_DEGRADATIONS),
                        help="default: clean and the target's degradations; thin / thick (the 3x3 morphology of "
                             "dry / wet alone) on request")
    parser.add_argument("--extractors", nargs="+", default=list(EXTRACTORS), choices=EXTRACTORS)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS,
                        help="pair lists to score (the target is judged on all; probe doubles the comparisons)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("bench-out/fingerprint-robustness"),
                        help="template cache folder (per extractor version, set, degradation)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here")


def code_version(extractor: str) -> str:
    """Key of an extractor's templates: the sources that make them (:func:`benchmarks.provenance.
    fingerprint_extractor_sources`; ``old``: its commit), and the degradations' source."""
    degradations = (ROOT / "benchmarks" / "degrade.py").read_bytes()
    if extractor == "old":
        return code_version_of(f"old-{OLD_COMMIT}", [], degradations + OLD_COMMIT.encode())
    return code_version_of("new", fingerprint_extractor_sources(ROOT), degradations)


def old_source(cache: Path) -> Path:
    """A folder holding the ``biometrics`` package of ``OLD_COMMIT`` (exported once)."""
    folder = cache / f"src-{OLD_COMMIT}"
    if not (folder / "biometrics" / "fingerprint" / "__init__.py").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT, "biometrics"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def _use_source(folder: str | None) -> None:
    """Worker initialiser: import ``biometrics`` from ``folder`` (the old extractor) instead of the tree's."""
    if folder:
        sys.path.insert(0, folder)
    import biometrics

    if folder and not str(Path(biometrics.__file__).resolve()).startswith(str(Path(folder).resolve())):
        raise RuntimeError(f"the old extractor was not imported from {folder}: {biometrics.__file__}")


def _extract_job(job: tuple[str, str, int, str]) -> tuple[str, bytes | None, str, float]:
    from PIL import Image

    from biometrics.errors import InvalidSample
    from biometrics.fingerprint import extract_fingerprint

    path, set_name, dpi, kind = job
    name = Path(path).name
    grey = degrade(np.array(Image.open(path).convert("L")), kind, seed_for(set_name, name, kind))
    t0 = time.perf_counter()
    try:
        data, message = extract_fingerprint(grey, dpi=dpi).to_bytes(), ""
    except InvalidSample as exc:
        data, message = None, str(exc)
    return name, data, message, time.perf_counter() - t0


def templates_for(data: Path, set_name: str, kind: str, extractor: str, cache: Path, workers: int) -> dict:
    """{"templates": {name: bytes | None}, "refused": [...], "seconds": [...]}, from the cache when there."""
    path = cache / code_version(extractor) / set_name / f"{kind}.pickle"
    if path.exists():
        return pickle.loads(path.read_bytes())
    source = str(old_source(cache)) if extractor == "old" else None
    jobs = [(str(p), set_name, SENSOR_DPI[set_name], kind) for p in sorted((data / set_name).glob("*.png"))]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(1, workers), mp_context=context, initializer=_use_source,
                             initargs=(source,)) as pool:
        results = list(pool.map(_extract_job, jobs, chunksize=2))
    entry = {"templates": {name: blob for name, blob, _, _ in results},
             "refused": [f"{name}: {message}" for name, blob, message, _ in results if blob is None],
             "seconds": [seconds for *_, seconds in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry))
    return entry


def fvc_impostors(folder: Path) -> np.ndarray:
    """Mask over pairs.csv's different-finger rows: True for the official protocol's first impressions."""
    with open(folder / "pairs.csv", newline="") as handle:
        return np.array([row["path_a"].endswith("_1.png") and row["path_b"].endswith("_1.png")
                         for row in csv.DictReader(handle) if row["same"] != "1"])


def measure(data: Path, set_name: str, kind: str, extractor: str, cache: Path, workers: int,
            protocols: tuple[str, ...] = PROTOCOLS) -> list[dict]:
    """Figures of one (set, degradation, extractor), one per protocol of ``protocols``."""
    from biometrics.fingerprint import FingerprintTemplate

    t0 = time.perf_counter()
    entry = templates_for(data, set_name, kind, extractor, cache, workers)
    templates = {name: FingerprintTemplate.from_bytes(blob) if blob else None
                 for name, blob in entry["templates"].items()}
    genuine, impostor = score_pairs(data / set_name, templates)
    if kind == "clean" or "probe" not in protocols:
        probe_scores = genuine, impostor
    else:
        clean = templates_for(data, set_name, "clean", extractor, cache, workers)["templates"]
        probe_scores = score_pairs(data / set_name, {name: FingerprintTemplate.from_bytes(blob) if blob else None
                                                     for name, blob in clean.items()}, templates)
    rows = []
    for protocol in protocols:
        if protocol == "probe":
            rates = error_rates(*probe_scores)
        else:
            rates = error_rates(genuine, impostor if protocol == "all" else impostor[fvc_impostors(data / set_name)])
        rates.update({"set": set_name, "degradation": kind, "extractor": extractor, "protocol": protocol,
                      "refused": entry["refused"], "version": code_version(extractor),
                      "extract_ms_median": 1000 * statistics.median(entry["seconds"])})
        rows.append(rates)
    eers = ", ".join(f"{100 * r['eer']:.2f}% ({r['protocol']})" for r in rows)
    print(f"<!-- {set_name} {kind} {extractor}: EER {eers}, {len(entry['refused'])} refused, "
          f"{rows[0]['extract_ms_median']:.0f} ms/image, {time.perf_counter() - t0:.1f} s -->",
          file=sys.stderr, flush=True)
    return rows


def judge(rows: list[dict]) -> None:
    """Add to each row its EER over the clean EER of the same set, extractor and protocol, and whether the
    target (no degradation more than doubles the clean EER) is met."""
    clean = {(r["set"], r["extractor"], r["protocol"]): r["eer"] for r in rows if r["degradation"] == "clean"}
    for r in rows:
        base = clean.get((r["set"], r["extractor"], r["protocol"]))
        if base is None:
            continue
        r["clean_eer"] = base
        r["ratio"] = r["eer"] / base if base > 0 else (1.0 if r["eer"] == 0 else float("inf"))
        r["met"] = bool(r["eer"] <= 2.0 * base)


def markdown(rows: list[dict], protocol: str) -> str:
    """One table: a row per set and degradation, old and new side by side."""
    by = {(r["set"], r["degradation"], r["extractor"]): r for r in rows if r["protocol"] == protocol}
    sets = list(dict.fromkeys(r["set"] for r in rows))
    kinds = list(dict.fromkeys(r["degradation"] for r in rows))
    lines = ["| set | degradation | EER % old | EER % new | x clean old | x clean new | met old / new "
             "| FMR100 % old | FMR100 % new | FMR1000 % old | FMR1000 % new | refused old / new |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r: dict | None, key: str, fmt: str, scale: float = 1.0) -> str:
        return "-" if r is None or key not in r else format(scale * r[key], fmt)

    def met(r: dict | None) -> str:
        return "-" if r is None or "met" not in r else ("yes" if r["met"] else "**no**")

    for s in sets:
        for k in kinds:
            old, new = by.get((s, k, "old")), by.get((s, k, "new"))
            lines.append(
                f"| {s} | {k} | {cell(old, 'eer', '.2f', 100)} | {cell(new, 'eer', '.2f', 100)} | "
                f"{cell(old, 'ratio', '.2f')} | {cell(new, 'ratio', '.2f')} | {met(old)} / {met(new)} | "
                f"{cell(old, 'fmr100', '.2f', 100)} | {cell(new, 'fmr100', '.2f', 100)} | "
                f"{cell(old, 'fmr1000', '.2f', 100)} | {cell(new, 'fmr1000', '.2f', 100)} | "
                f"{'-' if old is None else len(old['refused'])} / {'-' if new is None else len(new['refused'])} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Measure every (set, degradation, extractor), print and write the tables."""
    t0 = time.perf_counter()
    rows = []
    for extractor in args.extractors:
        for set_name in args.sets:
            for kind in args.degradations:
                rows += measure(args.data, set_name, kind, extractor, args.cache, args.workers,
                                tuple(p for p in PROTOCOLS if p in args.protocols))
    judge(rows)
    text = "\n\n".join(f"Pairs: `{protocol}`\n\n{markdown(rows, protocol)}" for protocol in PROTOCOLS
                         if protocol in args.protocols)
    print(text)
    print(f"<!-- {time.perf_counter() - t0:.0f} s -->", file=sys.stderr)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"old_commit": OLD_COMMIT, "rows": rows}, indent=1))
    return 0

