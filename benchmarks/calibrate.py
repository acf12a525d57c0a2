"""Calibrate false-match scores on a folder-per-identity set: faces (LFW layout), or a station's own
fingerprint scanner.

Every image is extracted once with the production pipeline (faces: ``purpose="probe"``); every pair of images
of different identities (fingers) is an impostor comparison and every pair of the same one a genuine one.
The impostor comparisons fix the map from raw comparison value to false-match score ``-log10(FMR)``
(:class:`biometrics.scores.ScoreCalibration`); the genuine ones give the FNMR at each operating point,
written beside it. Usage::

    checkpoint-bench calibrate --data ../shared/data/faces/lfw-dev --out biometrics/calibration/face.json
    checkpoint-bench calibrate --modality fingerprint --data captures/ --out station-fingerprint.json

A fingerprint calibration carries to a scanner only as far as its impostor distribution does (the shipped one,
fitted on FVC2002 DB1_B, was 0.3 to 5 times off the FMR it states on other sensors: docs/fingerprint.md), so a station
fits its own on captures of its scanner, a folder per finger (``captures/<finger>/<impression>.png``, or FVC's
``<finger>_<impression>.png`` in one folder), and starts ``checkpoint-server --fingerprint-calibration``. The
tail the threshold rests on needs many fingers: FMR 1/1000 wants thousands of impostor comparisons (100 fingers
of 4 captures give 79,200), and a score above what the set measured is an extrapolation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.fingerprint_eval import extract_job
from benchmarks.provenance import face_cache, face_code_version, finger_scores_code_version, git_state

COMMAND = "calibrate"
FMR_LEVELS = (0.01, 0.001, 0.0001, 0.00001)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench calibrate``."""
    parser.add_argument("--modality", choices=("face", "fingerprint"), default="face")
    parser.add_argument("--data", required=True, type=Path,
                        help="folder of <identity>/<image> (or its images/); fingerprints: <finger>/<impression> "
                             "or FVC's <finger>_<impression> files")
    parser.add_argument("--dpi", type=int, default=500, help="fingerprint: the scanner's resolution")
    parser.add_argument("--out", required=True, type=Path, help="calibration JSON to write")
    parser.add_argument("--cache", type=Path,
                        help="npz of extracted face templates, reused when this face code made it of the same images")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, default=0, help="use the first N identities only (smoke runs)")


def _images(root: Path, limit: int) -> list[tuple[str, Path]]:
    base = root / "images" if (root / "images").is_dir() else root
    identities = sorted(p for p in base.iterdir() if p.is_dir())
    if limit:
        identities = identities[:limit]
    return [(d.name, f) for d in identities for f in sorted(d.iterdir()) if f.suffix.lower() in {".jpg", ".png"}]


def _extract(path: str) -> np.ndarray | None:
    from biometrics.errors import InvalidSample
    from biometrics.face import face_template_from_bytes

    try:
        return face_template_from_bytes(Path(path).read_bytes(), "probe").template
    except InvalidSample:
        return None


def extract_all(paths: list[Path], workers: int) -> list[np.ndarray | None]:
    """Templates of ``paths`` (None where no face was found), on ``workers`` processes."""
    from tqdm import tqdm

    with ProcessPoolExecutor(max_workers=workers) as pool:
        it = pool.map(_extract, [str(p) for p in paths], chunksize=8)
        return list(tqdm(it, total=len(paths), desc="extract", file=sys.stderr))


def pair_distances(templates: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor euclidean distances over every unordered pair of templates."""
    t = templates.astype(np.float64)
    sq = np.einsum("ij,ij->i", t, t)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (t @ t.T), 0.0))
    iu = np.triu_indices(len(t), k=1)
    same = labels[iu[0]] == labels[iu[1]]
    dist = d[iu]
    return dist[same], dist[~same]


def finger_images(root: Path, limit: int = 0) -> list[tuple[str, Path]]:
    """(finger, image) of a folder per finger, or of FVC's ``<finger>_<impression>`` files in one folder."""
    suffixes = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if folders:
        items = [(d.name, f) for d in folders for f in sorted(d.iterdir()) if f.suffix.lower() in suffixes]
    else:
        items = [(f.stem.rsplit("_", 1)[0], f) for f in sorted(root.iterdir()) if f.suffix.lower() in suffixes]
    if limit:
        keep = sorted({finger for finger, _ in items})[:limit]
        items = [(finger, f) for finger, f in items if finger in keep]
    return items


def finger_pair_scores(templates: list, labels: np.ndarray, images: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor raw similarities over every unordered pair of templates (None: failed, left out).

    ``images``: the image each template was captured from, where several are of one image (placements of one
    impression); a pair of captures of one image is then left out, neither genuine nor impostor."""
    from biometrics.fingerprint import compare_fingerprints

    genuine, impostor = [], []
    for i, a in enumerate(templates):
        if a is None:
            continue
        for j in range(i + 1, len(templates)):
            if templates[j] is not None and (images is None or images[i] != images[j]):
                (genuine if labels[i] == labels[j] else impostor).append(compare_fingerprints(a, templates[j]))
    return np.array(genuine), np.array(impostor)


def run(args: argparse.Namespace) -> int:
    """Extract, measure, fit and write the calibration."""
    if args.modality == "fingerprint":
        return run_fingerprint(args)
    from biometrics.scores import ScoreCalibration

    items = _images(args.data, args.limit)
    images = [str(p.relative_to(args.data)) for _, p in items]
    cached = face_cache(args.cache, "images", images)
    if cached is not None:
        labels, templates, ok = cached["labels"], cached["templates"], cached["ok"]
    else:
        results = extract_all([p for _, p in items], args.workers)
        ok = np.array([r is not None for r in results])
        templates = np.stack([r if r is not None else np.zeros(128, np.float32) for r in results])
        labels = np.array([name for name, _ in items])
        if args.cache:
            np.savez(args.cache, labels=labels, templates=templates, ok=ok, images=np.array(images),
                     code_version=np.array(face_code_version()))
    failed = [str(p.relative_to(args.data)) for (_, p), good in zip(items, ok, strict=True) if not good]
    genuine, impostor = pair_distances(templates[ok], labels[ok])
    calibration = ScoreCalibration.fit(
        impostor, higher_is_better=False, modality="face", source=f"{args.data.name}: every pair of images"
    )
    operating = operating_points(calibration, genuine, impostor.size, "distance_threshold")
    calibration.notes = {
        "created": dt.date.today().isoformat(),
        "command": command_of(args),
        "provenance": {**git_state(), "face_code_version": face_code_version(),
                       "cache": None if args.cache is None else str(args.cache)},
        "images": len(items),
        "identities": len(set(labels.tolist())),
        "failed_to_acquire": failed,
        "n_genuine": int(genuine.size),
        "n_impostor": int(impostor.size),
        "operating_points": operating,
        "caveat": "pairs share images, so comparisons are not independent; "
        + (f"{args.data.name} (LFW) is a research benchmark, not evidence of fitness for a border's population and "
           "cameras" if args.data.name.lower().startswith("lfw") else
           f"the figures hold for the people and cameras of {args.data.name} only"),
    }
    write(calibration, args.out, f"{len(items)} images, {len(failed)} failed to acquire; {genuine.size} genuine "
          f"and {impostor.size} impostor comparisons", "distance <=", "distance_threshold")
    return 0


def command_of(args: argparse.Namespace) -> str:
    """The command as run: every option that changes what is fitted (``--workers`` does not)."""
    words = ["checkpoint-bench", "calibrate", "--modality", args.modality, "--data", str(args.data)]
    if args.modality == "fingerprint":
        words += ["--dpi", str(args.dpi)]
    if args.limit:
        words += ["--limit", str(args.limit)]
    if args.cache is not None:
        words += ["--cache", str(args.cache)]
    return shlex.join([*words, "--out", str(args.out)])


def write(calibration: Any, out: Path, summary: str, raw_words: str, raw_key: str) -> None:
    """Save the calibration (its notes filled) and print ``summary`` and its operating points."""
    out.parent.mkdir(parents=True, exist_ok=True)
    calibration.save(out)
    print(summary)
    for fmr, point in calibration.notes["operating_points"].items():
        fnmr = "n/a" if point["fnmr"] is None else f"{point['fnmr']:.4f}"
        print(f"FMR {fmr}: score >= {point['score_threshold']:.1f} ({raw_words} {point[raw_key]:.4f}) FNMR {fnmr}"
              f"{'' if point['measured'] else ' (beyond what the set measures)'}")


def operating_points(calibration: Any, genuine: np.ndarray, n_impostor: int, raw_key: str) -> dict[str, dict]:
    """Per FMR level: the score threshold, the raw threshold (under ``raw_key``), the genuine FNMR there and
    whether the impostor set measures it (at least three impostor comparisons expected over it)."""
    from biometrics.scores import threshold_for_fmr

    genuine_scores = np.asarray(calibration.score(genuine))
    return {str(fmr): {"score_threshold": threshold_for_fmr(fmr),
                       raw_key: round(calibration.raw_threshold(fmr), 5),
                       "fnmr": round(float(np.mean(genuine_scores < threshold_for_fmr(fmr))), 5) if genuine.size
                       else None,
                       "measured": fmr >= 3.0 / n_impostor}
            for fmr in FMR_LEVELS}


def run_fingerprint(args: argparse.Namespace) -> int:
    """A station's fingerprint calibration from captures of its own scanner."""
    from biometrics.fingerprint import FingerprintTemplate
    from biometrics.scores import ScoreCalibration

    items = finger_images(args.data, args.limit)
    fingers = sorted({finger for finger, _ in items})
    if len(fingers) < 2:
        print(f"checkpoint-bench calibrate: {args.data} holds {len(fingers)} finger(s); impostor comparisons need "
              "captures of several fingers", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        blobs = [blob for _, blob, _ in pool.map(extract_job, [(str(p), args.dpi, False, (0, 0)) for _, p in items],
                                                   chunksize=4)]
    templates = [FingerprintTemplate.from_bytes(b) if b is not None else None for b in blobs]
    failed = [str(p.relative_to(args.data)) for (_, p), t in zip(items, templates, strict=True) if t is None]
    genuine, impostor = finger_pair_scores(templates, np.array([finger for finger, _ in items]))
    try:
        calibration = ScoreCalibration.fit(
            impostor, higher_is_better=True, modality="fingerprint",
            source=f"{args.data.name}: every pair of captures of different fingers ({len(fingers)} fingers, "
                   f"{args.dpi} dpi)")
    except ValueError as exc:
        print(f"checkpoint-bench calibrate: {exc}", file=sys.stderr)
        return 2
    operating = operating_points(calibration, genuine, impostor.size, "similarity_threshold")
    calibration.notes = {
        "created": dt.date.today().isoformat(),
        "command": command_of(args),
        "provenance": {**git_state(), "finger_scores_code_version": finger_scores_code_version()},
        "images": len(items), "fingers": len(fingers), "failed_to_acquire": failed,
        "n_genuine": int(genuine.size), "n_impostor": int(impostor.size), "operating_points": operating,
        "caveat": "pairs share captures, so comparisons are not independent; the tail beyond 1/n_impostor is "
                  "extrapolated",
    }
    write(calibration, args.out, f"{len(items)} captures of {len(fingers)} fingers, {len(failed)} failed to "
          f"acquire; {genuine.size} genuine and {impostor.size} impostor comparisons", "similarity >=",
          "similarity_threshold")
    return 0
