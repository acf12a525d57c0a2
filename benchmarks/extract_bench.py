"""Face extraction throughput: plain face_recognition calls vs the worker pool on 1 worker and on every core.

Usage::

    flock -x /tmp/checkpoint-bench.lock checkpoint-bench extract --images ../shared/data/faces/lfw-dev \\
        --json results/extract.json

JPEG/PNG images under ``--images`` (recursive; ``--limit`` of them, spread evenly over the sorted list) are
read into memory once, as bytes. Each repeat runs, in this order, on the same bytes:

- ``baseline``: ``face_recognition.face_locations(img)`` then ``face_recognition.face_encodings(img,
  locations)`` per image, decoding included (``face_recognition.load_image_file``), sequential, this process;
- ``in-process``: the production pipeline (:func:`biometrics.face.face_template_from_bytes`), sequential,
  this process: the cost of our cascade alone, without the pool;
- ``pool-1``: :class:`biometrics.workers.FaceWorkerPool` with 1 worker, the whole set through ``map_faces``;
- ``pool-N``: the pool with ``--workers`` (default one per core), the same way.

Warm-up is excluded: models are loaded and every worker has extracted before timing (blank images, which
run every detector stage, the CNN included). Figures are medians over ``--repeats``. Fair-comparison
caveat: the production cascade falls back to the upsampled HOG and to the CNN detector where the plain HOG
finds nothing, so it does more work on hard images than the baseline (which then fails to acquire); the
detector stage that found each face is counted. The machine's load (``os.getloadavg``) before and after is
recorded: other jobs on the cores make the per-core figure meaningless.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

COMMAND = "extract"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
DEFAULT_IMAGES = Path("../shared/data/faces/lfw-dev")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench extract``."""
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEG/PNG images (recursive)")
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--limit", type=int, default=200, help="images used, spread over the sorted list")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each method; medians reported")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers of the per-core pool")


def image_files(root: Path, limit: int) -> list[Path]:
    """``limit`` JPEG/PNG files under ``root``, evenly spread over the sorted list (all when fewer)."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if limit and len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


# -- the methods: each returns one outcome per image, a detector name or an error class name ---------------

def _timed(fn: Callable[[bytes], str], images: Sequence[bytes], per_image: list[float] | None) -> list[str]:
    """``fn`` over the images, one after another; each image's seconds appended to ``per_image``."""
    outcomes = []
    for data in images:
        start = time.perf_counter()
        outcomes.append(fn(data))
        if per_image is not None:
            per_image.append(time.perf_counter() - start)
    return outcomes


def _baseline_one(data: bytes) -> str:
    import face_recognition

    try:
        rgb = face_recognition.load_image_file(io.BytesIO(data))
    except Exception as exc:  # counted as a failure to acquire, as ours are
        return f"error:{type(exc).__name__}"
    locations = face_recognition.face_locations(rgb)
    encodings = face_recognition.face_encodings(rgb, locations)
    return "hog" if encodings else "error:NoFace"


def _in_process_one(data: bytes) -> str:
    from biometrics.errors import BiometricError
    from biometrics.face import face_template_from_bytes

    try:
        return face_template_from_bytes(data).box.detector
    except BiometricError as exc:
        return f"error:{type(exc).__name__}"


def baseline_pass(images: Sequence[bytes], per_image: list[float] | None = None) -> list[str]:
    """Plain face_recognition calls, one image after another."""
    return _timed(_baseline_one, images, per_image)


def in_process_pass(images: Sequence[bytes], per_image: list[float] | None = None) -> list[str]:
    """The production pipeline in this process, one image after another."""
    return _timed(_in_process_one, images, per_image)


def pool_pass(pool: Any, images: Sequence[bytes]) -> list[str]:
    """The whole set through the pool's ``map_faces`` (all workers fed at once)."""
    from biometrics.face import FaceTemplate

    return [r.box.detector if isinstance(r, FaceTemplate) else f"error:{type(r).__name__}"
            for r in pool.map_faces(images)]


def _warm(pool: Any, blank: bytes) -> None:
    """Start every worker and let each run every detector stage once (the CNN loads on first use)."""
    pool.warm_up(timeout=300)
    for _ in range(3):
        pool.map_faces([blank] * (4 * pool.workers))


def _summary(name: str, seconds: list[float], outcomes: list[str], n: int) -> dict[str, Any]:
    median = statistics.median(seconds)
    counts = Counter(outcomes)
    return {
        "method": name,
        "images": n,
        "seconds": [round(s, 3) for s in seconds],
        "median_seconds": round(median, 3),
        "images_per_s": round(n / median, 2),
        "fta": sum(v for k, v in counts.items() if k.startswith("error:")),
        "outcomes": dict(sorted(counts.items())),
    }


def _same_work(outcomes: dict[str, list[str]], per_image: dict[str, list[list[float]]],
               pool_1_seconds: float) -> dict[str, Any]:
    """Rates on the images where both pipelines did the same work (found at HOG), from per-image medians.

    The pool-1 figure is an estimate: its median wall time less the in-process seconds of the excluded images
    (the pool times batches, not images; in-process and pool-1 extraction cost the same per image).
    """
    base = np.median(np.array(per_image["baseline"]), axis=0)
    ours = np.median(np.array(per_image["in-process"]), axis=0)
    same = np.array([b == "hog" and o.startswith("hog")
                     for b, o in zip(outcomes["baseline"], outcomes["in-process"], strict=True)])
    m = int(same.sum())
    pool_1 = m / max(pool_1_seconds - float(ours[~same].sum()), 1e-9)
    return {
        "images": m,
        "excluded": int((~same).sum()),
        "excluded_in_process_seconds": round(float(ours[~same].sum()), 3),
        "excluded_baseline_seconds": round(float(base[~same].sum()), 3),
        "baseline_images_per_s": round(m / float(base[same].sum()), 2),
        "in_process_images_per_s": round(m / float(ours[same].sum()), 2),
        "pool_1_images_per_s_estimate": round(pool_1, 2),
        "ratio_1_worker_vs_baseline_estimate": round(pool_1 * float(base[same].sum()) / m, 3),
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(args: argparse.Namespace) -> int:
    """Measure, print a table, write the JSON."""
    import face_recognition  # noqa: F401 - loads its models now, outside the timing
    from tqdm import tqdm

    from benchmarks.report import cpu_model
    from biometrics.face import face_template_from_bytes, load_models
    from biometrics.imaging import encode_png
    from biometrics.workers import FaceWorkerPool

    files = image_files(args.images, args.limit)
    if not files:
        print(f"no JPEG/PNG image under {args.images}", file=sys.stderr)
        return 2
    images = [f.read_bytes() for f in files]
    n = len(images)
    blank = encode_png(np.full((96, 96, 3), 255, np.uint8))
    load_before = _load()

    load_models()
    baseline_pass([*images[:2], blank])
    in_process_pass([*images[:2], blank])
    with FaceWorkerPool(1) as one, FaceWorkerPool(args.workers) as many:
        _warm(one, blank)
        _warm(many, blank)
        per_image: dict[str, list[list[float]]] = {"baseline": [], "in-process": []}

        def sequential(name: str, fn: Callable[..., list[str]]) -> Callable[[], list[str]]:
            def one_pass() -> list[str]:
                per_image[name].append([])
                return fn(images, per_image[name][-1])
            return one_pass

        methods: list[tuple[str, Callable[[], list[str]]]] = [
            ("baseline", sequential("baseline", baseline_pass)),
            ("in-process", sequential("in-process", in_process_pass)),
            ("pool-1", lambda: pool_pass(one, images)),
            (f"pool-{args.workers}", lambda: pool_pass(many, images)),
        ]
        seconds: dict[str, list[float]] = {name: [] for name, _ in methods}
        outcomes: dict[str, list[str]] = {}
        with tqdm(total=args.repeats * len(methods), desc="passes", file=sys.stderr) as bar:
            for _ in range(args.repeats):
                for name, fn in methods:  # interleaved: drift in the machine's load hits every method alike
                    start = time.perf_counter()
                    outcomes[name] = fn()
                    seconds[name].append(time.perf_counter() - start)
                    bar.update()
        # The pool must give what the process gives: the largest template difference over the set.
        pooled = many.map_faces(images)
    differences = [float(np.max(np.abs(p.template - face_template_from_bytes(d).template)))
                   for p, d in zip(pooled, images, strict=True) if hasattr(p, "template")]
    load_after = _load()

    rows = [_summary(name, seconds[name], outcomes[name], n) for name, _ in methods]
    rate = {r["method"]: r["images_per_s"] for r in rows}
    same = _same_work(outcomes, per_image, statistics.median(seconds["pool-1"]))
    per_core = rate[f"pool-{args.workers}"] / rate["pool-1"]
    one_vs_baseline = rate["pool-1"] / rate["baseline"]
    result = {
        "command": "checkpoint-bench extract " + " ".join(sys.argv[2:]),
        "images_dir": str(args.images),
        "images": n,
        "repeats": args.repeats,
        "workers": args.workers,
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                    "load_before": load_before, "load_after": load_after},
        "methods": rows,
        "ratio_per_core_vs_1_worker": round(per_core, 3),
        "ratio_1_worker_vs_baseline": round(one_vs_baseline, 3),
        "ratio_in_process_vs_baseline": round(rate["in-process"] / rate["baseline"], 3),
        "same_work": same,
        "max_template_difference_pool_vs_in_process": max(differences, default=0.0),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")

    print(f"{n} images from {args.images}; {os.cpu_count()} cores ({cpu_model()}); medians of {args.repeats}; "
          f"load average {load_before} before, {load_after} after")
    print(f"{'method':<12} {'images/s':>9} {'median s':>9} {'FTA':>5}  detector stages")
    for r in rows:
        stages = ", ".join(f"{k} {v}" for k, v in r["outcomes"].items())
        print(f"{r['method']:<12} {r['images_per_s']:>9.2f} {r['median_seconds']:>9.2f} {r['fta']:>5}  {stages}")
    print(f"per-core ({args.workers} workers) / 1 worker: {per_core:.2f}x; 1 worker / baseline: "
          f"{one_vs_baseline:.2f}x; in-process / baseline: {result['ratio_in_process_vs_baseline']:.2f}x")
    print(f"same work ({same['images']} images both found at HOG; {same['excluded']} where the work differs, "
          f"e.g. our CNN fallback, excluded): baseline {same['baseline_images_per_s']:.2f}/s, in-process "
          f"{same['in_process_images_per_s']:.2f}/s, pool-1 about {same['pool_1_images_per_s_estimate']:.2f}/s "
          f"(1 worker / baseline about {same['ratio_1_worker_vs_baseline_estimate']:.2f}x)")
    print(f"largest template difference, pool vs in-process: {result['max_template_difference_pool_vs_in_process']}")
    print(f"written: {args.json}")
    return 0
