"""Calibrate face false-match scores on a folder-per-identity set (LFW layout).

Every image is extracted once with the production pipeline (``purpose="probe"``); every pair of images
of different identities is an impostor comparison and every pair of the same identity a genuine one.
The impostor distances fix the map from distance to false-match score ``-log10(FMR)``
(:class:`biometrics.scores.ScoreCalibration`); the genuine ones give the FNMR at each operating point,
written beside it. Usage::

    checkpoint-bench calibrate --data ../shared/data/faces/lfw-dev --out biometrics/calibration/face.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

COMMAND = "calibrate"
FMR_LEVELS = (0.01, 0.001, 0.0001, 0.00001)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench calibrate``."""
    parser.add_argument("--data", required=True, type=Path, help="folder of <identity>/<image> (or its images/)")
    parser.add_argument("--out", required=True, type=Path, help="calibration JSON to write")
    parser.add_argument("--cache", type=Path, help="npz of extracted templates, reused when present")
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


def run(args: argparse.Namespace) -> int:
    """Extract, measure, fit and write the calibration."""
    from biometrics.scores import ScoreCalibration, threshold_for_fmr

    items = _images(args.data, args.limit)
    if args.cache and args.cache.exists():
        cached = np.load(args.cache, allow_pickle=False)
        labels, templates, ok = cached["labels"], cached["templates"], cached["ok"]
    else:
        results = extract_all([p for _, p in items], args.workers)
        ok = np.array([r is not None for r in results])
        templates = np.stack([r if r is not None else np.zeros(128, np.float32) for r in results])
        labels = np.array([name for name, _ in items])
        if args.cache:
            np.savez(args.cache, labels=labels, templates=templates, ok=ok)
    failed = [str(p.relative_to(args.data)) for (_, p), good in zip(items, ok, strict=True) if not good]
    genuine, impostor = pair_distances(templates[ok], labels[ok])
    calibration = ScoreCalibration.fit(
        impostor, higher_is_better=False, modality="face", source=f"{args.data.name}: every pair of images"
    )
    genuine_scores = np.asarray(calibration.score(genuine))
    operating = {}
    for fmr in FMR_LEVELS:
        threshold = threshold_for_fmr(fmr)
        operating[str(fmr)] = {
            "score_threshold": threshold,
            "distance_threshold": round(calibration.raw_threshold(fmr), 5),
            "fnmr": round(float(np.mean(genuine_scores < threshold)), 5),
            "measured": fmr >= 3.0 / impostor.size,
        }
    calibration.notes = {
        "created": dt.date.today().isoformat(),
        "command": "checkpoint-bench calibrate --data ../shared/data/faces/lfw-dev "
        "--out biometrics/calibration/face.json",
        "images": len(items),
        "identities": len(set(labels.tolist())),
        "failed_to_acquire": failed,
        "n_genuine": int(genuine.size),
        "n_impostor": int(impostor.size),
        "operating_points": operating,
        "caveat": "pairs share images, so comparisons are not independent; LFW is a research benchmark, "
        "not evidence of fitness for a border's population and cameras",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    calibration.save(args.out)
    print(f"{len(items)} images, {len(failed)} failed to acquire; "
          f"{genuine.size} genuine and {impostor.size} impostor comparisons")
    for fmr, point in operating.items():
        print(f"FMR {fmr}: score >= {point['score_threshold']:.1f} (distance <= {point['distance_threshold']:.4f})"
              f" FNMR {point['fnmr']:.4f}{'' if point['measured'] else ' (beyond what the set measures)'}")
    return 0
