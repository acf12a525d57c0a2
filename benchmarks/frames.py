"""Several face frames per traveller, and augmented enrolment templates, measured on LFW identities.

``checkpoint-bench accuracy --modality face --frames 2 --faces DIR``: one reference image against two probe
images of a traveller, the probes combined by each rule of :mod:`biometrics.multiframe` (best, mean,
quality) and, as the baseline, the first probe alone. Genuine: identities with at least ``frames + 1``
images, at most ``--max-genuine`` (reference, probes) draws each. Impostor: every reference identity
against every other identity with at least ``frames`` images (one reference image and one probe set drawn
per identity). The same dev / test split of identities as :mod:`benchmarks.chimeric`: the rule is chosen on
dev, the figures reported on test. LFW probes are separate photographs (days apart), less alike than the
frames of one camera burst: a burst gains less from a second frame than these figures show.

``--augment``: references enrolled from an augmented template (dlib's ``num_jitters``: 10 random crops,
flips and scales of the aligned face, averaged; or the mean of the image's and its mirror's templates)
against plain single probes; the cost is the extraction time per enrolment.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import metrics as m
from benchmarks.accuracy import pct
from benchmarks.chimeric import (
    RULE_TOLERANCE,
    SPLIT_SEED,
    TARGETS,
    Comparisons,
    Curve,
    FaceSet,
    fit_face_calibration,
    identities_of_split,
    load_face_set,
    summarise_curves,
)

FRAME_RULES = ("single", "best", "mean", "quality")
AUGMENTATIONS = ("plain", "mirror", "jitter10")


def _comparisons(subject_a: Sequence[int], subject_b: Sequence[int], genuine: Sequence[bool],
                 subjects: list[str]) -> Comparisons:
    zeros = np.zeros(len(genuine), np.int64)
    return Comparisons(np.asarray(genuine, bool), np.asarray(subject_a, np.int64), np.asarray(subject_b, np.int64),
                       zeros, zeros, zeros, zeros, zeros, zeros, subjects, [("", "")], {})


def frame_scores(faces: FaceSet, identities: Sequence[str], frames: int, max_genuine: int, face_cal,
                 seed: int = SPLIT_SEED, second: bool = False) -> tuple[list[Curve], Comparisons]:
    """False-match scores of each rule over the genuine and impostor (reference, probe frames) comparisons;
    ``second``: also the second frame alone (curve ``"second"``, uncorrected like ``"single"``, the first)."""
    from biometrics.fingerprint.fusion import best_of_k
    from biometrics.multiframe import probe_distance, probe_templates

    rng = np.random.default_rng(seed)
    ids = list(identities)
    imgs = {s: np.flatnonzero((faces.identity == s) & faces.ok) for s in ids}

    def distances(ref: int, probes: np.ndarray) -> dict[str, float]:
        t, q, r = faces.templates[probes], faces.quality[probes], faces.templates[ref]
        out = {"single": float(np.linalg.norm(t[0] - r)), "second": float(np.linalg.norm(t[-1] - r))}
        for rule in ("best", "mean", "quality"):
            out[rule] = probe_distance(t, q, r, rule)
        return out

    rows: list[dict[str, float]] = []
    sa, sb, gen = [], [], []
    for k, s in enumerate(ids):
        im = imgs[s]
        if len(im) < frames + 1:
            continue
        draws = set()
        for _ in range(max_genuine * 4):
            perm = rng.permutation(im)[: frames + 1]
            draws.add((int(perm[0]), tuple(sorted(int(x) for x in perm[1:]))))
            if len(draws) >= max_genuine:
                break
        for ref, probes in sorted(draws):
            rows.append(distances(ref, np.array(probes)))
            sa.append(k), sb.append(k), gen.append(True)
    ref_of = {k: int(rng.choice(imgs[s])) for k, s in enumerate(ids) if len(imgs[s])}
    probes_of = {k: rng.permutation(imgs[s])[:frames] for k, s in enumerate(ids) if len(imgs[s]) >= frames}
    refs = np.array(sorted(ref_of))
    ref_t = faces.templates[[ref_of[k] for k in refs]]
    for j, probes in probes_of.items():
        t, q = faces.templates[probes], faces.quality[probes]
        others = refs != j
        per_rule = {"single": np.linalg.norm(ref_t - t[0], axis=1), "second": np.linalg.norm(ref_t - t[-1], axis=1)}
        for rule in ("best", "mean", "quality"):
            fused = probe_templates(t, q, rule).astype(np.float64)
            per_rule[rule] = np.min(np.linalg.norm(ref_t[:, None, :] - fused[None, :, :], axis=2), axis=1)
        for i in np.flatnonzero(others):
            rows.append({r: float(v[i]) for r, v in per_rule.items()})
        sa.extend(refs[others].tolist()), sb.extend([j] * int(others.sum())), gen.extend([False] * int(others.sum()))
    # As the service states them: a score drawn from k frames loses log10(k) (best_of_k), whatever the rule.
    curves = [Curve(rule, best_of_k(face_cal.score(np.array([r[rule] for r in rows])),
                                    1 if rule in ("single", "second") else frames))
              for rule in FRAME_RULES + (("second",) if second and frames > 1 else ())]
    return curves, _comparisons(sa, sb, gen, ids)


def evaluate_frames(args: argparse.Namespace) -> dict:
    """Dev: choose the rule; test: report every rule against one frame."""
    from biometrics.scores import threshold_for_fmr

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    faces = load_face_set(args.faces, args.workers, args.cache)
    dev_ids, test_ids = identities_of_split(faces, "dev"), identities_of_split(faces, "test")
    cal = fit_face_calibration(faces, dev_ids, "dev identities")
    threshold = threshold_for_fmr(args.fmr)
    out: dict = {"modality": "face", "frames": args.frames, "command": args.command_line, "started": started,
                 "calibration": f"face, refitted on {cal.n_impostor} dev impostor distances"}
    for split, ids, reps in (("dev", dev_ids, 0), ("test", test_ids, args.bootstrap)):
        curves, comps = frame_scores(faces, ids, args.frames, args.max_genuine, cal)
        out[split] = summarise_curves(curves, comps, threshold, reps)
        out[f"{split}_identities_with_genuine"] = len(set(comps.subject_a[comps.genuine].tolist()))
    key = m.rate_key(1e-3)
    dev = {s["pipeline"]: s["fnmr_at_fmr"][key]["fnmr"] for s in out["dev"] if s["pipeline"] != "single"}
    best = min(dev.values())
    # Within RULE_TOLERANCE of the best counts as a tie, settled for the simplest rule: mean, then best.
    chosen = next(r for r in ("mean", "best", "quality") if dev[r] <= best + RULE_TOLERANCE)
    out["chosen_rule"] = chosen
    out["why"] = (f"dev FNMR at FMR 0.1%: {', '.join(f'{r} {100 * v:.2f}%' for r, v in dev.items())}; within "
                  f"{100 * RULE_TOLERANCE:g} points of the lowest counts as a tie, settled for the simplest rule "
                  "(mean, then best, then quality)")
    return out


def split_table(secs: list[dict], first: str, extra: str, cell: Callable[[dict], str]) -> list[str]:
    """A Markdown table of one split's pipelines: counts, EER, FNMR at each FMR [interval], one extra column."""
    keys = list(secs[0]["fnmr_at_fmr"])
    head = " | ".join(f"FNMR at FMR {float(k) * 100:g}%" for k in keys)
    lines = [f"| {first} | genuine / impostor | EER | {head} | {extra} |", "|---|---|---|" + "---|" * (len(keys) + 1)]
    for s in secs:
        cells = []
        for k in keys:
            e = s["fnmr_at_fmr"][k]
            ci = f" [{pct(e['interval'][0])}, {pct(e['interval'][1])}]" if e["interval"] else ""
            cells.append(f"{pct(e['fnmr'])}{ci}")
        lines.append(f"| {s['pipeline']} | {s['n_genuine']} / {s['n_impostor']} | {pct(s['eer'])} | "
                     + " | ".join(cells) + f" | {cell(s)} |")
    return lines


def frames_report(result: dict) -> list[str]:
    """report.md of a frames run."""
    lines = [f"# Several frames per traveller ({result['frames']} probes against one reference), "
             f"{result['started']}", "", f"Command: `{result['command']}`", "", result["calibration"], ""]
    for split in ("dev", "test"):
        lines += [f"## {split} ({result[f'{split}_identities_with_genuine']} identities with genuine draws)", "",
                  *split_table(result[split], "rule", "FMR / FNMR at s >= 3", lambda s: (
                      f"{pct(s['at_service_threshold']['fmr'])} / {pct(s['at_service_threshold']['fnmr'])}")), ""]
    lines += [f"Chosen: {result['chosen_rule']} ({result['why']}).", ""]
    return lines


# ---------------------------------------------------------------------------------------------------------
# Enrolment augmentation


def augmented_template(path: str, variant: str) -> tuple[np.ndarray | None, float]:
    """The enrolment template of an image with ``variant`` augmentation, and the seconds it took."""
    import cv2
    import dlib

    from biometrics.errors import BiometricError
    from biometrics.face import _models, extract_face_template
    from biometrics.imaging import decode_rgb

    start = time.perf_counter()
    rgb = decode_rgb(Path(path).read_bytes())
    try:
        plain = extract_face_template(rgb, "probe")
    except BiometricError:
        return None, time.perf_counter() - start
    if variant == "plain":
        return plain.template.astype(np.float64), time.perf_counter() - start
    if variant == "jitter10":
        b = plain.box
        shape = _models.get("landmarks")(rgb, dlib.rectangle(b.left, b.top, b.right, b.bottom))
        t = np.asarray(_models.get("encoder").compute_face_descriptor(rgb, shape, 10), np.float64)
        return t, time.perf_counter() - start
    mirrored = np.ascontiguousarray(cv2.flip(rgb, 1))
    try:
        flipped = extract_face_template(mirrored, "probe").template.astype(np.float64)
    except BiometricError:
        return plain.template.astype(np.float64), time.perf_counter() - start
    from biometrics.multiframe import weighted_mean_template

    return weighted_mean_template([plain.template, flipped]), time.perf_counter() - start


def _augment_job(job: tuple[str, str]) -> tuple[np.ndarray | None, float]:
    import os

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    return augmented_template(*job)


def augmentation_scores(faces: FaceSet, identities: Sequence[str], workers: int, face_cal, seed: int = SPLIT_SEED
                        ) -> tuple[list[Curve], Comparisons, dict[str, float]]:
    """Reference = one image per identity with >= 2 images (augmented per variant); probes = every other image."""
    rng = np.random.default_rng(seed)
    ids = [s for s in identities if ((faces.identity == s) & faces.ok).sum() >= 2]
    ref_img = {s: int(rng.choice(np.flatnonzero((faces.identity == s) & faces.ok))) for s in ids}
    jobs = [(str(faces.folder / faces.images[ref_img[s]]), v) for v in AUGMENTATIONS for s in ids]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(_augment_job, jobs, chunksize=4))
    all_ids = list(identities)
    index = {s: k for k, s in enumerate(all_ids)}
    probes = np.flatnonzero(np.isin(faces.identity, all_ids) & faces.ok
                            & ~np.isin(np.arange(len(faces.images)), list(ref_img.values())))
    probe_subject = np.array([index[s] for s in faces.identity[probes]])
    curves, cost = [], {}
    sa = sb = gen = None
    for vi, v in enumerate(AUGMENTATIONS):
        part = results[vi * len(ids):(vi + 1) * len(ids)]
        refs = np.stack([t if t is not None else faces.templates[ref_img[s]] for (t, _), s in zip(part, ids,
                                                                                                   strict=True)])
        cost[v] = 1000 * float(np.median([sec for _, sec in part]))
        p = faces.templates[probes]
        d = np.sqrt(np.maximum((refs**2).sum(1)[:, None] + (p**2).sum(1)[None, :] - 2 * refs @ p.T, 0.0))
        ref_subject = np.array([index[s] for s in ids])
        sa = np.repeat(ref_subject, len(probes))
        sb = np.tile(probe_subject, len(ids))
        gen = sa == sb
        curves.append(Curve(v, np.asarray(face_cal.score(d.ravel()), np.float64)))
    return curves, _comparisons(sa, sb, gen, all_ids), cost


def evaluate_augmentation(args: argparse.Namespace) -> dict:
    """Dev: does an augmented reference help; test: the gain, with the cost per enrolment."""
    from biometrics.scores import threshold_for_fmr

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    faces = load_face_set(args.faces, args.workers, args.cache)
    dev_ids, test_ids = identities_of_split(faces, "dev"), identities_of_split(faces, "test")
    cal = fit_face_calibration(faces, dev_ids, "dev identities")
    out: dict = {"modality": "face", "augment": list(AUGMENTATIONS), "command": args.command_line,
                 "started": started, "calibration": f"face, refitted on {cal.n_impostor} dev impostor distances"}
    for split, ids, reps in (("dev", dev_ids, 0), ("test", test_ids, args.bootstrap)):
        curves, comps, cost = augmentation_scores(faces, ids, args.workers, cal)
        out[split] = summarise_curves(curves, comps, threshold_for_fmr(args.fmr), reps, TARGETS)
        out[f"{split}_ms_per_enrolment_median"] = cost
    key = m.rate_key(1e-3)
    dev = {s["pipeline"]: s["fnmr_at_fmr"][key]["fnmr"] for s in out["dev"]}
    best = min(dev, key=lambda v: (dev[v], v != "plain"))
    out["chosen"] = best
    out["why"] = f"dev FNMR at FMR 0.1%: {', '.join(f'{v} {100 * x:.2f}%' for v, x in dev.items())}"
    return out


def augmentation_report(result: dict) -> list[str]:
    """report.md of an augmentation run."""
    lines = [f"# Augmented enrolment templates ({result['started']})", "", f"Command: `{result['command']}`", ""]
    for split in ("dev", "test"):
        cost = result[f"{split}_ms_per_enrolment_median"]
        lines += [f"## {split}", "", *split_table(result[split], "reference", "median ms per enrolment",
                                                 lambda s, cost=cost: f"{cost[s['pipeline']]:.0f}"), ""]
    lines += [f"Chosen: {result['chosen']} ({result['why']}).", ""]
    return lines
