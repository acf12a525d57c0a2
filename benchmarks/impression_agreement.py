"""Enrolment agreement of fingerprint impressions (biometrics.fingerprint.agreement) on the FVC2002 B sets.

Each image is cut as the ZFM gives it (``fingerprint-eval``'s ``sensor1``: 500 dpi, 256x288, 16 grey levels) and
extracted as an enrolment extracts it (``min_quality=ENROL_MIN_QUALITY, check_ridges=True``); every pair of the
images it accepts is scored once with the shipped calibration. An image enrolment refuses (``PoorQuality``,
``NotAFingerprint``) never reaches the agreement check (the service refuses the enrolment for it first): it is
reported apart, after the table (how many of a set's images, which), and left out of every pair and every three
below. Printed per set, at the agreement score (default ``MIN_IMPRESSION_AGREEMENT``):

- one comparison: the share of same-finger pairs under it (FNMR) and of different-finger pairs at or over it
  (FMR); two impressions sent for one finger are refused, or another finger passes, at these rates;
- three impressions of one finger (every 3 of its 8, 560 a set when none is refused): the share refused by the
  service's rule (each impression joined to the others through matches, :func:`impression_groups`) and by the
  stricter rule that every pair must match (as for face photographs);
- two impressions of one finger and one of another (20,160 a set when none is refused): the share each rule lets
  through.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.cli import script_main
from benchmarks.fingerprint_eval import DEFAULT_DATA, SENSOR_DPI, sensor_cut

COMMAND = "impression-agreement"
SETS = ("DB1_B", "DB2_B", "DB3_B", "DB4_B")

Score = Callable[[str, str], float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    from biometrics.fingerprint.agreement import MIN_IMPRESSION_AGREEMENT

    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the FVC2002 folder (DB1_B ... DB4_B)")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--threshold", type=float, default=MIN_IMPRESSION_AGREEMENT,
                        help="the agreement score (default the service's)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--positions", action="store_true", help="also the duplicate-finger check (position_rates)")


def pair_scores(folder: Path, dpi: int) -> tuple[dict[tuple[str, str], float], dict[str, str]]:
    """The calibrated score of every pair of the folder's images that enrolment accepts (names sorted, a < b), ZFM
    cuts extracted as ``CheckpointService`` enrols them; and the images it refuses (name: why), which are in no
    pair."""
    from biometrics.errors import InvalidSample
    from biometrics.fingerprint import ENROL_MIN_QUALITY, compare_fingerprints, extract_fingerprint
    from biometrics.scores import ScoreCalibration

    calibration = ScoreCalibration.for_modality("fingerprint")
    templates, refused = {}, {}  # refused: name -> why
    for path in sorted(folder.glob("*.png")):
        grey = sensor_cut(np.array(Image.open(path).convert("L")), dpi)
        try:
            templates[path.stem] = extract_fingerprint(grey, min_quality=ENROL_MIN_QUALITY, check_ridges=True)
        except InvalidSample as error:
            refused[path.stem] = f"{type(error).__name__}: {error}"
    return {(a, b): float(calibration.score(compare_fingerprints(templates[a], templates[b])))
            for a, b in itertools.combinations(sorted(templates), 2)}, refused


def symmetric(scores: Mapping[tuple[str, str], float]) -> Score:
    """The score of two images whichever order they are named in (``scores`` holds each pair once, a < b)."""
    def score(a: str, b: str) -> float:
        return scores[(a, b)] if (a, b) in scores else scores[(b, a)]
    return score


def images_by_finger(scores: Mapping[tuple[str, str], float]) -> dict[str, list[str]]:
    """The images of ``scores`` (names ``FINGER_IMPRESSION``) by finger, each finger's in name order."""
    by_finger: dict[str, list[str]] = {}
    for name in sorted({n for pair in scores for n in pair}):
        by_finger.setdefault(name.split("_")[0], []).append(name)
    return by_finger


def rule_rates(scores: Mapping[tuple[str, str], float], threshold: float) -> dict[str, float | int]:
    """The figures of one set from its pair scores (names ``FINGER_IMPRESSION``), as the module docstring says."""
    from biometrics.fingerprint.agreement import impression_groups

    score = symmetric(scores)

    def joined(names: Sequence[str]) -> bool:
        return len(impression_groups(list(names), score, threshold)[0]) == 1

    def every_pair(names: Sequence[str]) -> bool:
        return all(score(a, b) >= threshold for a, b in itertools.combinations(names, 2))

    by_finger = images_by_finger(scores)
    same = np.array([s for (a, b), s in scores.items() if a.split("_")[0] == b.split("_")[0]])
    other = np.array([s for (a, b), s in scores.items() if a.split("_")[0] != b.split("_")[0]])
    threes = [c for group in by_finger.values() for c in itertools.combinations(group, 3)]
    mixed = [(a, b, w) for f, group in by_finger.items() for a, b in itertools.combinations(group, 2)
             for g, others in by_finger.items() if g != f for w in others]
    return {"genuine_pairs": len(same), "fnmr_pair": float(np.mean(same < threshold)),
            "impostor_pairs": len(other), "fmr_pair": float(np.mean(other >= threshold)),
            "three": len(threes), "three_refused": float(np.mean([not joined(t) for t in threes])),
            "three_refused_every_pair": float(np.mean([not every_pair(t) for t in threes])),
            "mixed": len(mixed), "mixed_passed": float(np.mean([joined(t) for t in mixed])),
            "mixed_passed_every_pair": float(np.mean([every_pair(t) for t in mixed]))}


def position_rates(scores: Mapping[tuple[str, str], float], draws: int = 2000, seed: int = 0) -> dict[str, float | int]:
    """The duplicate-finger check (:func:`biometrics.fingerprint.agreement.one_finger`) on one set's pair scores
    (``--positions``): two positions of three impressions each, DIFFERENT fingers (every 3 of 8 of one finger
    against every 3 of 8 of another, 45 finger pairs) refused as one finger, and the SAME finger split into two
    positions (two disjoint 3s of its 8; its impressions 1-3 and 4-6, the desk's mistake; one impression each)
    found; a ten-finger enrolment (a set's 10 fingers, 3 random impressions each, 45 position pairs) refused."""
    from biometrics.fingerprint.agreement import one_finger

    score = symmetric(scores)

    def cross(xs: Sequence[str], ys: Sequence[str]) -> list[float]:
        return [score(x, y) for x in xs for y in ys]

    by_finger = images_by_finger(scores)
    fingers = sorted(by_finger)
    threes = {f: list(itertools.combinations(by_finger[f], 3)) for f in fingers}
    different = [one_finger(cross(a, b)) for f, g in itertools.combinations(fingers, 2) for a in threes[f]
                 for b in threes[g]]
    different_one = [one_finger([score(a, b)]) for f, g in itertools.combinations(fingers, 2) for a in by_finger[f]
                     for b in by_finger[g]]
    same = [one_finger(cross(a, b)) for f in fingers for a, b in itertools.combinations(threes[f], 2)
            if not set(a) & set(b)]
    desk = [one_finger(cross(by_finger[f][:3], by_finger[f][3:6])) for f in fingers]
    same_one = [one_finger([score(a, b)]) for f in fingers for a, b in itertools.combinations(by_finger[f], 2)]
    rng = np.random.default_rng(seed)
    picks = [[threes[f][rng.integers(len(threes[f]))] for f in fingers] for _ in range(draws)]
    enrolments = [any(one_finger(cross(a, b)) for a, b in itertools.combinations(pick, 2)) for pick in picks]
    first = [by_finger[f][:3] for f in fingers]
    return {"different": len(different), "different_refused": float(np.mean(different)),
            "different_one": len(different_one), "different_one_refused": float(np.mean(different_one)),
            "same": len(same), "same_found": float(np.mean(same)), "desk": len(desk),
            "desk_found": float(np.mean(desk)), "same_one": len(same_one), "same_one_found": float(np.mean(same_one)),
            "enrolments": draws, "enrolments_refused": float(np.mean(enrolments)),
            "enrolment_1_3_pairs_refused": sum(one_finger(cross(a, b)) for a, b in itertools.combinations(first, 2))}


def run(args: argparse.Namespace) -> int:
    """Score the sets and print one table."""
    figures, refusals = {}, []
    print(f"| set | same-finger pairs under s = {args.threshold:g} | different-finger pairs at or over | "
          "3 impressions refused (joined / every pair) | 2 + 1 other finger passed (joined / every pair) |")
    print("|---|---|---|---|---|")
    for name in args.sets:
        started = time.perf_counter()
        scores, refused = pair_scores(args.data / name, SENSOR_DPI[name])
        f = rule_rates(scores, args.threshold)
        figures[name] = {**f, "refused": refused}
        images = len(refused) + len({n for pair in scores for n in pair})
        refusals.append(f"{name} {len(refused)} of {images}"
                        + "".join(f"; {n} ({why})" for n, why in refused.items()))
        if args.positions:
            figures[name]["positions"] = position_rates(scores)
        print(f"| {name} | {f['fnmr_pair']:.2%} of {f['genuine_pairs']} | {f['fmr_pair']:.2%} of "
              f"{f['impostor_pairs']} | {f['three_refused']:.2%} / {f['three_refused_every_pair']:.2%} of "
              f"{f['three']} | {f['mixed_passed']:.2%} / {f['mixed_passed_every_pair']:.3%} of {f['mixed']} |")
        print(f"<!-- {name}: {time.perf_counter() - started:.0f} s -->", file=sys.stderr)
    print("\nImages enrolment refuses (never reach the agreement check; in no pair above): " + " | ".join(refusals))
    if args.positions:
        print_positions(figures)
    if args.json is not None:
        args.json.write_text(json.dumps({"threshold": args.threshold, "sets": figures}, indent=1) + "\n")
    return 0


def print_positions(figures: Mapping[str, Mapping[str, object]]) -> None:
    """The table of :func:`position_rates`, one row a set."""
    from biometrics.fingerprint.agreement import SAME_FINGER_MEDIAN, SAME_FINGER_MIN_PAIRS, SAME_FINGER_SINGLE

    print(f"\nOne finger under two positions: median of the cross scores >= {SAME_FINGER_MEDIAN:g} over >= "
          f"{SAME_FINGER_MIN_PAIRS} pairs, or one >= {SAME_FINGER_SINGLE:g}\n")
    print("| set | different fingers, 3 + 3, refused | ten-finger enrolment (45 pairs) refused | 1 + 1 refused | "
          "same finger, 3 + 3, found | impressions 1-3 + 4-6 found | 1 + 1 found |")
    print("|---|---|---|---|---|---|---|")
    for name, f in figures.items():
        p = f["positions"]
        assert isinstance(p, Mapping)
        print(f"| {name} | {p['different_refused']:.3%} of {p['different']} | {p['enrolments_refused']:.2%} of "
              f"{p['enrolments']} (impressions 1-3: {p['enrolment_1_3_pairs_refused']} of 45 pairs) | "
              f"{p['different_one_refused']:.2%} of {p['different_one']} | {p['same_found']:.2%} of {p['same']} | "
              f"{p['desk_found']:.0%} of {p['desk']} | {p['same_one_found']:.2%} of {p['same_one']} |")


def main(argv: list[str] | None = None) -> int:
    """Entry point when run as a script."""
    return script_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
