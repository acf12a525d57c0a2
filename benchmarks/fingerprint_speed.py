"""Fingerprint speed: template extraction (ms), 1:1 (µs), 1:N over 10,000 templates, template size.

Real FVC2002 images (default DB1_B, 500 dpi). The 1:N gallery is the set's templates repeated up to
``--gallery`` entries (each comparison does the full work: no caching between repeats). Baselines,
measured in the same run: the numpy reference implementation of the same comparison called in a
per-pair Python loop (``similarity.py``), and the compiled 1:1 function called in a per-pair Python loop.
Run timing under ``flock -x /tmp/checkpoint-bench.lock``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

COMMAND = "fingerprint-speed"
DEFAULT_SET = Path("../shared/data/fingerprints/fvc2002/DB1_B")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="folder of PNG fingerprints")
    parser.add_argument("--dpi", type=int, default=500)
    parser.add_argument("--images", type=int, default=40, help="images to extract")
    parser.add_argument("--gallery", type=int, default=10_000, help="1:N gallery size")
    parser.add_argument("--baseline-pairs", type=int, default=300, help="pairs for the numpy baseline")


def _numpy_reference(a, b) -> float:
    from biometrics.fingerprint import similarity

    ax, ay, aa = a.cylinder_geometry()
    bx, by, ba = b.cylinder_geometry()
    gamma = similarity.local_similarities(aa, a.bits, a.valid, ba, b.bits, b.valid)
    return similarity.relaxed_score(gamma, ax, ay, aa, bx, by, ba)


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
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point when run as a script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
