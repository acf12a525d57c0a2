"""1:1 accuracy on a pairs CSV: FMR/FNMR, EER, FNMR at FMR, FTA, with DET/ROC plots and a baseline.

Usage::

    checkpoint-bench accuracy --modality face --pairs ../shared/data/faces/lfw-dev/pairs.csv --out results/acc

The pairs CSV has the header ``path_a,path_b,same`` (paths relative to the CSV, ``same`` 1 or 0). Each image
is extracted once with the production pipeline (``purpose="probe"``); a pair whose image failed to acquire
never matches (generalised FMR/FNMR, see :mod:`benchmarks.metrics`). Comparisons go through the
production comparator and the production score calibration (``s = -log10(FMR)``); the operating threshold
is the service's, ``s >= -log10(--fmr)``. For faces, the plain ``face_recognition`` pipeline (HOG
``face_locations`` with its defaults, the largest face, ``face_encodings``, match when distance <= 0.6) runs
on the same pairs, side by side.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from benchmarks import metrics as m
from benchmarks.provenance import (
    code_version,
    face_cache,
    face_code_version,
    finger_scores_code_version,
    fingerprint_extractor_sources,
    provenance_line,
    run_provenance,
)
from biometrics.multiframe import MIN_ENROL_AGREEMENT

COMMAND = "accuracy"
BASELINE_TOLERANCE = 0.6
# Scores at which the face report counts the pairs under: the enrolment agreement's and its neighbours
AGREEMENT_SCORES = tuple(sorted({1.0, MIN_ENROL_AGREEMENT, 2.0}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench accuracy``."""
    parser.add_argument("--modality", choices=("face", "fingerprint", "fused"), default="face",
                        help="fused: face + fingerprint on chimeric subjects (needs --faces and --fingers)")
    parser.add_argument("--pairs", type=Path, help="CSV path_a,path_b,same (paths relative to it); required "
                        "except with --modality fused, --frames or --augment")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json, plots and report.md")
    parser.add_argument("--fmr", type=float, default=0.001, help="operating point of the service (default 0.001)")
    parser.add_argument("--calibration", type=Path, help="score calibration JSON (default: the shipped one)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="extraction processes")
    parser.add_argument("--limit", type=int, default=0, help="use the first N pairs only (smoke runs)")
    parser.add_argument("--dpi", type=int, default=500, help="fingerprint image resolution")
    parser.add_argument("--no-baseline", action="store_true", help="skip the face_recognition baseline")
    parser.add_argument("--exhaustive", action="store_true",
                        help="also compare every pair of the listed images (identity = folder name), which "
                        "backs FNMR at small FMR with far more impostor comparisons")
    parser.add_argument("--cache", type=Path,
                        help="npz of extracted face templates, reused when this face code made it on the same images")
    parser.add_argument("--faces", type=Path, help="face set with images/<identity>/*.jpg (fused, frames, augment)")
    parser.add_argument("--fingers", type=Path, help="FVC2002 folder holding DB1_B..DB4_B (fused)")
    parser.add_argument("--finger-cache", type=Path,
                        help="npz of FVC comparison scores, reused when this finger code made them")
    parser.add_argument("--frames", type=int, default=0,
                        help="face: this many probe frames against one reference, by each multi-frame rule")
    parser.add_argument("--augment", action="store_true", help="face: augmented enrolment templates against plain")
    parser.add_argument("--write-fusion", type=Path,
                        help="fused: write the likelihood-ratio fusion fitted on dev data (the service's fusion.json)")
    parser.add_argument("--enrol-impressions", type=int, default=3,
                        help="fused: also score each finger enrolled from this many impressions (the desk's "
                        "practice; the service keeps them all and takes the best less log10(k)); 1: one only")
    parser.add_argument("--placements", type=int, default=2,
                        help="fused: also score a kiosk that takes the finger this many times (lifted and placed "
                        "again) against the --enrol-impressions enrolment; 1: one placement only")
    parser.add_argument("--bootstrap", type=int, default=500,
                        help="bootstrap replicates for the intervals that resample people (face and fingerprint "
                        "pairs: identities, or fingers, the subsets bootstrap beside Clopper-Pearson; fused: "
                        "identities x fingers); 0: none")
    parser.add_argument("--max-genuine", type=int, default=10,
                        help="fused / frames: at most this many genuine comparisons per identity")


# ---------------------------------------------------------------------------------------------------------
# Pairs


@dataclass(frozen=True)
class Pair:
    """One row of the pairs CSV (paths as written, relative to the CSV)."""

    path_a: str
    path_b: str
    same: bool


class PairsError(ValueError):
    """The pairs file cannot be used; the message says why."""


def read_pairs(path: Path, limit: int = 0) -> list[Pair]:
    """Read and check a pairs CSV; every referenced image must exist."""
    if not path.is_file():
        raise PairsError(f"pairs file {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path_a", "path_b", "same"} - set(reader.fieldnames or [])
        if missing:
            raise PairsError(f"{path}: header must be path_a,path_b,same (missing {', '.join(sorted(missing))})")
        pairs = []
        for line, row in enumerate(reader, start=2):
            same = (row["same"] or "").strip()
            if same not in {"0", "1"}:
                raise PairsError(f"{path}:{line}: same must be 0 or 1, not {same!r}")
            pairs.append(Pair(row["path_a"].strip(), row["path_b"].strip(), same == "1"))
            if limit and len(pairs) >= limit:
                break
    if not pairs:
        raise PairsError(f"{path} lists no pairs")
    base = path.parent
    absent = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b) if not (base / p).is_file()})
    if absent:
        raise PairsError(f"{len(absent)} images listed in {path} do not exist, e.g. {absent[0]}")
    return pairs


def unique_images(pairs: Sequence[Pair]) -> list[str]:
    """The distinct image paths of ``pairs``, in first-seen order."""
    return list(dict.fromkeys(p for pair in pairs for p in (pair.path_a, pair.path_b)))


# ---------------------------------------------------------------------------------------------------------
# Extraction (module-level functions: they run in worker processes)


@dataclass
class Extracted:
    """A template, or why there is none, and the time it took."""

    template: Any = None
    error: str | None = None
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)


def _single_thread() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def extract_face_production(path: str) -> Extracted:
    """The production face template (probe) of one image file."""
    from biometrics.errors import BiometricError
    from biometrics.face import face_template_from_bytes

    start = time.perf_counter()
    try:
        t = face_template_from_bytes(Path(path).read_bytes(), purpose="probe")
    except BiometricError as exc:
        return Extracted(error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start)
    detail = {"detector": t.box.detector, "quality": t.quality}
    return Extracted(template=t.template, seconds=time.perf_counter() - start, detail=detail)


def extract_face_baseline(path: str) -> Extracted:
    """face_recognition out of the box: HOG face_locations (defaults), the largest face, face_encodings."""
    import face_recognition

    start = time.perf_counter()
    image = face_recognition.load_image_file(path)
    boxes = face_recognition.face_locations(image)
    if not boxes:
        return Extracted(error="no face found", seconds=time.perf_counter() - start)
    largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
    encoding = face_recognition.face_encodings(image, known_face_locations=[largest])[0]
    return Extracted(template=np.asarray(encoding, dtype=np.float32), seconds=time.perf_counter() - start)


def extract_fingerprint_production(path: str, dpi: int = 500) -> Extracted:
    """The production fingerprint template of one grey image file."""
    import cv2

    from biometrics.errors import BiometricError
    from biometrics.fingerprint import extract_fingerprint

    start = time.perf_counter()
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        return Extracted(error="the image cannot be decoded", seconds=time.perf_counter() - start)
    try:
        template = extract_fingerprint(grey, dpi=dpi)
    except BiometricError as exc:
        return Extracted(error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - start)
    return Extracted(template=template, seconds=time.perf_counter() - start)


T = TypeVar("T")


def _call(job: tuple[Callable[..., T], str, tuple]) -> T:
    fn, path, extra = job
    _single_thread()
    return fn(path, *extra)


def extract_all(
    fn: Callable[..., T], paths: Sequence[Path], workers: int, desc: str, extra: tuple = ()
) -> list[T]:
    """``fn`` over ``paths`` on ``workers`` processes (in process when 1), with a progress bar."""
    from tqdm import tqdm

    jobs = [(fn, str(p), extra) for p in paths]
    if workers <= 1:
        return [_call(j) for j in tqdm(jobs, desc=desc, file=sys.stderr)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(_call, jobs, chunksize=4), total=len(jobs), desc=desc, file=sys.stderr))


# ---------------------------------------------------------------------------------------------------------
# Comparison and summary


@dataclass
class PipelineRun:
    """One pipeline's outcome on the pairs: per-pair similarity (nan for FTA pairs) and its figures."""

    name: str
    extracted: dict[str, Extracted]
    similarity: np.ndarray  # per pair; higher = more alike; nan where an image failed to acquire
    score_unit: str
    operating_threshold: float
    operating_label: str
    wall_seconds: float
    raw: np.ndarray | None = None  # per pair, the comparator's own value (face: distance)
    to_score: Callable[[np.ndarray], np.ndarray] | None = None  # face: distance -> this run's score


def pair_scores(similarity: np.ndarray, same: np.ndarray) -> m.VerificationScores:
    """The genuine/impostor split of per-pair scores (``same``: the genuine pairs); a pair scored nan failed to
    acquire: counted as FTA, not scored."""
    fta = np.isnan(similarity)
    return m.VerificationScores(
        genuine=similarity[same & ~fta],
        impostor=similarity[~same & ~fta],
        genuine_fta=int((same & fta).sum()),
        impostor_fta=int((~same & fta).sum()),
    )


def scores_of(run: PipelineRun, pairs: Sequence[Pair], keep: np.ndarray | None = None) -> m.VerificationScores:
    """The genuine/impostor split of a run's pair similarities (FTA pairs counted, not scored)."""
    same = np.array([p.same for p in pairs])
    sim = run.similarity
    if keep is not None:
        same, sim = same[keep], sim[keep]
    return pair_scores(sim, same)


def summarise(run: PipelineRun, pairs: Sequence[Pair], fmr_targets: Sequence[float]) -> dict:
    """metrics.json's section for one pipeline."""
    scores = scores_of(run, pairs)
    out = m.summarise_verification(scores, fmr_targets, operating_threshold=run.operating_threshold)
    failed = {p: e.error for p, e in run.extracted.items() if e.template is None}
    fta_pairs = [
        {"path_a": p.path_a, "path_b": p.path_b, "same": int(p.same)}
        for p, s in zip(pairs, run.similarity, strict=True)
        if np.isnan(s)
    ]
    extract_seconds = [e.seconds for e in run.extracted.values()]
    out.update(
        {
            "pipeline": run.name,
            "score_unit": run.score_unit,
            "operating_threshold": run.operating_threshold,
            "operating_point": run.operating_label,
            "fta": {
                "images": len(failed),
                "images_attempted": len(run.extracted),
                "image_rate": len(failed) / len(run.extracted),
                "genuine_pairs": scores.genuine_fta,
                "impostor_pairs": scores.impostor_fta,
                "failed_images": [{"path": p, "error": e} for p, e in sorted(failed.items())],
                "failed_pairs": fta_pairs,
            },
            "timing": {
                "extract_ms_mean": 1000 * float(np.mean(extract_seconds)),
                "extract_ms_median": 1000 * float(np.median(extract_seconds)),
                "extract_ms_p95": 1000 * float(np.percentile(extract_seconds, 95)),
                "wall_seconds": run.wall_seconds,
            },
        }
    )
    return out


def _calibration(args: argparse.Namespace, modality: str):  # -> ScoreCalibration
    """``--calibration``, or the service's calibration of ``modality``."""
    from biometrics.scores import ScoreCalibration

    return ScoreCalibration.load(args.calibration) if args.calibration else ScoreCalibration.for_modality(modality)


def _calibrated_run(name: str, extracted: dict[str, Extracted], raw: np.ndarray, calibration: Any, fmr: float,
                    wall: float, to_score: Callable[[np.ndarray], np.ndarray] | None = None) -> PipelineRun:
    """A production pipeline's run: its comparator's values (nan: failed to acquire) as calibrated false-match
    scores, matched at the service's threshold for ``fmr``."""
    from biometrics.scores import threshold_for_fmr

    return PipelineRun(
        name=name,
        extracted=extracted,
        similarity=np.where(np.isnan(raw), np.nan, calibration.score(np.nan_to_num(raw))),
        score_unit="false-match score s = -log10(FMR) (match when s >= threshold)",
        operating_threshold=threshold_for_fmr(fmr),
        operating_label=f"s >= {threshold_for_fmr(fmr):g} (service FMR {fmr:g})",
        wall_seconds=wall,
        raw=raw,
        to_score=to_score,
    )


def _extracted(cache: dict[str, dict[str, Extracted]], name: str, extractor: Callable, paths: list[Path],
               images: list[str], workers: int) -> tuple[dict[str, Extracted], float]:
    """Every image's extraction by pipeline ``name`` (the cache's, if it holds them) and the seconds it took."""
    start = time.perf_counter()
    extracted = cache.get(name) or dict(zip(images, extract_all(extractor, paths, workers, name), strict=True))
    return extracted, time.perf_counter() - start


def _face_runs(args: argparse.Namespace, pairs: list[Pair], images: list[str]) -> list[PipelineRun]:
    calibration = _calibration(args, "face")
    paths = [args.pairs.parent / p for p in images]
    cache = _load_cache(args.cache, images)
    prod, wall = _extracted(cache, "production", extract_face_production, paths, images, args.workers)
    runs = [_calibrated_run("production (biometrics.face + calibrated score)", prod, _pair_distances(prod, pairs),
                            calibration, args.fmr, wall, to_score=lambda d: np.asarray(calibration.score(d)))]
    if not args.no_baseline:
        base, wall = _extracted(cache, "baseline", extract_face_baseline, paths, images, args.workers)
        distance = _pair_distances(base, pairs)
        runs.append(
            PipelineRun(
                name="baseline (face_recognition defaults)",
                extracted=base,
                similarity=-distance,
                score_unit="negated distance -d (match when -d >= threshold, i.e. d <= 0.6)",
                operating_threshold=-BASELINE_TOLERANCE,
                operating_label=f"distance <= {BASELINE_TOLERANCE} (face_recognition tolerance)",
                wall_seconds=wall,
                raw=distance,
                to_score=np.negative,
            )
        )
    made = {"production": prod, **({"baseline": base} if len(runs) > 1 else {})}
    if args.cache and any(name not in cache for name in made):  # a cache that held them all is left as it is
        _save_cache(args.cache, images, made)
    return runs


def _load_cache(path: Path | None, images: list[str]) -> dict[str, dict[str, Extracted]]:
    """Face extractions saved by an earlier run of this face code version on the same images, or on these among
    others (none when absent, made by other code or without some of these images: said on stderr)."""
    c = face_cache(path, "names", images, subset=True)
    if c is None:
        return {}
    out = {}
    for name in ("production", "baseline"):
        if f"{name}_templates" not in c:
            continue
        t, ok, err, sec = (c[f"{name}_{k}"] for k in ("templates", "ok", "errors", "seconds"))
        quality = c.get(f"{name}_quality", None)
        out[name] = {
            img: Extracted(template=t[i] if ok[i] else None, error=None if ok[i] else str(err[i]),
                           seconds=float(sec[i]),
                           detail={} if quality is None or not ok[i] else {"quality": float(quality[i])})
            for i, img in enumerate(images)
        }
    return out


def _save_cache(path: Path, images: list[str], runs: dict[str, dict[str, Extracted]]) -> None:
    """Keep ``runs``' extractions of ``images`` in the npz ``path``, keyed on this face code version."""
    arrays: dict[str, np.ndarray] = {"names": np.array(images), "code_version": np.array(face_code_version())}
    for name, ex in runs.items():
        items = [ex[i] for i in images]
        arrays[f"{name}_templates"] = np.stack(
            [e.template if e.template is not None else np.zeros(128, np.float32) for e in items])
        arrays[f"{name}_ok"] = np.array([e.template is not None for e in items])
        arrays[f"{name}_errors"] = np.array([e.error or "" for e in items])
        arrays[f"{name}_seconds"] = np.array([e.seconds for e in items])
        if all("quality" in e.detail for e in items if e.template is not None):
            arrays[f"{name}_quality"] = np.array([e.detail.get("quality", 0.0) for e in items])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def identity_of(image: str) -> str:
    """The identity of an image path: its folder, or for a file at the top the name before ``_NNNN``."""
    p = Path(image)
    if len(p.parts) > 1 and p.parent.name not in {"", "images"}:
        return p.parent.name
    return p.stem.rsplit("_", 1)[0]


def exhaustive_comparisons(run: PipelineRun, images: list[str], to_score: Callable[[np.ndarray], np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every unordered pair of ``images``: its score (nan where an image failed to acquire: never matches),
    whether it is genuine (same identity), and the identity of each side (:func:`identity_of`)."""
    ids = np.array([identity_of(i) for i in images])
    ok = np.array([run.extracted[i].template is not None for i in images])
    dim = next((len(run.extracted[i].template) for i, g in zip(images, ok, strict=True) if g), 0)  # any pipeline's
    t = np.stack([np.asarray(run.extracted[i].template, np.float64) if good else np.zeros(dim)  # never scored
                  for i, good in zip(images, ok, strict=True)])
    sq = np.einsum("ij,ij->i", t, t)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (t @ t.T), 0.0))
    a, b = np.triu_indices(len(images), k=1)
    sim = np.where(ok[a] & ok[b], to_score(d[a, b]), np.nan)
    return sim, ids[a] == ids[b], ids[a], ids[b]


def exhaustive_scores(run: PipelineRun, images: list[str], to_score: Callable[[np.ndarray], np.ndarray]
                      ) -> m.VerificationScores:
    """Every unordered pair of ``images``: same identity genuine, else impostor; FTA images never match."""
    sim, same, _, _ = exhaustive_comparisons(run, images, to_score)
    return pair_scores(sim, same)


def subsets_intervals(runs: Sequence[PipelineRun], sections: Sequence[dict], scores: Sequence[np.ndarray],
                      genuine: np.ndarray, identity_a: np.ndarray, identity_b: np.ndarray, replicates: int) -> None:
    """The subsets bootstrap (:func:`benchmarks.metrics.subsets_bootstrap`, identities resampled, the same draws
    for every pipeline) of each pipeline's ``scores``, written into its section beside the Clopper-Pearson
    intervals: ``eer_subsets_bootstrap``, ``subsets_bootstrap`` under each FNMR at FMR and the operating point's
    FMR and FNMR, and the whole record (method, replicates, seed) as ``subsets_bootstrap``."""
    boots = m.subsets_bootstrap(scores, genuine, identity_a, identity_b, m.DEFAULT_FMR_TARGETS,
                                [r.operating_threshold for r in runs], replicates)
    for section, boot in zip(sections, boots, strict=True):
        section["subsets_bootstrap"] = boot
        section["eer_subsets_bootstrap"] = boot["eer"]
        for key, interval in boot["fnmr_at_fmr"].items():
            section["operating_points"][key]["fnmr"]["subsets_bootstrap"] = interval
        for k in ("fmr", "fnmr"):
            section["at_operating_threshold"][k]["subsets_bootstrap"] = boot["at_operating_threshold"][k]


def _pair_values(extracted: dict[str, Extracted], pairs: Sequence[Pair], compare: Callable[[Any, Any], float],
                 progress: str | None = None) -> np.ndarray:
    """``compare(a, b)`` of each pair's two templates, nan where an image failed to acquire (``progress``: the
    label of a progress bar on stderr, if any)."""
    out = np.full(len(pairs), np.nan)
    walk: Iterable[Pair] = pairs
    if progress is not None:
        from tqdm import tqdm

        walk = tqdm(pairs, desc=progress, file=sys.stderr)
    for i, pair in enumerate(walk):
        a, b = extracted[pair.path_a].template, extracted[pair.path_b].template
        if a is not None and b is not None:
            out[i] = float(compare(a, b))
    return out


def _pair_distances(extracted: dict[str, Extracted], pairs: Sequence[Pair]) -> np.ndarray:
    """The euclidean distance (float64) between each pair's face templates, nan where an image failed."""
    return _pair_values(extracted, pairs,
                        lambda a, b: np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def _fingerprint_runs(args: argparse.Namespace, pairs: list[Pair], images: list[str]) -> list[PipelineRun]:
    try:
        from biometrics.fingerprint import compare_fingerprints, extract_fingerprint  # noqa: F401
    except ImportError as exc:
        raise PairsError(
            "the fingerprint pipeline (biometrics.fingerprint.extract_fingerprint / compare_fingerprints) "
            f"is not available in this build: {exc}"
        ) from exc
    calibration = _calibration(args, "fingerprint")
    paths = [args.pairs.parent / p for p in images]
    start = time.perf_counter()
    results = extract_all(extract_fingerprint_production, paths, args.workers, "production", (args.dpi,))
    extracted = dict(zip(images, results, strict=True))
    raw = _pair_values(extracted, pairs, compare_fingerprints, progress="compare")
    wall = time.perf_counter() - start
    return [_calibrated_run("production (biometrics.fingerprint + calibrated score)", extracted, raw, calibration,
                            args.fmr, wall)]


# ---------------------------------------------------------------------------------------------------------
# Outputs


def pct(x: float | None) -> str:
    """A rate in percent with two decimals ("n/a" for none or nan)."""
    return "n/a" if x is None or x != x else f"{100 * x:.2f}%"


def _fmt(x: float | None, percent: bool = True) -> str:
    """:func:`pct`, or with ``percent`` False the value to four significant digits."""
    if percent or x is None or x != x:
        return pct(x)
    return f"{x:.4g}"


def _ci(entry: dict) -> str:
    """The Clopper-Pearson interval of a rate entry, and its subsets-bootstrap one where there is one."""
    lo, hi = entry["clopper_pearson"]
    return f"[{100 * lo:.2f}, {100 * hi:.2f}]" + _subjects(entry.get("subsets_bootstrap"), entry["errors"] == 0)


def _subjects(interval: Sequence[float] | None, no_error: bool = False) -> str:
    """``"; subjects [lo, hi]"``: a subsets-bootstrap interval in percent ("" where none was computed). With no
    error seen (``no_error``) and none in any replicate, its [0, 0] bounds nothing, and the text says so."""
    if not interval:
        return ""
    if no_error and interval[1] == 0:
        return "; subjects: no error to resample"
    return "; subjects [" + ", ".join("n/a" if x is None or x != x else f"{100 * x:.2f}" for x in interval) + "]"


def _eer(section: dict) -> str:
    """The EER, with its subsets-bootstrap interval where there is one."""
    interval = section.get("eer_subsets_bootstrap")
    return _fmt(section["eer"]) + (f" ({_subjects(interval, section['eer'] == 0)[2:]})" if interval else "")


SUBSETS_NOTE = (
    "Each interval is given twice: first 95% Clopper-Pearson, which counts every comparison as independent, then "
    "(`subjects [...]`) the 95% subsets bootstrap, which resamples identities instead ({replicates} replicates, "
    "seed {seed}, {n} identities; an impostor comparison weighted by the product of its two identities' draws; "
    "thresholds for FNMR at FMR chosen again in each replicate). Comparisons sharing a person err together, so "
    "it is the wider where a few people hold the errors; with few errors spread over many people it can be the "
    "narrower (a percentile interval of a rare event reaches too little high): read the two together."
)


def comparison_table(sections: Sequence[dict]) -> list[str]:
    """The side-by-side Markdown table of the pipelines' headline figures."""
    head = "| figure | " + " | ".join(s["pipeline"] for s in sections) + " |"
    rule = "|---|" + "---|" * len(sections)
    rows = [head, rule]

    def row(label: str, cells: list[str]) -> None:
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    row("genuine / impostor pairs", [f"{s['n_genuine']} / {s['n_impostor']}" for s in sections])
    row("images failed to acquire (FTA)", [f"{s['fta']['images']} of {s['fta']['images_attempted']} "
                                           f"({_fmt(s['fta']['image_rate'])})" for s in sections])
    row("pairs with an FTA (genuine / impostor)",
        [f"{s['fta']['genuine_pairs']} / {s['fta']['impostor_pairs']}" for s in sections])
    row("EER (generalised, FVC)", [_eer(s) for s in sections])
    for key in sections[0]["fnmr_at_fmr"]:
        cells = []
        for s in sections:
            op = s["operating_points"][key]
            cells.append(f"{_fmt(s['fnmr_at_fmr'][key])} {_ci(op['fnmr'])} (t = {_fmt(op['threshold'], False)})")
        row(f"FNMR at FMR {float(key) * 100:g}% [95% CI]", cells)
    row("ZeroFMR (FNMR with no false match)", [_fmt(s["zero_fmr"]["fnmr"]) for s in sections])
    for label, k in (("FMR at the operating threshold", "fmr"), ("FNMR at the operating threshold", "fnmr")):
        cells = []
        for s in sections:
            e = s["at_operating_threshold"][k]
            cells.append(f"{_fmt(e['rate'])} ({e['errors']}/{e['n']}) {_ci(e)}")
        row(label, cells)
    row("operating threshold", [s["operating_point"] for s in sections])
    row("extraction, median ms per image (one core)",
        [f"{s['timing'].get('extract_ms_median', float('nan')):.0f}" for s in sections])
    return rows


def enrol_agreement(scores: m.VerificationScores, thresholds: Sequence[float] = AGREEMENT_SCORES) -> dict:
    """Per score t, the genuine and the impostor pairs scoring under t (``s < t``, ties not under): what an
    enrolment that refuses two of its face samples scoring under t (``biometrics.multiframe.disagreeing_pairs``)
    would refuse of one person's photographs and of two people's. Pairs that failed to acquire are not scored
    (an enrolment refuses an image with no face before it compares) and are counted apart."""
    out = {}
    for t in thresholds:
        fm, _, fnm, _ = scores.counts(t, generalised=False)
        under = {"genuine": int(fnm[0]), "impostor": len(scores.impostor) - int(fm[0])}
        n = {"genuine": len(scores.genuine), "impostor": len(scores.impostor)}
        out[f"{t:g}"] = {
            kind: {"under": under[kind], "n": n[kind], "rate": under[kind] / n[kind] if n[kind] else None,
                   "clopper_pearson": list(m.clopper_pearson_interval(under[kind], n[kind]))}
            for kind in ("genuine", "impostor")}
    return {"by_score": out, "genuine_fta": scores.genuine_fta, "impostor_fta": scores.impostor_fta}


def agreement_table(agreement: dict) -> list[str]:
    """The report's lines for :func:`enrol_agreement`."""
    lines = ["Enrolment agreement (`biometrics.multiframe.MIN_ENROL_AGREEMENT`: an enrolment whose face samples "
             "include a pair scoring under it is refused as two people): production pairs scoring under each "
             f"score, 95% Clopper-Pearson; pairs with an FTA image not scored (genuine {agreement['genuine_fta']}, "
             f"impostor {agreement['impostor_fta']}).", "",
             "| score under | same-person pairs (refused wrongly) | different-person pairs (caught) |", "|---|---|---|"]
    for t, row in agreement["by_score"].items():
        cells = [f"{e['under']} of {e['n']}, {pct(e['rate'])} [{pct(e['clopper_pearson'][0])}, "
                 f"{pct(e['clopper_pearson'][1])}]" for e in (row["genuine"], row["impostor"])]
        lines.append(f"| {t} | {cells[0]} | {cells[1]} |")
    return lines


def write_report(out: Path, result: dict) -> Path:
    """``report.md``: what was run, the side-by-side table, the plots, the failures and the warnings."""
    sections = [result["production"]] + ([result["baseline"]] if "baseline" in result else [])
    lines = [
        f"# 1:1 accuracy: {result['modality']}",
        "",
        f"Pairs: `{result['pairs']}` ({result['n_pairs']} pairs, {result['n_images']} images). "
        f"Command: `{result['command']}`",
        "",
        provenance_line(result.get("provenance")),
        "",
        "Conventions: a comparison matches when score >= threshold (ties match). A pair with an image that "
        "failed to acquire never matches (ISO/IEC 19795-1 generalised rates: a genuine FTA pair is a false "
        "non-match, an impostor FTA pair a correct non-match). EER by the FVC2000 convention. Intervals are "
        "95% Clopper-Pearson, assuming independent comparisons, which they are not (pairs share images and "
        "people): read them as lower bounds on the uncertainty; where given, the subsets bootstrap beside them "
        "resamples people instead.",
        "",
        *comparison_table(sections),
        "",
    ]
    boot = sections[0].get("subsets_bootstrap")
    if boot:
        lines += [SUBSETS_NOTE.format(replicates=boot["replicates"], seed=boot["seed"], n=boot["n_identities"]), ""]
    common = result.get("common_subset")
    if common:
        lines += [
            f"On the {common['n_pairs']} pairs where both pipelines acquired both images "
            f"({common['n_genuine']} genuine, {common['n_impostor']} impostor), comparing the algorithms alone:",
            "",
            "| figure | production | baseline |",
            "|---|---|---|",
            f"| EER | {_fmt(common['production']['eer'])} | {_fmt(common['baseline']['eer'])} |",
        ]
        for key in common["production"]["fnmr_at_fmr"]:
            lines.append(
                f"| FNMR at FMR {float(key) * 100:g}% | {_fmt(common['production']['fnmr_at_fmr'][key])} | "
                f"{_fmt(common['baseline']['fnmr_at_fmr'][key])} |"
            )
        lines.append("")
    if "enrol_agreement" in result:
        lines += [*agreement_table(result["enrol_agreement"]), ""]
    paired = result.get("paired_fnmr_test")
    if paired:
        lines += ["Paired test on the genuine pairs (McNemar, exact; each pipeline at its own threshold for the "
                  "FMR; pairs share images, so p is optimistic):", ""]
        for key, t in paired.items():
            lines.append(f"- FMR {float(key) * 100:g}%: {t['only_first_matched']} pairs matched only by production, "
                         f"{t['only_second_matched']} only by the baseline; p = {t['p_value']:.3g}")
        lines.append("")
    ex = result.get("exhaustive")
    if ex:
        lines += [
            f"Exhaustive cross-comparison: {ex['rule']} ({ex['n_images']} images, {ex['n_identities']} "
            f"identities). Each image takes part in {ex['n_images'] - 1} comparisons, so these are far from "
            "independent; they back small-FMR operating points with many more impostors than the list does "
            "(the `subjects` intervals, where given, resample the identities and so account for that).",
            "",
            *exhaustive_table(ex["sections"]),
            "",
            "![DET, exhaustive](det_exhaustive.png)",
            "",
        ]
    lines += ["![DET](det.png)", "", "![ROC](roc.png)", "", "![score distributions](scores.png)", ""]
    for s in sections:
        lines.append(f"## {s['pipeline']}")
        lines.append("")
        lines.append(f"Scores: {s['score_unit']}.")
        failed = s["fta"]["failed_images"]
        if failed:
            lines.append("")
            lines.append(f"Images that failed to acquire ({len(failed)}):")
            lines.append("")
            lines += [f"- `{f['path']}`: {f['error']}" for f in failed[:50]]
            if len(failed) > 50:
                lines.append(f"- ... and {len(failed) - 50} more (metrics.json lists them all)")
        lines.append("")
        lines.append("Warnings:")
        lines.append("")
        lines += [f"- {w}" for w in s["warnings"]]
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plots(out: Path, runs: Sequence[PipelineRun], pairs: Sequence[Pair], sections: Sequence[dict]) -> None:
    from benchmarks import plots

    curves = {r.name: m.det_curve(scores_of(r, pairs)) for r in runs}
    marks = {}
    for r, s in zip(runs, sections, strict=True):
        op = s["at_operating_threshold"]
        marks[r.name] = [(op["fmr"]["rate"], op["fnmr"]["rate"], r.operating_label)]
    plots.det_plot(curves, out / "det.png", "DET (generalised: FTA pairs never match)", marks)
    plots.roc_plot(curves, out / "roc.png", "ROC (generalised)")
    panels = {}
    for r in runs:
        sc = scores_of(r, pairs)
        panels[r.name] = (sc.genuine, sc.impostor, [(r.operating_threshold, r.operating_label)])
    plots.score_distributions(panels, out / "scores.png", {r.name: r.score_unit for r in runs})


def paired_test(runs: Sequence[PipelineRun], sections: Sequence[dict], pairs: Sequence[Pair]) -> dict:
    """McNemar's exact test on the genuine pairs, each pipeline at its own threshold for each target FMR."""
    same = np.array([p.same for p in pairs])
    out = {}
    for key in sections[0]["threshold_at_fmr"]:
        matched = []
        for r, s in zip(runs, sections, strict=True):
            t = s["threshold_at_fmr"][key]
            sim = np.nan_to_num(r.similarity[same], nan=-np.inf)  # FTA pairs never match
            matched.append(sim >= (np.inf if t is None else t))
        b = int((matched[0] & ~matched[1]).sum())
        c = int((~matched[0] & matched[1]).sum())
        out[key] = {"only_first_matched": b, "only_second_matched": c, "p_value": m.mcnemar_exact(b, c),
                    "first": runs[0].name, "second": runs[1].name}
    return out


def _thin(c: m.DetCurve) -> m.DetCurve:
    """The points of a DET curve where FNMR changes (and their neighbours): the same staircase, fewer points."""
    change = np.flatnonzero(np.diff(c.fnmr) != 0)
    keep = np.unique(np.concatenate([[0, len(c.fnmr) - 1], change, change + 1]))
    return m.DetCurve(c.thresholds[keep], c.fmr[keep], c.fnmr[keep])


def exhaustive_table(sections: Sequence[dict]) -> list[str]:
    """Side-by-side figures of the exhaustive cross-comparison."""
    rows = ["| figure | " + " | ".join(s["pipeline"] for s in sections) + " |", "|---|" + "---|" * len(sections)]
    rows.append("| genuine / impostor comparisons | " + " | ".join(
        f"{s['n_genuine']} / {s['n_impostor']}" for s in sections) + " |")
    rows.append("| comparisons with an FTA image (genuine / impostor) | " + " | ".join(
        f"{s['genuine_fta']} / {s['impostor_fta']}" for s in sections) + " |")
    rows.append("| EER | " + " | ".join(_eer(s) for s in sections) + " |")
    for key in sections[0]["fnmr_at_fmr"]:
        cells = []
        for s in sections:
            op = s["operating_points"][key]
            cells.append(f"{_fmt(s['fnmr_at_fmr'][key])} {_ci(op['fnmr'])} (t = {_fmt(op['threshold'], False)}, "
                         f"{op['fmr']['errors']} false matches)")
        rows.append(f"| FNMR at FMR {float(key) * 100:g}% [95% CI] | " + " | ".join(cells) + " |")
    for label, k in (("FMR at the operating threshold", "fmr"), ("FNMR at the operating threshold", "fnmr")):
        cells = [f"{_fmt(s['at_operating_threshold'][k]['rate'])} ({s['at_operating_threshold'][k]['errors']}/"
                 f"{s['at_operating_threshold'][k]['n']}) {_ci(s['at_operating_threshold'][k])}" for s in sections]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def _write_scores_csv(out: Path, pairs: Sequence[Pair], runs: Sequence[PipelineRun]) -> None:
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path_a", "path_b", "same", *[f"score_{i}" for i in range(len(runs))]])
        for i, p in enumerate(pairs):
            w.writerow([p.path_a, p.path_b, int(p.same), *["" if np.isnan(r.similarity[i])
                                                            else f"{r.similarity[i]:.6f}" for r in runs]])


def provenance_of(args: argparse.Namespace) -> dict:
    """This run's provenance (:func:`benchmarks.provenance.run_provenance`): its caches, the code versions their
    contents are keyed on and the calibration files it reads, taken when the run starts."""
    from biometrics.scores import CALIBRATION_DIR

    caches: dict[str, Path | None] = {"cache": args.cache}
    versions = {}
    if args.modality == "fingerprint":
        versions["fingerprint"] = code_version("fingerprint", fingerprint_extractor_sources())
    else:
        versions["face"] = face_code_version()
    if args.modality == "fused":
        caches["finger_cache"] = args.finger_cache
        versions["finger_scores"] = finger_scores_code_version()
    shipped = {"face": ["face"], "fingerprint": ["fingerprint"], "fused": ["face", "fingerprint"]}[args.modality]
    calibrations = [args.calibration] if args.calibration else [CALIBRATION_DIR / f"{m}.json" for m in shipped]
    return run_provenance(caches, versions, [p for p in calibrations if p.is_file()])


def evaluate(args: argparse.Namespace) -> dict:
    """Run the benchmark described by ``args``; write everything into ``args.out``; return metrics."""
    provenance = provenance_of(args)
    pairs = read_pairs(args.pairs, args.limit)
    images = unique_images(pairs)
    runs = _face_runs(args, pairs, images) if args.modality == "face" else _fingerprint_runs(args, pairs, images)
    targets = m.DEFAULT_FMR_TARGETS
    sections = [summarise(r, pairs, targets) for r in runs]
    subsets = args.bootstrap > 0  # identities: the images' folders (LFW), or their names less _N (FVC: fingers)
    if subsets:
        same = np.array([p.same for p in pairs])
        subsets_intervals(runs, sections, [r.similarity for r in runs], same,
                          np.array([identity_of(p.path_a) for p in pairs]),
                          np.array([identity_of(p.path_b) for p in pairs]), args.bootstrap)
    result: dict = {
        "modality": args.modality,
        "pairs": str(args.pairs),
        "n_pairs": len(pairs),
        "n_images": len(images),
        "command": command_line(args),
        "provenance": provenance,
        "operating_fmr": args.fmr,
        "score_columns": [r.name for r in runs],
    }
    result.update({k: v for k, v in sections[0].items()})  # the production figures at the top level
    result["production"] = sections[0]
    if len(runs) > 1:
        result["baseline"] = sections[1]
        keep = ~np.isnan(runs[0].similarity) & ~np.isnan(runs[1].similarity)
        if keep.any():
            both = [scores_of(r, pairs, keep) for r in runs[:2]]
            try:
                common = [m.summarise_verification(s, targets) for s in both]
                result["common_subset"] = {
                    "n_pairs": int(keep.sum()),
                    "n_genuine": both[0].n_genuine,
                    "n_impostor": both[0].n_impostor,
                    "production": {k: common[0][k] for k in ("eer", "fnmr_at_fmr", "threshold_at_fmr")},
                    "baseline": {k: common[1][k] for k in ("eer", "fnmr_at_fmr", "threshold_at_fmr")},
                }
            except ValueError:
                pass  # no genuine or no impostor pair in common
    if len(runs) > 1:
        result["paired_fnmr_test"] = paired_test(runs[:2], sections[:2], pairs)
    if args.modality == "face" and runs[0].raw is not None:
        by_distance = PipelineRun("distance", runs[0].extracted, -runs[0].raw, "", 0.0, "", 0.0)
        at = m.summarise_verification(scores_of(by_distance, pairs), targets)["threshold_at_fmr"]
        result["threshold_distance_at_fmr"] = {k: (None if v is None else -v) for k, v in at.items()}
        result["enrol_agreement"] = enrol_agreement(scores_of(runs[0], pairs))
    if args.exhaustive and all(r.to_score is not None for r in runs):
        from benchmarks import plots

        ex_all = [exhaustive_comparisons(r, images, r.to_score) for r in runs]  # type: ignore[arg-type]
        ex_scores = [pair_scores(sim, same) for sim, same, _, _ in ex_all]
        ex = [m.summarise_verification(sc, targets, operating_threshold=r.operating_threshold)
              for r, sc in zip(runs, ex_scores, strict=True)]
        for r, e in zip(runs, ex, strict=True):
            e["pipeline"] = r.name
            e["operating_point"] = r.operating_label
        if subsets:
            _, same, id_a, id_b = ex_all[0]
            subsets_intervals(runs, ex, [sim for sim, _, _, _ in ex_all], same, id_a, id_b, args.bootstrap)
        result["exhaustive"] = {
            "n_images": len(images),
            "n_identities": len({identity_of(i) for i in images}),
            "rule": "every unordered pair of the listed images; same folder (identity) = genuine",
            "sections": ex,
        }
        curves = {r.name: _thin(m.det_curve(sc)) for r, sc in zip(runs, ex_scores, strict=True)}
        args.out.mkdir(parents=True, exist_ok=True)
        plots.det_plot(curves, args.out / "det_exhaustive.png",
                       f"DET, every pair of the {len(images)} images (generalised)")
    result["notes"] = [
        "The shipped face calibration was measured on faces/lfw-dev, the set these pairs come from: the FMR "
        "at the operating threshold is then an in-sample figure. FNMR at FMR p is threshold-free (the "
        "threshold is read off these pairs' own impostor scores).",
    ] if args.modality == "face" else []
    args.out.mkdir(parents=True, exist_ok=True)
    _plots(args.out, runs, pairs, sections)
    _write_scores_csv(args.out, pairs, runs)
    (args.out / "metrics.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
    write_report(args.out, result)
    return result


def json_safe(x: Any) -> Any:
    """``x`` with numpy scalars made plain and non-finite floats made None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return [json_safe(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    parts = ["checkpoint-bench", "accuracy", "--modality", args.modality, "--pairs", str(args.pairs),
             "--out", str(args.out)]
    if args.fmr != 0.001:
        parts += ["--fmr", f"{args.fmr:g}"]
    if args.calibration:
        parts += ["--calibration", str(args.calibration)]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    if args.modality == "fingerprint":
        parts += ["--dpi", str(args.dpi)]
    if args.no_baseline:
        parts.append("--no-baseline")
    if args.exhaustive:
        parts.append("--exhaustive")
    if args.cache:
        parts += ["--cache", str(args.cache)]
    if args.bootstrap != 500:
        parts += ["--bootstrap", str(args.bootstrap)]
    return " ".join(parts)


def _evaluate_set(args: argparse.Namespace) -> list[str]:
    """The fused, frames and augmentation modes over whole sets (not a pairs file); returns report.md's lines."""
    from benchmarks import chimeric, frames

    provenance = provenance_of(args)
    if args.faces is None or not args.faces.is_dir():
        raise PairsError(f"--faces must name a face set folder (images/<identity>/*.jpg), not {args.faces}")
    if args.modality == "fused":
        if args.fingers is None or not args.fingers.is_dir():
            raise PairsError(f"--fingers must name the FVC2002 folder (DB1_B..DB4_B), not {args.fingers}")
        result = chimeric.evaluate_fused(args)
        lines = chimeric.fused_report(result)
    elif args.frames:
        if args.frames < 2:
            raise PairsError("--frames takes 2 or more (probe frames per traveller)")
        result = frames.evaluate_frames(args)
        lines = frames.frames_report(result)
    else:
        result = frames.evaluate_augmentation(args)
        lines = frames.augmentation_report(result)
    result["provenance"] = provenance
    lines += ["", provenance_line(provenance)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    return lines


def run(args: argparse.Namespace) -> int:
    """Entry point of ``checkpoint-bench accuracy``."""
    args.command_line = " ".join(["checkpoint-bench", "accuracy", *sys.argv[2:]]) if len(sys.argv) > 2 else ""
    try:
        if args.modality == "fused" or args.frames or args.augment:
            print("\n".join(_evaluate_set(args)))
            print(f"\nwritten: {args.out / 'metrics.json'}, {args.out / 'report.md'}")
            return 0
        if args.pairs is None:
            raise PairsError("--pairs is required for this mode")
        result = evaluate(args)
    except (PairsError, FileNotFoundError) as exc:
        print(f"checkpoint-bench accuracy: {exc}", file=sys.stderr)
        return 2
    sections = [result["production"]] + ([result["baseline"]] if "baseline" in result else [])
    print("\n".join(comparison_table(sections)))
    print(f"\nwritten: {args.out / 'metrics.json'}, {args.out / 'report.md'}, det.png, roc.png, scores.png")
    return 0
