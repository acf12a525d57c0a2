"""Is it a fingerprint? The capture checks' measures (``biometrics.fingerprint.capture``) on prints and faces.

For each image: its ``channel_spread`` (colour files) and its ``ridge_share`` (the share of the extractor's
foreground whose tiles hold ridge energy) at the set's resolution, with the time the share takes; per set, the
minimum, percentiles and maximum, and how many images the shipped thresholds refuse. Sets: the FVC2002 ``B`` sets
(``--sets``), optionally degraded as ``fingerprint-robustness`` degrades them (``--degradations``), the test
fingerprints (``tests``), and the faces of an LFW folder converted to grey (``lfw``: what must fail). The
thresholds were chosen on DB1_B and lfw-dev only; docs/fingerprint.md, "Is it a fingerprint?", has the figures.
Run under ``flock -s /tmp/checkpoint-bench.lock``; about 0.1-0.5 s an image (the extractor's analysis), one core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.fingerprint_eval import DEFAULT_DATA, SENSOR_DPI

COMMAND = "fingerprint-capture"
TESTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "fingerprints"
LFW = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "faces" / "lfw-dev" / "images"
PERCENTILES = (1, 5, 50, 95, 99)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the fvc2002 folder")
    parser.add_argument("--sets", nargs="+", default=["DB1_B", "lfw"], choices=[*SENSOR_DPI, "tests", "lfw"])
    parser.add_argument("--lfw", type=Path, default=LFW, help="a folder of face photographs (JPEG, any depth)")
    parser.add_argument("--degradations", nargs="*", default=[], help="fingerprint-robustness degradations")
    parser.add_argument("--every", type=int, default=1, help="take every n-th image (a quick look)")


def _images(args: argparse.Namespace, set_name: str) -> tuple[list[Path], int]:
    """The image files of one set and their resolution (dpi)."""
    if set_name == "lfw":
        return sorted(args.lfw.rglob("*.jpg"))[:: args.every], 500
    if set_name == "tests":
        return sorted(TESTS.glob("*.png")), 500
    return sorted((args.data / set_name).glob("*.png"))[:: args.every], SENSOR_DPI[set_name]


def measure(path: Path, dpi: int, degradation: str | None = None, set_name: str = "") -> tuple[float, float, float]:
    """(channel spread, ridge share (NaN for an empty foreground), seconds the share took) of one image file."""
    import cv2

    from biometrics.fingerprint.capture import channel_spread, ridge_share
    from biometrics.fingerprint.image import as_working_image
    from biometrics.fingerprint.pipeline import analyse

    spread = channel_spread(cv2.imread(str(path), cv2.IMREAD_COLOR))
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if degradation:
        from benchmarks.degrade import degrade, seed_for

        grey = degrade(grey, degradation, seed_for(set_name, path.name, degradation))
    analysis = analyse(as_working_image(grey, dpi))
    start = time.perf_counter()
    share = ridge_share(analysis.norm, analysis.mask)
    return spread, np.nan if share is None else share, time.perf_counter() - start


def summary(name: str, values: np.ndarray) -> str:
    """min, percentiles and max of the finite values, with how many were not finite."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return f"{name}: none"
    cells = " ".join(f"p{q} {np.percentile(finite, q):.3f}" for q in PERCENTILES)
    return (f"{name}: n {finite.size} (empty foreground {values.size - finite.size}) min {finite.min():.3f} {cells} "
            f"max {finite.max():.3f}")


def run(args: argparse.Namespace) -> int:
    """Measure each set (and each degradation of the FVC sets) and print one summary block per set."""
    from biometrics.fingerprint.capture import MAX_CHANNEL_SPREAD, MIN_RIDGE_SHARE

    for set_name in args.sets:
        paths, dpi = _images(args, set_name)
        kinds = [None, *args.degradations] if set_name in SENSOR_DPI else [None]
        for kind in kinds:
            rows = np.array([measure(p, dpi, kind, set_name) for p in paths])
            label = set_name if kind is None else f"{set_name} {kind}"
            spread, share, cost = rows[:, 0], rows[:, 1], rows[:, 2]
            refused_colour = int((spread >= MAX_CHANNEL_SPREAD).sum())
            refused_ridges = int((share < MIN_RIDGE_SHARE).sum())
            print(summary(f"{label} ridge_share", share))
            print(summary(f"{label} channel_spread", spread))
            print(f"{label}: {len(paths)} images; under MIN_RIDGE_SHARE {MIN_RIDGE_SHARE}: {refused_ridges}; colour "
                  f"(spread >= {MAX_CHANNEL_SPREAD:g}): {refused_colour}; ridge_share ms median "
                  f"{1000 * np.median(cost):.1f}, max {1000 * cost.max():.1f}", flush=True)
    return 0


if __name__ == "__main__":
    from benchmarks.cli import script_main

    sys.exit(script_main(__doc__, add_arguments, run))
