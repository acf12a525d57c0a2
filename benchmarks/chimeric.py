"""Chimeric subjects for fused face + fingerprint verification (``checkpoint-bench accuracy --modality fused``).

No public set holds the face and the fingerprints of the same people, so each LFW identity is given one FVC2002
finger (the usual chimeric protocol: face and finger are independent by construction, which is what the
fusion assumes of a real traveller's face and finger). There are 4,347 face images of 1,916 identities and
only 40 fingers (4 sets x 10): fingers are reused across identities (round robin after a seeded shuffle).

Split, so that nothing reported is tuned on: identities are split in two halves by a hash of their name
(``dev`` / ``test``); fingers by set: DB1_B (the set the fingerprint extractor was tuned and its shipped
calibration fitted on) is ``dev``, DB2_B, DB3_B and DB4_B ``test``. Calibrations and the fusion rule are
chosen on dev identities x DB1_B; the figures are reported on test identities x DB2_B..DB4_B.

Comparisons of a split:

- genuine: each pair of images of one identity (at most ``max_genuine`` per identity, drawn at random),
  each with a pair of different impressions of its finger (drawn at random among the 28);
- impostor: one comparison per pair of subjects whose fingers come from the same set (one sensor, as at a
  kiosk) and differ: a random image of each, a random impression of each finger.

Fingers reused across identities make impostor comparisons share finger comparisons: 2,880 distinct
different-finger comparisons per set stand behind every impostor's finger score, far fewer than the impostor
count. The intervals are therefore a two-way bootstrap that resamples identities and fingers together
(weights ``w(identity) w(finger)`` per side of a comparison), which widens them as that dependence demands;
where no error is seen, the rule of three (3 / n) gives the upper bound.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import metrics as m
from benchmarks.accuracy import pair_scores, pct

SPLIT_SEED = 14
DEV_FINGER_SETS = ("DB1_B",)
TEST_FINGER_SETS = ("DB2_B", "DB3_B", "DB4_B")
FINGER_VARIANTS = ("whole", "zfm")
IMPRESSIONS = 8
TARGETS = (0.01, 0.001, 0.0001)
NOT_COMPUTED = "not computed (no bootstrap replicates)"


# ---------------------------------------------------------------------------------------------------------
# Faces


@dataclass
class FaceSet:
    """Every image of a face set (``images/<identity>/<file>.jpg``) with its production template."""

    folder: Path
    images: list[str]  # relative to folder
    identity: np.ndarray  # str, per image
    templates: np.ndarray  # (n, 128) float64; zeros where the image failed to acquire
    ok: np.ndarray  # bool, per image
    quality: np.ndarray  # 0..100, per image (0 where failed)
    seconds: np.ndarray  # extraction time per image


def list_face_images(folder: Path) -> list[str]:
    """The images of a face set, ``images/<identity>/*.jpg`` relative to ``folder``, sorted."""
    images = sorted(str(p.relative_to(folder)) for p in (folder / "images").glob("*/*.jpg"))
    if not images:
        raise FileNotFoundError(f"no images/<identity>/*.jpg under {folder}")
    return images


def load_face_set(folder: Path, workers: int, cache: Path | None) -> FaceSet:
    """Templates of every image of ``folder`` by the production pipeline (``--cache``: reused when it matches)."""
    from benchmarks.accuracy import _load_cache, _save_cache, extract_all, extract_face_production, identity_of

    images = list_face_images(folder)
    cached = _load_cache(cache, images).get("production")
    if cached is None:
        cached = dict(zip(images, extract_all(extract_face_production, [folder / i for i in images], workers,
                                              "faces"), strict=True))
        if cache is not None:
            _save_cache(cache, images, {"production": cached})
    ex = [cached[i] for i in images]
    return FaceSet(
        folder=folder,
        images=images,
        identity=np.array([identity_of(i) for i in images]),
        templates=np.stack([np.asarray(e.template, np.float64) if e.template is not None else np.zeros(128)
                            for e in ex]),
        ok=np.array([e.template is not None for e in ex]),
        quality=np.array([float(e.detail.get("quality", 0.0)) if e.template is not None else 0.0 for e in ex]),
        seconds=np.array([e.seconds for e in ex]),
    )


def split_of(name: str, seed: int = SPLIT_SEED) -> str:
    """``"dev"`` or ``"test"``: a fixed half of the identities, by a hash of the name."""
    return "dev" if hashlib.sha256(f"{seed}:{name}".encode()).digest()[0] < 128 else "test"


def identities_of_split(faces: FaceSet, split: str, seed: int = SPLIT_SEED) -> list[str]:
    """The identities of ``faces`` in ``split``, sorted."""
    return sorted(i for i in set(faces.identity.tolist()) if split_of(i, seed) == split)


def face_distances(faces: FaceSet, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances between images ``a[i]`` and ``b[i]`` (nan where either failed to acquire)."""
    d = np.linalg.norm(faces.templates[a] - faces.templates[b], axis=1)
    return np.where(faces.ok[a] & faces.ok[b], d, np.nan)


def impostor_distances(faces: FaceSet, identities: Sequence[str]) -> np.ndarray:
    """Every different-identity distance among the acquired images of ``identities`` (for a calibration)."""
    keep = np.isin(faces.identity, list(identities)) & faces.ok
    t, ids = faces.templates[keep], faces.identity[keep]
    out = []
    for start in range(0, len(t), 512):
        block = t[start:start + 512]
        d = np.sqrt(np.maximum((block**2).sum(1)[:, None] + (t**2).sum(1)[None, :] - 2 * block @ t.T, 0.0))
        rows = np.arange(start, start + len(block))[:, None]
        upper = np.arange(len(t))[None, :] > rows
        out.append(d[upper & (ids[start:start + 512, None] != ids[None, :])])
    return np.concatenate(out)


def fit_face_calibration(faces: FaceSet, identities: Sequence[str], source: str):  # -> ScoreCalibration
    """The face calibration measured on every impostor comparison among ``identities``' images."""
    from biometrics.scores import ScoreCalibration

    return ScoreCalibration.fit(impostor_distances(faces, identities), higher_is_better=False, modality="face",
                                source=source)


# ---------------------------------------------------------------------------------------------------------
# Fingers


@dataclass
class FingerScores:
    """Raw similarities of every pair of impressions of one FVC set, for one way of taking the image."""

    set_name: str
    variant: str  # "whole" (the image as the set gives it) or "zfm" (the 256x288 sensor window at the centre)
    fingers: list[str]  # finger ids ("101" ...), sorted
    raw: np.ndarray  # (fingers, impressions, fingers, impressions); nan where an impression failed
    failed: list[str]


def finger_scores(folder: Path, variant: str, workers: int) -> FingerScores:
    """Extract every impression of an FVC set (``variant`` "whole" or "zfm") and compare every pair."""
    from benchmarks.fingerprint_eval import SENSOR_DPI, extract_set
    from biometrics.fingerprint import compare_fingerprints

    templates, failed = extract_set(folder, SENSOR_DPI.get(folder.name, 500), variant == "zfm", workers)
    fingers = sorted({name.split("_")[0] for name in templates})
    n = len(fingers)
    raw = np.full((n, IMPRESSIONS, n, IMPRESSIONS), np.nan)
    keys = [(f, i) for f in range(n) for i in range(IMPRESSIONS)]
    for (fa, ia), (fb, ib) in itertools.combinations(keys, 2):
        a = templates.get(f"{fingers[fa]}_{ia + 1}.png")
        b = templates.get(f"{fingers[fb]}_{ib + 1}.png")
        if a is not None and b is not None:
            raw[fa, ia, fb, ib] = raw[fb, ib, fa, ia] = float(compare_fingerprints(a, b))
    return FingerScores(folder.name, variant, fingers, raw, failed)


def load_finger_scores(root: Path, sets: Sequence[str], workers: int, cache: Path | None
                       ) -> dict[tuple[str, str], FingerScores]:
    """:func:`finger_scores` of every set and variant, kept in ``cache`` (an npz) between runs, each keyed on
    the code version of the finger scores (:func:`benchmarks.provenance.finger_scores_code_version`): scores
    made by other code, or by code that did not record its version, are made again (said on stderr)."""
    from benchmarks.provenance import cache_mismatch, finger_scores_code_version, warn

    out: dict[tuple[str, str], FingerScores] = {}
    stored = dict(np.load(cache, allow_pickle=False)) if cache is not None and cache.is_file() else {}
    version = finger_scores_code_version()
    for s in sets:
        for v in FINGER_VARIANTS:
            key = f"{s}_{v}"
            if f"{key}_raw" in stored and cache is not None:
                made_by = str(stored[f"{key}_version"]) if f"{key}_version" in stored else None
                refused = cache_mismatch(cache, made_by, version)
                if refused is None:
                    out[(s, v)] = FingerScores(s, v, stored[f"{key}_fingers"].tolist(), stored[f"{key}_raw"],
                                               [x for x in stored[f"{key}_failed"].tolist() if x])
                    continue
                warn(f"{key}: {refused}")
            start = time.perf_counter()
            out[(s, v)] = fs = finger_scores(root / s, v, workers)
            print(f"fingers {s} {v}: {time.perf_counter() - start:.0f} s, {len(fs.failed)} failed", flush=True)
            stored.update({f"{key}_raw": fs.raw, f"{key}_fingers": np.array(fs.fingers),
                           f"{key}_failed": np.array(fs.failed or [""]), f"{key}_version": np.array(version)})
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **stored)
    return out


def different_finger_raw(scores: FingerScores) -> np.ndarray:
    """The raw similarities of every pair of impressions of different fingers (each unordered pair once)."""
    n = len(scores.fingers)
    fa, fb = np.triu_indices(n, k=1)
    vals = scores.raw[fa, :, fb, :].reshape(-1)
    return vals[np.isfinite(vals)]


def best_of_k_tail(scores: FingerScores, calibration: Any, k: int, thresholds: Sequence[float] = (2.0, 3.0, 3.5, 4.0)
                   ) -> list[dict[str, float]]:
    """Does the union bound behind ``best_of_k`` hold? Over every distinct ordered pair of different fingers
    of one set and every k-impression enrolment of the first: the share of impostor comparisons at or over
    each false-match score, for one comparison and for the best of k (whose ratio the bound caps at k), beside
    the share the calibration states (10^-s)."""
    raw = scores.raw
    n = raw.shape[0]
    subsets = [list(c) for c in itertools.combinations(range(IMPRESSIONS), k)]
    single, best = [], []
    for fa, fb in itertools.permutations(range(n), 2):
        r = raw[fa, :, fb, :]  # enrolled impressions x probe impressions
        single.append(r.ravel())
        best += [np.fmax.reduce(r[sub, :], axis=0) for sub in subsets]
    one = calibration.score(np.nan_to_num(np.concatenate(single)))
    of_k = calibration.score(np.nan_to_num(np.concatenate(best)))
    return [{"s": t, "stated": 10.0 ** -t, "single": float(np.mean(one >= t)), "n_single": int(one.size),
             "count_single": int(np.sum(one >= t)), "k": k, "best_of_k": float(np.mean(of_k >= t)),
             "ratio": float(np.mean(of_k >= t) / np.mean(one >= t)) if np.any(one >= t) else float("nan")}
            for t in thresholds]


def fit_finger_calibration(scores: FingerScores, source: str):  # -> ScoreCalibration
    """A fingerprint calibration measured on the different-finger comparisons of one set."""
    from biometrics.scores import ScoreCalibration

    return ScoreCalibration.fit(different_finger_raw(scores), higher_is_better=True, modality="fingerprint",
                                source=source)


# ---------------------------------------------------------------------------------------------------------
# Chimeric comparisons


@dataclass
class Comparisons:
    """The comparisons of one split: which subjects, images, fingers and impressions meet in each."""

    genuine: np.ndarray  # bool
    subject_a: np.ndarray  # index into ``subjects``
    subject_b: np.ndarray
    image_a: np.ndarray  # index into the face set's images
    image_b: np.ndarray
    finger_a: np.ndarray  # index into ``fingers``
    finger_b: np.ndarray
    impression_a: np.ndarray  # 0..7
    impression_b: np.ndarray
    subjects: list[str]
    fingers: list[tuple[str, str]]  # (set, finger id)
    assignment: dict[str, tuple[str, str]]  # subject -> finger


def chimeric_comparisons(faces: FaceSet, subjects: Sequence[str], fingers: Sequence[tuple[str, str]],
                         seed: int = SPLIT_SEED, max_genuine: int = 10) -> Comparisons:
    """Pair each subject with a finger (round robin after a seeded shuffle) and list the comparisons."""
    rng = np.random.default_rng(seed)
    subjects = list(subjects)
    order = rng.permutation(len(subjects))
    finger_of = np.empty(len(subjects), np.int64)
    finger_of[order] = np.arange(len(subjects)) % len(fingers)
    images_of = {s: np.flatnonzero(faces.identity == s) for s in subjects}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("g", "sa", "sb", "ia", "ib", "fa", "fb", "pa", "pb")}

    def add(g: bool, sa, sb, ia, ib, fa, fb, pa, pb) -> None:
        for k, v in zip(("sa", "sb", "ia", "ib", "fa", "fb", "pa", "pb"), (sa, sb, ia, ib, fa, fb, pa, pb),
                        strict=True):
            cols[k].append(np.atleast_1d(np.asarray(v, np.int64)))
        cols["g"].append(np.full(len(np.atleast_1d(sa)), g))

    impression_pairs = np.array(list(itertools.combinations(range(IMPRESSIONS), 2)))
    for k, s in enumerate(subjects):
        imgs = images_of[s]
        if len(imgs) < 2:
            continue
        pairs = np.array(list(itertools.combinations(imgs, 2)))
        if len(pairs) > max_genuine:
            pairs = pairs[rng.choice(len(pairs), max_genuine, replace=False)]
        imp = impression_pairs[rng.integers(0, len(impression_pairs), len(pairs))]
        n = len(pairs)
        add(True, [k] * n, [k] * n, pairs[:, 0], pairs[:, 1], [finger_of[k]] * n, [finger_of[k]] * n,
            imp[:, 0], imp[:, 1])
    set_of = np.array([f[0] for f in fingers])[finger_of]
    a, b = np.triu_indices(len(subjects), k=1)
    keep = (set_of[a] == set_of[b]) & (finger_of[a] != finger_of[b])
    a, b = a[keep], b[keep]
    counts = np.array([len(images_of[s]) for s in subjects])
    starts = {s: images_of[s] for s in subjects}
    pick_a = rng.random(len(a))
    pick_b = rng.random(len(b))
    img_a = np.array([starts[subjects[i]][int(p * counts[i])] for i, p in zip(a, pick_a, strict=True)], np.int64)
    img_b = np.array([starts[subjects[i]][int(p * counts[i])] for i, p in zip(b, pick_b, strict=True)], np.int64)
    add(False, a, b, img_a, img_b, finger_of[a], finger_of[b], rng.integers(0, IMPRESSIONS, len(a)),
        rng.integers(0, IMPRESSIONS, len(a)))
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    return Comparisons(cat["g"].astype(bool), cat["sa"], cat["sb"], cat["ia"], cat["ib"], cat["fa"], cat["fb"],
                       cat["pa"], cat["pb"], subjects, list(fingers),
                       {s: tuple(fingers[finger_of[k]]) for k, s in enumerate(subjects)})


def finger_raw_of(comparisons: Comparisons, scores: dict[str, FingerScores]) -> np.ndarray:
    """Raw finger similarity of each comparison (``scores`` by set name, one variant); nan where failed."""
    out = np.full(len(comparisons.genuine), np.nan)
    sets = np.array([f[0] for f in comparisons.fingers])
    for set_name, fs in scores.items():
        index = {fid: i for i, fid in enumerate(fs.fingers)}
        local = np.array([index.get(f[1], -1) if f[0] == set_name else -1 for f in comparisons.fingers])
        sel = sets[comparisons.finger_a] == set_name
        fa, fb = local[comparisons.finger_a[sel]], local[comparisons.finger_b[sel]]
        out[sel] = fs.raw[fa, comparisons.impression_a[sel], fb, comparisons.impression_b[sel]]
    return out


def _draw_impressions(comparisons: Comparisons, first: np.ndarray, never: Sequence[np.ndarray], count: int,
                      seed: int) -> np.ndarray:
    """(n, count) impressions per comparison: ``first``, then others drawn at random, none of ``never`` (arrays
    of impressions) where both sides of the comparison are one finger."""
    n = len(first)
    rows = np.arange(n)
    keys = np.random.default_rng(seed).random((n, IMPRESSIONS))
    keys[rows, first] = -1.0
    same = comparisons.finger_a == comparisons.finger_b
    for impressions in never:
        keys[rows[same], impressions[same]] = np.inf
    return np.argsort(keys, axis=1, kind="stable")[:, :count]


def enrolled_impressions(comparisons: Comparisons, k: int, seed: int = SPLIT_SEED + 3) -> np.ndarray:
    """(n, k) impressions of each comparison's reference finger (side a) enrolled at the desk.

    The first is ``impression_a`` (so k = 1 is the one-impression protocol); the other k - 1 are drawn at
    random among the finger's impressions, never the probe's own impression when both sides are one finger.
    """
    if not 1 <= k < IMPRESSIONS:
        raise ValueError(f"enrolled impressions must be 1..{IMPRESSIONS - 1}, got {k}")
    return _draw_impressions(comparisons, comparisons.impression_a, [comparisons.impression_b], k, seed)


def probe_impressions(comparisons: Comparisons, enrolled: np.ndarray, placements: int,
                      seed: int = SPLIT_SEED + 4) -> np.ndarray:
    """(n, placements) impressions of each comparison's probe finger (side b) taken at the kiosk: the first is
    ``impression_b``, the others drawn at random among the finger's impressions, never an ``enrolled`` one when
    both sides are one finger."""
    if placements < 1 or enrolled.shape[1] + placements > IMPRESSIONS:
        raise ValueError(f"enrolled impressions and placements must be >= 1 and sum to at most {IMPRESSIONS}")
    return _draw_impressions(comparisons, comparisons.impression_b, list(enrolled.T), placements, seed)


def placement_finger_raw(comparisons: Comparisons, scores: dict[str, FingerScores], k: int, placements: int = 1
                         ) -> np.ndarray:
    """(n, placements): for each probe placement (side b, :func:`probe_impressions`), its best raw similarity
    against k enrolled impressions of side a's finger (:func:`enrolled_impressions`); nan where every
    comparison of the placement failed."""
    refs = enrolled_impressions(comparisons, k)
    probes = probe_impressions(comparisons, refs, placements)
    return np.column_stack([
        np.fmax.reduce(np.column_stack([
            finger_raw_of(replace(comparisons, impression_a=refs[:, j], impression_b=probes[:, q]), scores)
            for j in range(k)]), axis=1)
        for q in range(placements)])


def enrolled_finger_raw(comparisons: Comparisons, scores: dict[str, FingerScores], k: int, placements: int = 1
                        ) -> np.ndarray:
    """Best raw similarity of ``placements`` probe impressions against k enrolled impressions
    (:func:`placement_finger_raw`), as the service scores a finger enrolled and probed several times in one
    call; nan where every comparison failed."""
    return np.fmax.reduce(placement_finger_raw(comparisons, scores, k, placements), axis=1)


def mixed_comparisons(comps: Comparisons, kind: str, seed: int = SPLIT_SEED) -> Comparisons:
    """Attacks: ``"stolen finger"`` (each impostor comparison's faces with a genuine pair of impressions of the
    first subject's finger) or ``"look-alike"`` (each genuine comparison's faces with another finger of the same
    set). Every row is an attack that must not be accepted."""
    rng = np.random.default_rng(seed + 1)
    sel = ~comps.genuine if kind == "stolen finger" else comps.genuine
    fa, ia = comps.finger_a[sel], comps.impression_a[sel]
    if kind == "stolen finger":
        fb = fa
        ib = (ia + rng.integers(1, IMPRESSIONS, len(ia))) % IMPRESSIONS  # another impression of that finger
    else:
        sets = np.array([f[0] for f in comps.fingers])
        fb = np.array([rng.choice(np.flatnonzero((sets == sets[f]) & (np.arange(len(sets)) != f))) for f in fa])
        ib = rng.integers(0, IMPRESSIONS, len(ia))
    return Comparisons(np.zeros(int(sel.sum()), bool), comps.subject_a[sel], comps.subject_b[sel],
                       comps.image_a[sel], comps.image_b[sel], fa, fb, ia, ib, comps.subjects, comps.fingers,
                       comps.assignment)


# ---------------------------------------------------------------------------------------------------------
# Rates with weights, and the two-way bootstrap


@dataclass
class Curve:
    """One pipeline's scores over a split's comparisons (nan = failed to acquire: never matches)."""

    name: str
    scores: np.ndarray


def verification_scores(curve: Curve, genuine: np.ndarray) -> m.VerificationScores:
    """The project's :class:`benchmarks.metrics.VerificationScores` of a curve (FTA counted, not scored)."""
    return pair_scores(curve.scores, genuine)


def bootstrap_fnmr(curves: Sequence[Curve], comparisons: Comparisons, targets: Sequence[float] = TARGETS,
                   replicates: int = 500, seed: int = SPLIT_SEED) -> dict[str, dict[str, list[float]]]:
    """95% two-way bootstrap intervals (identities and fingers resampled) of FNMR at each target FMR."""
    rng = np.random.default_rng(seed)
    c = comparisons
    g = c.genuine
    prepared = [m.WeightedScores.of(curve.scores[g], curve.scores[~g]) for curve in curves]
    n_s, n_f = len(c.subjects), len(c.fingers)
    draws: dict[str, list[np.ndarray]] = {cv.name: [] for cv in curves}
    for _ in range(replicates):
        ws = m.identity_multiplicities(rng, n_s)
        wf = m.identity_multiplicities(rng, n_f)
        wg = ws[c.subject_a[g]] * wf[c.finger_a[g]]
        wi = ws[c.subject_a[~g]] * ws[c.subject_b[~g]] * wf[c.finger_a[~g]] * wf[c.finger_b[~g]]
        for curve, weighted in zip(curves, prepared, strict=True):
            draws[curve.name].append(weighted.figures(wg[weighted.genuine_order], wi[weighted.impostor_order],
                                                      targets)[1:])
    out = {}
    for name, rows in draws.items():
        arr = np.array(rows)
        out[name] = {m.rate_key(t): [float(np.nanpercentile(arr[:, i], 2.5)), float(np.nanpercentile(arr[:, i], 97.5))]
                     for i, t in enumerate(targets)}
    return out


def summarise_curves(curves: Sequence[Curve], comparisons: Comparisons, operating_threshold: float,
                     replicates: int, targets: Sequence[float] = TARGETS) -> list[dict]:
    """Per curve: counts, FTA, EER, FNMR at each target FMR with its bootstrap interval (rule of three where
    no error is seen), and FMR / FNMR at the service threshold."""
    intervals = bootstrap_fnmr(curves, comparisons, targets, replicates) if replicates else {}
    out = []
    for curve in curves:
        sc = verification_scores(curve, comparisons.genuine)
        eer = m.equal_error_rate(sc)
        entry: dict = {"pipeline": curve.name, "n_genuine": sc.n_genuine, "n_impostor": sc.n_impostor,
                       "genuine_fta": sc.genuine_fta, "impostor_fta": sc.impostor_fta, "eer": eer.eer,
                       "fnmr_at_fmr": {}}
        for t in targets:
            op = m.fnmr_at_fmr(sc, t)
            key = m.rate_key(t)
            ci = intervals.get(curve.name, {}).get(key)
            rule_of_three = op.false_non_matches == 0
            if rule_of_three:
                ci = [0.0, min(1.0, 3.0 / sc.n_genuine)]
            entry["fnmr_at_fmr"][key] = {
                "fnmr": op.fnmr, "errors": op.false_non_matches, "threshold": op.threshold,
                "false_matches": op.false_matches, "interval": ci,
                "interval_kind": "rule of three (no error seen)" if rule_of_three else
                "two-way bootstrap (identities x fingers), 95%" if ci else NOT_COMPUTED,
                "enough_impostors": sc.n_impostor >= m.rule_of_three(t) if t > 0 else False}
        op = m.operating_point(sc, operating_threshold)
        entry["at_service_threshold"] = {"threshold": operating_threshold, "fmr": op.fmr,
                                         "false_matches": op.false_matches, "fnmr": op.fnmr,
                                         "false_non_matches": op.false_non_matches}
        out.append(entry)
    return out


def write_assignment(path: Path, comparisons: Comparisons) -> None:
    """The chimeric pairing, subject -> finger, as CSV (for an auditor's recount)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["identity", "finger_set", "finger"])
        for s, (fset, fid) in sorted(comparisons.assignment.items()):
            w.writerow([s, fset, fid])


# ---------------------------------------------------------------------------------------------------------
# checkpoint-bench accuracy --modality fused

RULES = ("product", "max", "likelihood ratio")
RULE_TOLERANCE = 0.002  # dev FNMR within this of the best counts as a tie, settled for the product rule
VETO_FLOORS = (0.5, 1.0, 1.5, 2.0)
VETO_STOPS = 0.9  # a contradiction cap must stop at least this share of dev stolen-finger attacks


def fuse_acquired(columns: np.ndarray, fuse_both: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Each row of (face score, finger score) fused as the service fuses a subject's scores: the modalities
    acquired (nan: failed to acquire). Both: ``fuse_both`` of the row; one: that modality's score unchanged (the
    service drops a modality that failed, and one score is its own fused score); neither: nan (a failure to
    acquire, which never matches)."""
    cols = np.asarray(columns, dtype=np.float64)
    acquired = np.isfinite(cols)
    both = acquired.all(axis=1)
    out = np.full(len(cols), np.nan)
    if both.any():
        out[both] = fuse_both(cols[both])
    one = acquired.sum(axis=1) == 1
    if one.any():
        out[one] = np.maximum(0.0, np.nanmax(cols[one], axis=1))
    return out


def fused_scores(rule: str, columns: np.ndarray, lr: Any = None, floors: Sequence[float | None] = (),
                 attempts: int = 1) -> np.ndarray:
    """False-match scores of each row of (face score, finger score) fused by ``rule``, capped by a modality
    under its floor (:func:`biometrics.fingerprint.fusion.cap_contradictions`) when ``floors`` are given;
    ``attempts``: a call of a kiosk transaction of that many, its fused score less log10(attempts) (as the
    service states it). A modality that failed to acquire (nan) is left out of its row (:func:`fuse_acquired`)."""
    from biometrics.fingerprint.fusion import best_of_k, cap_contradictions, fisher_fused_scores, max_rule_scores

    def fuse_both(cols: np.ndarray) -> np.ndarray:
        if rule == "product":
            fused = fisher_fused_scores(cols)
        elif rule == "max":
            fused = max_rule_scores(cols)
        else:
            fused = lr.fused_scores(cols)
        return cap_contradictions(fused, cols, floors) if floors else fused

    fused = fuse_acquired(columns, fuse_both)
    return best_of_k(fused, attempts) if attempts > 1 else fused


def choose_rule(dev: dict[str, float]) -> tuple[str, str]:
    """The rule with the lowest dev FNMR at FMR 0.01%; the product rule wins ties (within RULE_TOLERANCE)."""
    best = min(dev, key=lambda r: dev[r])
    if dev["product"] <= dev[best] + RULE_TOLERANCE:
        return "product", (f"lowest dev FNMR at FMR 0.01% within {100 * RULE_TOLERANCE:g} points of the best "
                           f"({best}: {100 * dev[best]:.2f}%); it needs no fitted density and its threshold keeps "
                           "its FMR in closed form under independence")
    return best, f"lowest dev FNMR at FMR 0.01% ({100 * dev[best]:.2f}% against product {100 * dev['product']:.2f}%)"


def choose_floors(candidates: dict[tuple, dict[str, float]], base_fnmr: float) -> tuple[tuple, str]:
    """The contradiction floors with the lowest dev FNMR at FMR 0.01% among those that stop at least
    VETO_STOPS of dev stolen-finger attacks (matching finger, another face) at the service threshold."""
    ok = {k: v for k, v in candidates.items() if v["stolen_finger_accepted"] <= 1.0 - VETO_STOPS}
    if not ok:
        return (None, None), f"no floor stopped {100 * VETO_STOPS:g}% of dev stolen-finger attacks"
    best = min(ok, key=lambda k: (ok[k]["fnmr"], ok[k]["stolen_finger_accepted"]))
    v = ok[best]
    return best, (f"face floor {best[0]}, finger floor {best[1]}: the cheapest to stop at least "
                  f"{100 * VETO_STOPS:g}% of dev stolen-finger attacks at s >= 3 (accepted "
                  f"{100 * v['stolen_finger_accepted']:.2f}%); dev FNMR at FMR 0.01% {100 * v['fnmr']:.2f}% "
                  f"against {100 * base_fnmr:.2f}% without")


@dataclass(frozen=True)
class Protocol:
    """How a finger is taken: impressions enrolled at the desk, placements at the kiosk.

    ``retry``: the placements are attempts of one kiosk transaction (``VerifyRequest.attempts``): the first
    placement is sent alone, the next only when the call before was not accepted, each call with the same face
    sample; every call's fused score is stated as one of ``placements`` (less log10(placements)), so the
    transaction's FMR holds (union bound). Every score of such a protocol is a transaction's: its best call, so
    a finger's is its best placement's, and a modality alone (a transaction of one modality) is less
    log10(placements) too. Without it every placement is taken and sent in one call.
    """

    enrolled: int = 1
    placements: int = 1
    retry: bool = False

    @property
    def tag(self) -> str:
        """Suffix of the curve names ("" for the one-impression protocol)."""
        out = "" if self.enrolled == 1 else f", {self.enrolled} impressions enrolled"
        if self.retry:
            return out + f", up to {self.placements} attempts"
        return out + ("" if self.placements == 1 else f", {self.placements} placements")

    @property
    def attempts(self) -> int:
        """The calls of a kiosk transaction (1 unless ``retry``)."""
        return self.placements if self.retry else 1

    def transaction(self, scores: np.ndarray) -> np.ndarray:
        """One modality's scores (a call's best) as a transaction of :attr:`attempts` states them (nan stays)."""
        from biometrics.fingerprint.fusion import best_of_k

        return best_of_k(scores, self.attempts) if self.retry else scores

    def finger_scores(self, calibration: Any, raw: np.ndarray) -> np.ndarray:
        """False-match scores of best raw similarities over the comparisons of one call (enrolled x placements,
        or enrolled x 1 for a call of a ``retry`` transaction): less log10(k)
        (:func:`biometrics.fingerprint.fusion.best_of_k`), as the service scores; nan stays nan."""
        from biometrics.fingerprint.fusion import best_of_k

        k = self.enrolled * (1 if self.retry else self.placements)
        return np.where(np.isnan(raw), np.nan, best_of_k(calibration.score(np.nan_to_num(raw)), k))


def _modality_scores(faces: FaceSet, comps: Comparisons, fingers: dict, face_cal, finger_cals: dict,
                     protocol: Protocol = Protocol()) -> dict[str, np.ndarray]:
    """False-match scores per comparison: face, and each finger variant taken as ``protocol`` says."""
    d = face_distances(faces, comps.image_a, comps.image_b)
    out = {"face": np.where(np.isnan(d), np.nan, face_cal.score(np.nan_to_num(d)))}
    for v in FINGER_VARIANTS:
        raw = enrolled_finger_raw(comps, {s: fs for (s, var), fs in fingers.items() if var == v},
                                  protocol.enrolled, protocol.placements)
        out[v] = protocol.finger_scores(finger_cals[v], raw)
    return out


def _fused_columns(s: dict[str, np.ndarray], finger: str) -> np.ndarray:
    """(face, finger) per comparison; nan where a modality failed to acquire (:func:`fused_scores` leaves it
    out, as the service does; a score of 0 would weigh against the claim in the likelihood ratio)."""
    return np.column_stack([s["face"], s[finger]])


def acquired_genuine(face: np.ndarray, finger: np.ndarray) -> list[np.ndarray]:
    """The genuine (face, finger) scores a likelihood-ratio fusion is fitted on: the comparisons where both
    modalities were acquired, the only ones it fuses (a failure scored 0 would put genuine mass at s = 0)."""
    both = np.isfinite(face) & np.isfinite(finger)
    return [face[both], finger[both]]


@dataclass
class FusionChoice:
    """The fusion rule and contradiction floors chosen on dev data for one enrolment protocol, with why."""

    rule: str
    why: str
    lr: Any  # LikelihoodRatioFusion fitted on every dev genuine comparison
    floors: tuple[float | None, float | None]  # (face, finger)
    floors_why: str
    dev_rules: dict[str, dict[str, float]]
    veto: dict[tuple, dict[str, float]]
    dev_checks: dict[str, float]
    attempts: int = 1  # scored as one call of a kiosk transaction of this many (fused score less log10)

    @property
    def label(self) -> str:
        """The rule and its floors, as the report names the fused curve."""
        return self.rule + "".join(f", {name} floor {f:g}" for name, f in zip(("face", "finger"), self.floors,
                                                                               strict=True) if f is not None)

    @property
    def applied_floors(self) -> tuple:
        """The floors to apply (empty when none was chosen)."""
        return self.floors if any(f is not None for f in self.floors) else ()

    def fused(self, columns: np.ndarray) -> np.ndarray:
        """The chosen fusion of (face, finger) columns."""
        return fused_scores(self.rule, columns, self.lr, self.applied_floors, self.attempts)


def choose_fusion(dev: Comparisons, s_dev: dict[str, np.ndarray], stolen_dev: np.ndarray, threshold: float
                  ) -> FusionChoice:
    """Choose the rule (lowest dev FNMR at FMR 0.01%, :func:`choose_rule`) and the contradiction floors
    (:func:`choose_floors`) on dev scores of face + ZFM finger; ``stolen_dev``: (face, finger) columns of dev
    stolen-finger attacks."""
    from biometrics.fingerprint.fusion import LikelihoodRatioFusion, cap_contradictions

    g = dev.genuine
    lr = LikelihoodRatioFusion.fit(acquired_genuine(s_dev["face"][g], s_dev["zfm"][g]))
    cols = _fused_columns(s_dev, "zfm")
    # The likelihood ratio is fitted on genuine scores: on dev it is cross-fitted (two folds of identities, each
    # scored by the densities of the other), else it would be judged on the scores it was fitted to.
    fold = np.array([split_of(s, SPLIT_SEED + 1) == "dev" for s in dev.subjects])[dev.subject_a]
    lr_dev = np.empty(len(g))
    for k in (True, False):
        other = LikelihoodRatioFusion.fit(acquired_genuine(s_dev["face"][g & (fold != k)],
                                                           s_dev["zfm"][g & (fold != k)]))
        lr_dev[fold == k] = fused_scores("likelihood ratio", cols[fold == k], other)
    dev_rules = {}
    for rule in RULES:
        stat = lr_dev if rule == "likelihood ratio" else fused_scores(rule, cols)
        sc = verification_scores(Curve(rule, stat), g)
        dev_rules[rule] = {m.rate_key(t): m.fnmr_at_fmr(sc, t).fnmr for t in TARGETS}
    chosen, why = choose_rule({r: v[m.rate_key(1e-4)] for r, v in dev_rules.items()})
    veto: dict[tuple, dict[str, float]] = {}
    base = lr_dev if chosen == "likelihood ratio" else fused_scores(chosen, cols)
    base_stolen = fused_scores(chosen, stolen_dev, lr)
    for face_floor in VETO_FLOORS:
        for finger_floor in (None, *VETO_FLOORS):
            fl = (face_floor, finger_floor)
            sc = verification_scores(Curve("veto", cap_contradictions(base, cols, fl)), g)
            veto[fl] = {"fnmr": m.fnmr_at_fmr(sc, 1e-4).fnmr,
                        "stolen_finger_accepted": float(
                            (cap_contradictions(base_stolen, stolen_dev, fl) >= threshold).mean())}
    floors, floors_why = choose_floors(veto, dev_rules[chosen][m.rate_key(1e-4)])
    checks = calibration_checks(s_dev, g, stolen_dev, chosen, base, base_stolen, threshold)
    return FusionChoice(chosen, why, lr, floors, floors_why, dev_rules, veto, checks)


def calibration_checks(s_dev: dict[str, np.ndarray], genuine: np.ndarray, stolen_dev: np.ndarray, rule: str,
                       fused_dev: np.ndarray, fused_stolen: np.ndarray, threshold: float,
                       protocol: Protocol = Protocol()) -> dict[str, float]:
    """Share of dev impostors at or over s for each modality, the product rule and ``rule`` (its uncapped dev
    scores ``fused_dev``), and of dev stolen-finger attacks accepted uncapped: does each score hold its FMR?
    Every score as ``protocol``'s transactions state it."""
    g, t = genuine, protocol.transaction
    product = fused_scores("product", _fused_columns(s_dev, "zfm"), attempts=protocol.attempts)
    checks = {f"fmr_at_s_ge_{k}": float((product[~g] >= k).mean()) for k in (2, 3, 4)}
    checks.update({f"face_fmr_at_s_ge_{k}": float((np.nan_to_num(t(s_dev["face"][~g])) >= k).mean())
                   for k in (2, 3, 4)})
    checks.update({f"finger_zfm_fmr_at_s_ge_{k}": float((np.nan_to_num(t(s_dev["zfm"][~g])) >= k).mean())
                   for k in (2, 3)})
    checks["stolen_finger_accepted_product_uncapped"] = float(
        (fused_scores("product", stolen_dev, attempts=protocol.attempts) >= threshold).mean())
    checks[f"stolen_finger_accepted_{rule}_uncapped"] = float((fused_stolen >= threshold).mean())
    for k in (2, 3, 4):
        checks[f"{rule}_fmr_at_s_ge_{k}"] = float((fused_dev[~g] >= k).mean())
    return checks


@dataclass
class _Run:
    """What every enrolment protocol of one run shares."""

    args: argparse.Namespace
    faces: FaceSet
    fingers: dict
    face_cal: Any
    finger_cals: dict
    dev: Comparisons
    test: Comparisons
    test_ids: list[str]
    threshold: float
    two_frames: tuple[list[Curve], Comparisons]  # benchmarks.frames.frame_scores of the test identities


def _write_service_fusion(run: _Run, s_dev: dict[str, np.ndarray], enrolled: int) -> None:
    """The service's fusion.json: dev genuine scores as the service states them (its shipped calibrations)."""
    from biometrics.fingerprint.fusion import LikelihoodRatioFusion
    from biometrics.scores import ScoreCalibration

    g = run.dev.genuine
    d = face_distances(run.faces, run.dev.image_a[g], run.dev.image_b[g])
    face = np.where(np.isnan(d), np.nan, ScoreCalibration.for_modality("face").score(np.nan_to_num(d)))
    impressions = "one impression" if enrolled == 1 else f"{enrolled} impressions enrolled (best less log10(k))"
    genuine = acquired_genuine(face, s_dev["zfm"][g])
    LikelihoodRatioFusion.fit(
        genuine,
        source=f"genuine comparisons of dev chimeric subjects where both modalities were acquired: "
               f"{len(genuine[0])} of {int(g.sum())} face pairs of "
               f"{len(set(run.dev.subjects))} LFW identities ({run.args.faces}, split seed {SPLIT_SEED}) scored by "
               f"the shipped face calibration; ZFM-window DB1_B probes against {impressions}, scored by the shipped "
               f"fingerprint calibration; {time.strftime('%Y-%m-%d', time.gmtime())}").save(run.args.write_fusion)


def _by_finger_set(test: Comparisons, curves: Sequence[Curve], threshold: float) -> dict[str, list[dict]]:
    """:func:`summarise_curves` of ``curves`` on each test finger set alone (no intervals)."""
    out = {}
    set_of = np.array([f[0] for f in test.fingers])[test.finger_a]
    for s in TEST_FINGER_SETS:
        sel = set_of == s
        sub = Comparisons(test.genuine[sel], test.subject_a[sel], test.subject_b[sel], test.image_a[sel],
                          test.image_b[sel], test.finger_a[sel], test.finger_b[sel], test.impression_a[sel],
                          test.impression_b[sel], test.subjects, test.fingers, test.assignment)
        out[s] = summarise_curves([Curve(c.name, c.scores[sel]) for c in curves], sub, threshold, 0)
    return out


def _attacks(run: _Run, choice: FusionChoice, s_test: dict[str, np.ndarray], protocol: Protocol) -> dict:
    """Stolen-finger and look-alike attacks on test, accepted by each rule (at its own FMR 0.1% threshold on
    the test impostors, so the rules compare fairly) and at the service threshold."""
    judged = {choice.label: (choice.rule, choice.applied_floors), "product, no cap": ("product", ()),
              "max, no cap": ("max", ()), "likelihood ratio, no cap": ("likelihood ratio", ())}
    test_cols = _fused_columns(s_test, "zfm")
    attacks = {}
    for kind in ("stolen finger", "look-alike"):
        cols_t = _fused_columns(_modality_scores(run.faces, mixed_comparisons(run.test, kind), run.fingers,
                                                 run.face_cal, run.finger_cals, protocol), "zfm")
        at = {}
        for name, (rule, floors_of) in judged.items():
            fused = fused_scores(rule, test_cols, choice.lr, floors_of, choice.attempts)
            t_rule = m.threshold_at_fmr(verification_scores(Curve(name, fused), run.test.genuine), 1e-3)
            at[name] = float((fused_scores(rule, cols_t, choice.lr, floors_of, choice.attempts) >= t_rule).mean())
        attacks[kind] = {"n": len(cols_t), "accepted_at_fmr_0.1%": at, "accepted_at_service_threshold_product": {
            choice.label: float((choice.fused(cols_t) >= run.threshold).mean()),
            f"{choice.rule}, no cap": float((fused_scores(choice.rule, cols_t, choice.lr, (), choice.attempts)
                                             >= run.threshold).mean()),
            "product, no cap": float((fused_scores("product", cols_t, attempts=choice.attempts)
                                      >= run.threshold).mean())}}
    return attacks


def attempt_scores(choice: FusionChoice, face: np.ndarray, finger: np.ndarray) -> np.ndarray:
    """(n, attempts) fused score of each call of a kiosk transaction: each attempt's finger score (n, attempts)
    with the face score of the call, the same in every call (n,) or its own (n, attempts), fused as the service
    does."""
    faces = face if face.ndim == 2 else np.repeat(face[:, None], finger.shape[1], axis=1)
    return np.column_stack([choice.fused(_fused_columns({"face": faces[:, q], "zfm": finger[:, q]}, "zfm"))
                            for q in range(finger.shape[1])])


def _zfm_per_placement(run: _Run, comps: Comparisons, protocol: Protocol) -> np.ndarray:
    """(n, placements) ZFM finger score of each placement of ``comps`` against its enrolled impressions, as one
    call of ``protocol`` states it."""
    raw = placement_finger_raw(comps, {s: fs for (s, v), fs in run.fingers.items() if v == "zfm"},
                               protocol.enrolled, protocol.placements)
    return protocol.finger_scores(run.finger_cals["zfm"], raw)


def transaction_figures(per_attempt: np.ndarray, genuine: np.ndarray, threshold: float) -> dict:
    """A transaction of up to ``per_attempt.shape[1]`` calls at ``threshold``: the next call is made only when
    the one before was not accepted. Genuine and impostor transactions accepted, and the share of each asked
    for another placement (first call not accepted)."""
    accepted_at = np.where(per_attempt >= threshold, np.arange(per_attempt.shape[1]), per_attempt.shape[1])
    first = accepted_at.min(axis=1)  # index of the accepting call; shape[1]: none accepted
    calls = np.minimum(first + 1, per_attempt.shape[1])
    out = {"threshold": float(threshold)}
    for name, sel in (("genuine", genuine), ("impostor", ~genuine)):
        out[name] = {"n": int(sel.sum()), "accepted": float((first[sel] < per_attempt.shape[1]).mean()),
                     "asked_again": float((calls[sel] > 1).mean()), "mean_calls": float(calls[sel].mean())}
    return out


def _retry_figures(run: _Run, choice: FusionChoice, protocol: Protocol, s_test: dict[str, np.ndarray],
                   fused_test: np.ndarray) -> dict:
    """Each call of a ``protocol.retry`` transaction scored as the service scores it (its own placement only,
    corrected for the transaction's attempts), the transaction decided call by call: at the service threshold
    and at the threshold of FMR 0.01% of the transactions (``fused_test``: one score per transaction)."""
    calls = attempt_scores(choice, s_test["face"], _zfm_per_placement(run, run.test, protocol))
    scores = verification_scores(Curve("transaction", fused_test), run.test.genuine)
    out = {
        "transaction_score_is_the_best_call": bool(np.allclose(calls.max(axis=1), fused_test)),
        "at_service_threshold": transaction_figures(calls, run.test.genuine, run.threshold),
        "at_fmr_0.01%": transaction_figures(calls, run.test.genuine, m.threshold_at_fmr(scores, 1e-4)),
    }
    if protocol.placements == 2:
        out["new_face_frame_each_call"] = _retry_new_frames(run, choice, protocol)
    return out


def _retry_new_frames(run: _Run, choice: FusionChoice, protocol: Protocol) -> dict:
    """Two attempts where the second call captures the face anew: test identities with >= 3 images, the first
    call with one probe photograph and the first placement, the second with another photograph and the second
    placement (each call's fused score less log10(2), as the service states it); against the same photograph
    in both calls, on the same comparisons."""
    sub, by_name = _two_frames_subset(run)
    finger = _zfm_per_placement(run, sub, protocol)
    same = attempt_scores(choice, by_name["single"], finger)
    new = attempt_scores(choice, np.column_stack([by_name["single"], by_name["second"]]), finger)
    curves = [Curve("same face photograph in both calls", same.max(axis=1)),
              Curve("a new face photograph in the second call", new.max(axis=1))]
    figures = summarise_curves(curves, sub, run.threshold, run.args.bootstrap)
    for entry, calls in zip(figures, (same, new), strict=True):
        entry["at_service_threshold_calls"] = transaction_figures(calls, sub.genuine, run.threshold)
    return {"n_identities": len(set(sub.subject_a[sub.genuine].tolist())), "curves": figures}


def service_floors() -> tuple[float | None, float | None]:
    """The service's contradiction floors (face, finger): :data:`biometrics.fingerprint.fusion.CONTRADICTION_FLOORS`."""
    from biometrics.fingerprint.fusion import CONTRADICTION_FLOORS

    return CONTRADICTION_FLOORS["face"], CONTRADICTION_FLOORS["fingerprint"]


def service_rule(choice: FusionChoice) -> FusionChoice | None:
    """The rule the service fuses with (the likelihood ratio, capped by its floors), on the densities ``choice``
    fitted on dev, where the dev choice is another rule or other floors (its tie rule can settle for the
    product); None where the dev choice is the service's rule."""
    if choice.rule == "likelihood ratio" and choice.floors == service_floors():
        return None
    return replace(choice, rule="likelihood ratio", floors=service_floors())


def _configuration(run: _Run, protocol: Protocol, choice: FusionChoice | None = None
                   ) -> tuple[dict, list[Curve], FusionChoice]:
    """Dev choice (unless ``choice``, the fusion the service ships, is given) and test figures of fingers
    taken as ``protocol`` says."""
    s_dev = _modality_scores(run.faces, run.dev, run.fingers, run.face_cal, run.finger_cals, protocol)
    stolen_dev = _fused_columns(_modality_scores(run.faces, mixed_comparisons(run.dev, "stolen finger"),
                                                 run.fingers, run.face_cal, run.finger_cals, protocol), "zfm")
    chosen_here = choice is None
    if choice is None:
        choice = choose_fusion(run.dev, s_dev, stolen_dev, run.threshold)
        if getattr(run.args, "write_fusion", None) and protocol == Protocol(run.args.enrol_impressions):
            _write_service_fusion(run, s_dev, protocol.enrolled)
    choice = replace(choice, attempts=protocol.attempts)  # a call of a transaction: fused less log10(attempts)
    if chosen_here and not protocol.retry:
        checks = choice.dev_checks
    else:  # the given fusion, checked on this protocol's dev scores
        checks = calibration_checks(s_dev, run.dev.genuine, stolen_dev, choice.rule,
                                    fused_scores(choice.rule, _fused_columns(s_dev, "zfm"), choice.lr, (),
                                                 choice.attempts),
                                    fused_scores(choice.rule, stolen_dev, choice.lr, (), choice.attempts),
                                    run.threshold, protocol)
    s_test = _modality_scores(run.faces, run.test, run.fingers, run.face_cal, run.finger_cals, protocol)
    tag, t = protocol.tag, protocol.transaction
    curves = [
        Curve("face alone" + (tag if protocol.retry else ""), t(s_test["face"])),
        Curve(f"finger alone, whole image{tag}", t(s_test["whole"])),
        Curve(f"finger alone, ZFM window{tag}", t(s_test["zfm"])),
        Curve(f"fused, ZFM finger{tag} ({choice.label})", choice.fused(_fused_columns(s_test, "zfm"))),
        Curve(f"fused, whole finger{tag} ({choice.label})", choice.fused(_fused_columns(s_test, "whole"))),
    ]
    others = [Curve(f"fused, ZFM finger{tag} ({r}, no floor)",
                    fused_scores(r, _fused_columns(s_test, "zfm"), choice.lr, (), choice.attempts)) for r in RULES]
    service = service_rule(choice)
    service_rows = [] if service is None else [
        Curve(f"fused, ZFM finger{tag} ({service.label}: the service's rule)",
              service.fused(_fused_columns(s_test, "zfm")))]
    sections = summarise_curves(curves, run.test, run.threshold, run.args.bootstrap)
    fused_entry = sections[3]["fnmr_at_fmr"][m.rate_key(1e-4)]
    config = {
        "enrolled_impressions": protocol.enrolled,
        "placements": protocol.placements,
        "fusion_chosen_for_this_protocol": chosen_here,
        "dev": {"n_genuine": int(run.dev.genuine.sum()), "n_impostor": int((~run.dev.genuine).sum()),
                "fnmr_at_fmr_by_rule": choice.dev_rules, "calibration_checks": checks,
                "chosen_rule": choice.rule, "why": choice.why,
                "contradiction_floors": {"face": choice.floors[0], "finger": choice.floors[1],
                                         "why": choice.floors_why,
                                         "candidates": [{"face": k[0], "finger": k[1], **v}
                                                        for k, v in choice.veto.items()]}},
        "test_attacks": _attacks(run, choice, s_test, protocol),
        "test": sections,
        "test_service_rule": summarise_curves(service_rows, run.test, run.threshold, run.args.bootstrap)
        if service_rows else [],
        "test_other_rules": summarise_curves(others, run.test, run.threshold, 0),
        "test_by_finger_set": _by_finger_set(run.test, [curves[0], curves[2], curves[3]], run.threshold),
        "test_two_face_frames": _two_frames_fused(run, choice, protocol),
        "retry": protocol.retry,
        "target": {"fnmr_at_fmr_0.0001_at_most": 0.01, "fused_fnmr": fused_entry["fnmr"],
                   "fused_interval": fused_entry["interval"], "met": fused_entry["fnmr"] <= 0.01},
    }
    if protocol.retry:
        config["test_transactions"] = _retry_figures(run, choice, protocol, s_test, curves[3].scores)
        if service is not None:
            config["test_transactions_service_rule"] = _retry_figures(run, service, protocol, s_test,
                                                                      service_rows[0].scores)
    return config, curves, choice


def shipped_configuration(run: _Run, protocol: Protocol, fusion: Any) -> list[Curve]:
    """The configuration the service runs, on ``protocol``'s test comparisons, to report beside the benchmark's
    own: faces scored by the shipped face calibration (``face.json``, fitted on all of lfw-dev, so on these test
    identities' impostors too: in-sample), the ZFM finger by the shipped fingerprint calibration, fused by
    ``fusion`` (the service's ``fusion.json``; None: the product rule, as the service falls back to) and capped
    by the service's floors (:func:`service_floors`). The benchmark's own
    rows score faces with a calibration refitted on the dev identities and fuse with densities fitted on those
    scores."""
    from biometrics.scores import ScoreCalibration

    cals = {**run.finger_cals, "zfm": ScoreCalibration.for_modality("fingerprint")}
    s = _modality_scores(run.faces, run.test, run.fingers, ScoreCalibration.for_modality("face"), cals, protocol)
    rule = "product" if fusion is None else "likelihood ratio"
    return [Curve("face alone" + (protocol.tag if protocol.retry else "") + " (shipped face.json)",
                  protocol.transaction(s["face"])),
            Curve(f"fused, ZFM finger{protocol.tag} (shipped face.json, fusion.json and floor)",
                  fused_scores(rule, _fused_columns(s, "zfm"), fusion, service_floors(), protocol.attempts))]


def evaluate_fused(args: argparse.Namespace) -> dict:
    """Face alone, finger alone (whole image, ZFM window) and fused on chimeric subjects, with the finger
    enrolled from one impression and from ``args.enrol_impressions``, and the latter probed with
    ``args.placements`` placements at the kiosk (scored with the fusion chosen for one placement, which the
    service ships); see the module doc."""
    from benchmarks import plots
    from biometrics.scores import ScoreCalibration, threshold_for_fmr

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    faces = load_face_set(args.faces, args.workers, args.cache)
    fingers = load_finger_scores(args.fingers, DEV_FINGER_SETS + TEST_FINGER_SETS, args.workers, args.finger_cache)
    dev_ids, test_ids = identities_of_split(faces, "dev"), identities_of_split(faces, "test")
    face_cal = fit_face_calibration(faces, dev_ids, f"{args.faces}: dev identities (split seed {SPLIT_SEED})")
    finger_cals = {
        "zfm": ScoreCalibration.load(args.calibration) if args.calibration
        else ScoreCalibration.for_modality("fingerprint"),
        "whole": fit_finger_calibration(fingers[(DEV_FINGER_SETS[0], "whole")], "DB1_B whole images"),
    }

    def finger_list(sets: Sequence[str]) -> list[tuple[str, str]]:
        return [(s, f) for s in sets for f in fingers[(s, "whole")].fingers]

    dev = chimeric_comparisons(faces, dev_ids, finger_list(DEV_FINGER_SETS), max_genuine=args.max_genuine)
    test = chimeric_comparisons(faces, test_ids, finger_list(TEST_FINGER_SETS), max_genuine=args.max_genuine)
    from benchmarks.frames import frame_scores

    two_frames = frame_scores(faces, test_ids, 2, max(1, args.max_genuine // 2), face_cal,
                              second=True)  # once: faces only
    run = _Run(args, faces, fingers, face_cal, finger_cals, dev, test, test_ids, threshold_for_fmr(args.fmr),
               two_frames)
    configurations, det_curves = [], []
    config, curves, _ = _configuration(run, Protocol())
    configurations.append(config)
    det_curves += curves
    shipped = None
    if args.enrol_impressions > 1:
        config, curves, shipped = _configuration(run, Protocol(args.enrol_impressions))
        configurations.append(config)
        det_curves += [curves[2], curves[3]]
    if args.placements > 1:
        config, curves, _ = _configuration(run, Protocol(args.enrol_impressions, args.placements), shipped)
        configurations.append(config)
        det_curves += [curves[2], curves[3]]
        config, curves, _ = _configuration(run, Protocol(args.enrol_impressions, args.placements, retry=True),
                                           shipped)
        configurations.append(config)
        det_curves += [curves[3]]
    shipped_fusion = _shipped_beside(run, configurations)
    result = {
        "modality": "fused",
        "command": args.command_line,
        "started": started,
        "faces": str(args.faces),
        "fingers": str(args.fingers),
        "split": {"seed": SPLIT_SEED, "dev_identities": len(dev_ids), "test_identities": len(test_ids),
                  "dev_finger_sets": list(DEV_FINGER_SETS), "test_finger_sets": list(TEST_FINGER_SETS),
                  "dev_fingers": len(dev.fingers), "test_fingers": len(test.fingers),
                  "max_genuine_per_identity": args.max_genuine},
        "calibrations": {
            "face": f"refitted on {face_cal.n_impostor} impostor distances among dev identities' images",
            "finger_zfm": f"{finger_cals['zfm'].source} ({finger_cals['zfm'].n_impostor} comparisons)",
            "finger_whole": f"fitted on {finger_cals['whole'].n_impostor} different-finger comparisons of whole "
                            "DB1_B images",
        },
        "finger_failures": {f"{s}_{v}": fs.failed for (s, v), fs in fingers.items()},
        "dev_union_bound": best_of_k_tail(fingers[(DEV_FINGER_SETS[0], "zfm")], finger_cals["zfm"],
                                          args.enrol_impressions),
        "configurations": configurations,
        "shipped_configuration": {"face": "face.json", "fusion": shipped_fusion},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    det = {c.name: verification_scores(c, test.genuine) for c in det_curves}
    plots.det_plot({k: _thin_det(m.det_curve(v)) for k, v in det.items()}, args.out / "det.png",
                   f"LFW x FVC2002 DB2-4, chimeric ({len(test_ids)} ids, {len(test.fingers)} fingers)",
                   fnmr_targets(det_curves, test.genuine), legend_loc="lower left")
    write_assignment(args.out / "assignment.csv", test)
    return result


def _shipped_beside(run: _Run, configurations: list[dict]) -> str:
    """Each configuration's ``test_shipped`` rows (:func:`shipped_configuration`), with the service's fusion.json
    as it is now (after this run's ``--write-fusion``, if it wrote it); returns what was read."""
    from biometrics.fingerprint.fusion import SHIPPED_FUSION, LikelihoodRatioFusion

    fusion = LikelihoodRatioFusion.load(SHIPPED_FUSION) if SHIPPED_FUSION.exists() else None
    for config in configurations:
        protocol = Protocol(config["enrolled_impressions"], config["placements"], config["retry"])
        config["test_shipped"] = summarise_curves(shipped_configuration(run, protocol, fusion), run.test,
                                                  run.threshold, run.args.bootstrap)
    if fusion is None:
        return "none shipped: the product rule"
    return f"{SHIPPED_FUSION.name} sha256 {hashlib.sha256(SHIPPED_FUSION.read_bytes()).hexdigest()[:10]}"


def _two_frames_subset(run: _Run) -> tuple[Comparisons, dict[str, np.ndarray]]:
    """The comparisons of ``run.two_frames`` (test identities with >= 3 images: one reference, two probe
    frames) that have a finger comparison of one sensor, each given its identity's finger and a pair of
    impressions, with the face scores of each frame rule on those comparisons."""
    test = run.test
    curves, comps = run.two_frames
    by_name = {c.name: c.scores for c in curves}
    index = {f: i for i, f in enumerate(test.fingers)}
    fa = np.array([index[test.assignment[comps.subjects[s]]] for s in comps.subject_a])
    fb = np.array([index[test.assignment[comps.subjects[s]]] for s in comps.subject_b])
    sets = np.array([f[0] for f in test.fingers])
    keep = comps.genuine | ((sets[fa] == sets[fb]) & (fa != fb))
    rng = np.random.default_rng(SPLIT_SEED + 2)
    n = int(keep.sum())
    ia = rng.integers(0, IMPRESSIONS, n)
    ib = np.where(comps.genuine[keep], (ia + rng.integers(1, IMPRESSIONS, n)) % IMPRESSIONS,
                  rng.integers(0, IMPRESSIONS, n))
    zeros = np.zeros(n, np.int64)
    sub = Comparisons(comps.genuine[keep], comps.subject_a[keep], comps.subject_b[keep], zeros, zeros, fa[keep],
                      fb[keep], ia, ib, comps.subjects, test.fingers, test.assignment)
    return sub, {name: scores[keep] for name, scores in by_name.items()}


def _two_frames_fused(run: _Run, choice: FusionChoice, protocol: Protocol) -> list[dict]:
    """Test identities with >= 3 images: one reference against two face frames (their mean, as the service
    combines them) or the first frame alone, each with the identity's ZFM finger (taken as ``protocol``
    says), fused by the chosen rule."""
    sub, by_name = _two_frames_subset(run)
    raw = enrolled_finger_raw(sub, {s: fs for (s, v), fs in run.fingers.items() if v == "zfm"},
                              protocol.enrolled, protocol.placements)
    finger_s = protocol.finger_scores(run.finger_cals["zfm"], raw)
    out = []
    for frames, name in ((1, "single"), (2, "mean")):
        face_s = by_name[name]
        cols = np.column_stack([face_s, finger_s])
        out += [Curve(f"face alone, {frames} frame{'s' * (frames > 1)}", protocol.transaction(face_s)),
                Curve(f"fused, {frames} face frame{'s' * (frames > 1)} + ZFM finger", choice.fused(cols))]
    return summarise_curves(out, sub, run.threshold, run.args.bootstrap)


def fnmr_targets(curves: Sequence[Curve], genuine: np.ndarray) -> dict[str, list[tuple[float, float, str]]]:
    """DET marks: FNMR at FMR 0.01% of each curve."""
    return {c.name: [(1e-4, m.fnmr_at_fmr(verification_scores(c, genuine), 1e-4).fnmr, "")] for c in curves}


def _thin_det(c: m.DetCurve) -> m.DetCurve:
    change = np.flatnonzero((np.diff(c.fnmr) != 0) | (np.diff(c.fmr) != 0))
    keep = np.unique(np.concatenate([[0, len(c.fnmr) - 1], change, change + 1]))
    return m.DetCurve(c.thresholds[keep], c.fmr[keep], c.fnmr[keep])


def fused_report(result: dict) -> list[str]:
    """report.md of a fused run: per enrolment protocol, the test table, the dev choice, the per-set figures
    and the target."""
    lines = [f"# 1:1 accuracy: face + fingerprint, chimeric subjects ({result['started']})", "",
             f"Command: `{result['command']}`", ""]
    sp = result["split"]
    lines += [f"Test: {sp['test_identities']} LFW identities x {sp['test_fingers']} fingers of "
              f"{', '.join(sp['test_finger_sets'])}; dev (calibration, rule): {sp['dev_identities']} identities x "
              f"{sp['dev_fingers']} fingers of {', '.join(sp['dev_finger_sets'])}.", ""]
    if "shipped_configuration" in result:
        lines += ["Rows marked shipped: the service's own configuration on the same test comparisons (faces scored by "
                  "the shipped face.json, fitted on all of lfw-dev: these test identities included; fused by the "
                  f"service's {result['shipped_configuration']['fusion']}, with its face floor); the other rows "
                  "score faces with a calibration refitted on the dev identities.", ""]
    for config in result["configurations"]:
        lines += _configuration_report(config)
    lines += [f"Union bound of the best of k ({DEV_FINGER_SETS[0]} ZFM windows, every distinct different-finger "
              "comparison and k-impression enrolment): " + "; ".join(
                  f"s >= {u['s']:g}: stated {u['stated']:.1e}, one comparison {u['single']:.2e} "
                  f"({u['count_single']} of {u['n_single']}), best of {u['k']} {u['best_of_k']:.2e} (x{u['ratio']:.2f})"
                  for u in result.get("dev_union_bound", [])), ""]
    lines += ["![DET](det.png)", ""]
    return lines


def interval_text(interval: Sequence[float] | None) -> str:
    """A 95% interval as ``[lo, hi]`` in percent, or ``[interval not computed]`` where there is none
    (``--bootstrap 0`` and errors seen, so no rule of three either)."""
    if not interval:
        return "[interval not computed]"
    return f"[{pct(interval[0])}, {pct(interval[1])}]"


def _rates(entry: dict, keys: Sequence[str]) -> str:
    """FNMR at each target FMR with its interval, as one report cell list."""
    return ", ".join(f"{pct(entry['fnmr_at_fmr'][k]['fnmr'])} {interval_text(entry['fnmr_at_fmr'][k]['interval'])}"
                     for k in keys)


def _transaction_lines(tx: dict, keys: Sequence[str], whose: str) -> list[str]:
    """The report's lines of the transactions of a ``retry`` protocol decided call by call (``whose``: which
    fusion, appended to the headings)."""
    lines = ["", f"Transactions decided call by call{whose} (the best call equals the transaction score: "
             f"{'yes' if tx['transaction_score_is_the_best_call'] else 'NO'}):", ""]
    for where in ("at_service_threshold", "at_fmr_0.01%"):
        f = tx[where]
        lines.append(f"- {where.replace('_', ' ')} (s >= {f['threshold']:.2f}): genuine travellers turned away "
                     f"{pct(1 - f['genuine']['accepted'])}, asked for another placement "
                     f"{pct(f['genuine']['asked_again'])} ({f['genuine']['mean_calls']:.3f} calls each); "
                     f"impostors accepted {pct(f['impostor']['accepted'])}, asked again "
                     f"{pct(f['impostor']['asked_again'])}")
    if "new_face_frame_each_call" in tx:
        nf = tx["new_face_frame_each_call"]
        lines += ["", f"A new face photograph in the second call{whose} ({nf['n_identities']} test identities with "
                  "three images or more), FNMR at FMR " + ", ".join(f"{float(k) * 100:g}%" for k in keys)
                  + "; at s >= 3 turned away / asked again:", ""]
        for c in nf["curves"]:
            f = c["at_service_threshold_calls"]
            lines.append(f"- {c['pipeline']} ({c['n_genuine']} / {c['n_impostor']}): {_rates(c, keys)}; "
                         f"{pct(1 - f['genuine']['accepted'])} / {pct(f['genuine']['asked_again'])}, impostors "
                         f"accepted {pct(f['impostor']['accepted'])}")
    return lines


def _configuration_report(config: dict) -> list[str]:
    """The report's section of one enrolment protocol."""
    k, p = config["enrolled_impressions"], config.get("placements", 1)
    if config.get("retry"):
        lines = [f"## Finger enrolled from {k} impression{'s' * (k > 1)}, up to {p} attempts at the kiosk (one "
                 "placement a call; another only when the call was not accepted)", "",
                 f"Each call's fused score is stated as one of {p} (less log10({p})); the finger less log10({k}) "
                 "within its call. The rows below score each transaction (its best call; a modality alone as a "
                 f"transaction of that modality, less log10({p})).", ""]
    else:
        lines = [f"## Finger enrolled from {k} impression{'s' * (k > 1)}, probed with {p} placement{'s' * (p > 1)}",
                 ""]
    if not config.get("fusion_chosen_for_this_protocol", True):
        lines += ["Fused with the rule, densities and floor chosen for one placement (the service's fusion.json), "
                  "not chosen again for this protocol.", ""]
    keys = list(config["test"][0]["fnmr_at_fmr"])
    lines += ["| pipeline | genuine / impostor | EER | " + " | ".join(
        f"FNMR at FMR {float(k) * 100:g}% [95%]" for k in keys) + " | FMR / FNMR at s >= 3 |",
        "|---|---|---|" + "---|" * len(keys) + "---|"]
    for s in (config["test"] + config.get("test_service_rule", []) + config["test_other_rules"]
              + config.get("test_shipped", [])):
        cells = []
        for k in keys:
            e = s["fnmr_at_fmr"][k]
            cells.append(f"{pct(e['fnmr'])} {interval_text(e['interval'])} ({e['errors']})")
        op = s["at_service_threshold"]
        lines.append(f"| {s['pipeline']} | {s['n_genuine']} / {s['n_impostor']} | {pct(s['eer'])} | "
                     + " | ".join(cells) + f" | {pct(op['fmr'])} / {pct(op['fnmr'])} |")
    t = config["target"]
    dev = config["dev"]
    cf = dev["contradiction_floors"]
    lines += ["", f"Target fused FNMR <= 1% at FMR 0.01%: {pct(t['fused_fnmr'])} "
              f"{interval_text(t['fused_interval'])}: "
              f"{'met' if t['met'] else 'NOT met'}.", "", "Dev, FNMR by fusion rule (face + ZFM finger):", "",
              *[f"- {rule}: " + ", ".join(f"FMR {float(k) * 100:g}%: {pct(x)}" for k, x in v.items())
                for rule, v in dev["fnmr_at_fmr_by_rule"].items()],
              "", f"Chosen: {dev['chosen_rule']} ({dev['why']}).", "",
              f"Contradiction cap: {cf['why']}.", "", "Dev candidates (face floor, finger floor: dev FNMR at FMR "
              "0.01%, stolen-finger attacks accepted at s >= 3):", "",
              *[f"- {c['face']}, {c['finger']}: {pct(c['fnmr'])}, {pct(c['stolen_finger_accepted'])}"
                for c in cf["candidates"]], "",
              "Test attacks accepted:", "",
              *[f"- {kind} ({a['n']}), each rule at its FMR 0.1% threshold: " + ", ".join(
                  f"{k}: {pct(v)}" for k, v in a["accepted_at_fmr_0.1%"].items()) + "; at s >= 3: " + ", ".join(
                  f"{k}: {pct(v)}" for k, v in a["accepted_at_service_threshold_product"].items())
                for kind, a in config["test_attacks"].items()], "",
              "Dev calibration checks (share of impostors at or over s): "
              + ", ".join(f"{k} {v:.2e}" for k, v in dev["calibration_checks"].items()), "",
              "By test finger set (face alone, ZFM finger alone, fused):", ""]
    for s, secs in config["test_by_finger_set"].items():
        lines.append(f"- {s}: " + "; ".join(
            f"{x['pipeline']}: " + ", ".join(f"{pct(x['fnmr_at_fmr'][k]['fnmr'])}" for k in keys) for x in secs))
    for key, whose in (("test_transactions", ""), ("test_transactions_service_rule", ", the service's rule")):
        if key in config:
            lines += _transaction_lines(config[key], keys, whose)
    tf = config["test_two_face_frames"]
    lines += ["", f"Two face frames (test identities with three images or more; {tf[0]['n_genuine']} genuine, "
              f"{tf[0]['n_impostor']} impostor comparisons), FNMR at FMR " + ", ".join(
                  f"{float(k) * 100:g}%" for k in keys) + ":", "",
              *[f"- {s['pipeline']}: {_rates(s, keys)}" for s in tf], ""]
    return lines
