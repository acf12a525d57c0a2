"""Fingerprint speed: template extraction (ms), 1:1 (µs), 1:N over 10,000 templates, template size.

Real FVC2002 images (default DB1_B, 500 dpi). The 1:N gallery is the set's templates repeated up to
``--gallery`` entries (each comparison does the full work: no caching between repeats). Baselines,
measured in the same run: the numpy reference implementation of the same comparison called in a
per-pair Python loop (``similarity.py``), and the compiled 1:1 function called in a per-pair Python loop.

Gallery updates (``--update-sizes``): the service's ``FingerprintGallery`` filled with synthetic
subjects (two templates each, the real templates perturbed: minutiae moved by up to 2 px, a contiguous
run of cylinders kept), then the time of ``add`` of one subject and of the first search after it,
against ``RepackingGallery`` (the gallery as it was before commit 49d205d: every template repacked on the
first search after any write), same run, same content.
Run timing under ``flock -x /tmp/checkpoint-bench.lock``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from benchmarks.cli import script_main

if TYPE_CHECKING:
    from biometrics.fingerprint.template import FingerprintTemplate
    from biometrics.scores import ScoreCalibration

COMMAND = "fingerprint-speed"
DEFAULT_SET = Path("../shared/data/fingerprints/fvc2002/DB1_B")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="folder of PNG fingerprints")
    parser.add_argument("--dpi", type=int, default=500)
    parser.add_argument("--images", type=int, default=40, help="images to extract")
    parser.add_argument("--gallery", type=int, default=10_000, help="1:N gallery size")
    parser.add_argument("--baseline-pairs", type=int, default=300, help="pairs for the numpy baseline")
    parser.add_argument("--update-sizes", default="10000",
                        help="gallery sizes (templates, comma-separated) for the add-then-search timing; '' skips")
    parser.add_argument("--update-repeats", type=int, default=3, help="adds timed per size and gallery")
    parser.add_argument("--old-extractor", action="store_true",
                        help="also time the extractor of commit OLD_COMMIT (fingerprint-robustness) on the same "
                             "images, in a process of its own, as the baseline of the extraction time")
    parser.add_argument("--cache", type=Path, default=Path("bench-out/fingerprint-robustness"),
                        help="where the old extractor's sources are exported")


def _time_extraction(images: list[np.ndarray], dpi: int) -> list[float]:
    """Seconds per image of ``extract_fingerprint`` (refusals included), in this process's ``biometrics``."""
    from biometrics.errors import InvalidSample
    from biometrics.fingerprint import extract_fingerprint

    times = []
    for grey in images:
        t0 = time.perf_counter()
        with contextlib.suppress(InvalidSample):
            extract_fingerprint(grey, dpi=dpi)
        times.append(time.perf_counter() - t0)
    return times


def old_extraction_times(images: list[np.ndarray], dpi: int, cache: Path) -> list[float]:
    """``_time_extraction`` with the extractor of ``fingerprint_robustness.OLD_COMMIT``, in a worker process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from benchmarks.fingerprint_robustness import _use_source, old_source

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=_use_source,
                             initargs=(str(old_source(cache)),)) as pool:
        return pool.submit(_time_extraction, images, dpi).result()


def _numpy_reference(a, b) -> float:
    from biometrics.fingerprint import similarity

    ax, ay, aa = a.cylinder_geometry()
    bx, by, ba = b.cylinder_geometry()
    gamma = similarity.local_similarities(aa, a.bits, a.valid, ba, b.bits, b.valid)
    return similarity.relaxed_score(gamma, ax, ay, aa, bx, by, ba)


class RepackingGallery:
    """The fingerprint gallery before commit 49d205d, kept as the baseline and the tests' reference:
    a dict subject -> [(finger, template)], every template repacked on the first search after any write. Its
    scores per enrolled finger are the service's (``gallery.matched_per_probe``, ``gallery.per_enrolled_finger``),
    so that the tests compare the storage, not two rules."""

    def __init__(self, calibration: ScoreCalibration) -> None:
        self.calibration = calibration
        self._lock = threading.Lock()
        self._entries: dict[str, list[tuple[int, FingerprintTemplate]]] = {}
        self._snapshot: tuple | None = None

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._entries.values())

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._entries

    @property
    def nbytes(self) -> int:
        """Bytes of the packed arrays (0 until a search packs them)."""
        packed = self._snapshot[3] if self._snapshot is not None else None
        if packed is None:
            return 0
        return sum(a.nbytes for a in (packed.x, packed.y, packed.angle, packed.bits, packed.valid, packed.offsets,
                                      packed.owner))

    def add(self, subject_id: str, entries: Sequence[tuple[int, FingerprintTemplate]]) -> None:
        """Add templates of a subject."""
        if not entries:
            return
        with self._lock:
            self._entries.setdefault(subject_id, []).extend((int(f), t) for f, t in entries)
            self._snapshot = None

    def remove(self, subject_id: str) -> None:
        """Forget a subject's templates."""
        with self._lock:
            if self._entries.pop(subject_id, None) is not None:
                self._snapshot = None

    def _packed(self) -> tuple:
        from biometrics.fingerprint.matching import PackedGallery

        with self._lock:
            if self._snapshot is None:
                subjects = list(self._entries)
                templates, fingers, starts = [], [], []
                for sid in subjects:
                    starts.append(len(templates))
                    for finger, t in self._entries[sid]:
                        templates.append(t)
                        fingers.append(finger)
                self._snapshot = (subjects, np.asarray(starts, dtype=np.int64),
                                  np.asarray(fingers, dtype=np.int64), PackedGallery(templates))
            return self._snapshot

    def search(self, probes: Sequence[tuple[int, FingerprintTemplate]]) -> dict[str, list[tuple[int, float]]]:
        """False-match scores of every subject with a comparable template: subject -> [(finger, score)], one per
        enrolled finger reached (the service's rule, ``gallery.per_enrolled_finger``)."""
        from biometrics.fingerprint.fusion import best_of_k
        from biometrics.fingerprint.gallery import matched_per_probe, per_enrolled_finger

        subjects, starts, fingers, packed = self._packed()
        if not probes or not subjects:
            return {}
        raw = [packed.scores(t) for _, t in probes]
        owners = np.repeat(np.arange(len(subjects)), np.diff(np.append(starts, len(fingers))))
        best, count, matched = matched_per_probe(raw, fingers, owners, np.ones(len(fingers), dtype=bool),
                                                 len(subjects), probes, by_position=False)
        out: dict[str, list[tuple[int, float]]] = {}
        for finger, best_raw, compared in per_enrolled_finger(best, count, matched, [f for f, _ in probes]):
            calibrated = self.calibration.score(np.where(np.isfinite(best_raw), best_raw, 0.0))
            for i, sid in enumerate(subjects):
                if compared[i] > 0:
                    out.setdefault(sid, []).append((int(finger[i]), best_of_k(float(calibrated[i]), int(compared[i]))))
        return out


def perturbed(template: FingerprintTemplate, rng: np.random.Generator) -> FingerprintTemplate:
    """A synthetic template from a real one: every minutia moved by up to 2 px, its direction by up to
    0.05 rad, and a contiguous run of at least 3/4 of its cylinders kept (views: no copy of the bits)."""
    from biometrics.fingerprint.template import FingerprintTemplate

    n = template.cylinder_count
    keep = max(1, int(np.ceil(n * rng.uniform(0.75, 1.0)))) if n else 0
    start = int(rng.integers(0, n - keep + 1)) if n else 0
    minutiae = template.minutiae.copy()
    minutiae["x"] = np.clip(minutiae["x"] + rng.integers(-2, 3, len(minutiae)), 0, None)
    minutiae["y"] = np.clip(minutiae["y"] + rng.integers(-2, 3, len(minutiae)), 0, None)
    minutiae["angle"] = np.mod(minutiae["angle"] + rng.uniform(-0.05, 0.05, len(minutiae)), 2 * np.pi)
    return FingerprintTemplate(minutiae, template.cylinder_minutia[start : start + keep],
                               template.bits[start : start + keep], template.valid[start : start + keep],
                               template.quality, template.width, template.height)


def synthetic_templates(templates: Sequence[FingerprintTemplate], count: int, seed: int = 0
                        ) -> list[FingerprintTemplate]:
    """``count`` perturbed copies of ``templates`` taken in turn."""
    rng = np.random.default_rng(seed)
    return [perturbed(templates[k % len(templates)], rng) for k in range(count)]


def _ms(f: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    f()
    return 1000 * (time.perf_counter() - t0)


def measure_update(make_gallery: Callable[[], object], subjects: Sequence[tuple[str, list]],
                   newcomers: Sequence[tuple[str, list]], probe: tuple[int, FingerprintTemplate]) -> dict[str, float]:
    """Fill a gallery with ``subjects``; then, for each newcomer: add it, search, search again, remove it,
    search. Medians in ms: add, first search after the add, steady search (the second), the first's extra
    over the second (the repack), remove, first search after it; the time to fill with ``add``, the first
    search, the packed bytes; and the time to fill a fresh gallery with one ``add_many`` where there is one."""
    gallery = make_gallery()
    t0 = time.perf_counter()
    for subject_id, entries in subjects:
        gallery.add(subject_id, entries)
    fill = time.perf_counter() - t0
    first = _ms(lambda: gallery.search([probe]))
    times: dict[str, list[float]] = {"add": [], "search after add": [], "steady search": [], "remove": [],
                                     "search after remove": []}
    for subject_id, entries in newcomers:
        times["add"].append(_ms(lambda sid=subject_id, e=entries: gallery.add(sid, e)))
        times["search after add"].append(_ms(lambda: gallery.search([probe])))
        times["steady search"].append(_ms(lambda: gallery.search([probe])))
        times["remove"].append(_ms(lambda sid=subject_id: gallery.remove(sid)))
        times["search after remove"].append(_ms(lambda: gallery.search([probe])))
    out = {key: statistics.median(values) for key, values in times.items()}
    out["repack"] = statistics.median(a - b for a, b in zip(times["search after add"], times["steady search"],
                                                            strict=True))
    out["fill"] = 1000 * fill
    out["MB"] = gallery.nbytes / 1e6
    if hasattr(gallery, "add_many"):  # the bulk load a station's start can use
        del gallery
        bulk = make_gallery()
        out["bulk fill"] = _ms(lambda: bulk.add_many(subjects))
    out["first search"] = first
    return out


def run_updates(templates: Sequence[FingerprintTemplate], sizes: Sequence[int], repeats: int) -> None:
    """Print the add-then-search timing of both galleries at each size (templates, two per subject)."""
    from biometrics.fingerprint.gallery import FingerprintGallery
    from biometrics.scores import ScoreCalibration

    calibration = ScoreCalibration.for_modality("fingerprint")
    for size in sizes:
        pool = synthetic_templates(templates, size + 2 * repeats, seed=size)
        subjects = [(f"S{k:07d}", [(2, pool[2 * k]), (7, pool[2 * k + 1])]) for k in range(size // 2)]
        newcomers = [(f"N{k:03d}", [(2, pool[size + 2 * k]), (7, pool[size + 2 * k + 1])]) for k in range(repeats)]
        probe = (2, templates[0])
        print(f"gallery update at {2 * len(subjects):,} templates ({len(subjects):,} subjects of two templates): "
              f"median of {repeats} adds of one subject, ms")
        for label, make in (("repack on search (before)", lambda: RepackingGallery(calibration)),
                            ("append-only (now)", lambda: FingerprintGallery(calibration))):
            m = measure_update(make, subjects, newcomers, probe)
            print(f"  {label}: add {m['add']:.3f}, first search after it {m['search after add']:,.0f} "
                  f"(steady search {m['steady search']:,.0f}, extra {m['repack']:,.0f}); "
                  f"remove {m['remove']:.3f}, search after it "
                  f"{m['search after remove']:,.0f}; filling {m['fill']:,.0f}, first search {m['first search']:,.0f}; "
                  f"packed {m['MB']:,.0f} MB"
                  + (f"; filling with one add_many {m['bulk fill']:,.0f}" if "bulk fill" in m else ""))


def run(args: argparse.Namespace) -> int:
    """Measure and print."""
    from biometrics.errors import InvalidSample
    from biometrics.fingerprint import PackedGallery, compare_fingerprints, extract_fingerprint

    paths = sorted(args.set.glob("*.png"))[: args.images]
    images = [np.array(Image.open(p).convert("L")) for p in paths]
    templates, times = [], []
    for grey in images:
        t0 = time.perf_counter()
        with contextlib.suppress(InvalidSample):
            templates.append(extract_fingerprint(grey, dpi=args.dpi))
        times.append(time.perf_counter() - t0)
    sizes = [len(t.to_bytes()) for t in templates]
    print(f"images: {len(images)} from {args.set} ({images[0].shape[1]}x{images[0].shape[0]} px), "
          f"templates: {len(templates)}, cylinders per template: mean "
          f"{np.mean([t.cylinder_count for t in templates]):.1f}")
    print(f"extraction: median {1000 * np.median(times):.1f} ms, mean {1000 * np.mean(times):.1f} ms per image")
    if args.old_extractor:
        from benchmarks.fingerprint_robustness import OLD_COMMIT

        old = old_extraction_times(images, args.dpi, args.cache)
        print(f"baseline extraction, extractor of {OLD_COMMIT} (same images, after this one): median "
              f"{1000 * np.median(old):.1f} ms, mean {1000 * np.mean(old):.1f} ms per image; "
              f"now / before: {np.median(times) / np.median(old):.2f}x (median)")
    print(f"template size: median {int(np.median(sizes))} bytes (min {min(sizes)}, max {max(sizes)})")

    compare_fingerprints(templates[0], templates[1])  # compile (numba), not timed
    pairs = [(templates[i], templates[j]) for i in range(len(templates)) for j in range(i + 1, len(templates))]
    t0 = time.perf_counter()
    for a, b in pairs:
        compare_fingerprints(a, b)
    one_to_one = (time.perf_counter() - t0) / len(pairs)
    print(f"1:1 compiled, per-pair Python loop: {1e6 * one_to_one:.1f} µs per comparison over {len(pairs)} pairs "
          f"({1 / one_to_one:,.0f}/s)")

    n_base = min(args.baseline_pairs, len(pairs))
    t0 = time.perf_counter()
    for a, b in pairs[:n_base]:
        _numpy_reference(a, b)
    naive = (time.perf_counter() - t0) / n_base
    print(f"baseline numpy reference, per-pair Python loop: {1e6 * naive:.0f} µs per comparison "
          f"({1 / naive:,.0f}/s, {n_base} pairs)")

    gallery_templates = [templates[k % len(templates)] for k in range(args.gallery)]
    t0 = time.perf_counter()
    gallery = PackedGallery(gallery_templates)
    pack = time.perf_counter() - t0
    probes = templates[:10]
    gallery.scores(probes[0])  # compile the parallel kernel, not timed
    t0 = time.perf_counter()
    for probe in probes:
        gallery.scores(probe)
    search = (time.perf_counter() - t0) / len(probes)
    rate = args.gallery / search
    threads = os.environ.get("NUMBA_NUM_THREADS", str(os.cpu_count()))
    print(f"1:N over {args.gallery:,} templates: {1000 * search:.0f} ms per search, {rate:,.0f} comparisons/s "
          f"(one process, {threads} numba threads; packing the gallery once: {1000 * pack:.0f} ms)")
    print(f"ratio 1:N vs numpy-reference loop: {rate * naive:.0f}x; vs compiled per-pair loop: "
          f"{rate * one_to_one:.1f}x")
    sizes = [int(v) for v in args.update_sizes.replace("_", "").split(",") if v.strip()]
    if sizes:
        del gallery, gallery_templates
        run_updates(templates, sizes, args.update_repeats)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point when run as a script."""
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
