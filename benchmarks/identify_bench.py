"""Open-set 1:N identification on a folder-per-identity set: FNIR at FPIR, CMC, with plots.

Usage::

    checkpoint-bench identify --data ../shared/data/faces/lfw-dev --gallery-per-identity 1 --out results/id

Split (seeded by ``--seed``): the identities are shuffled and a fraction ``--non-mated-fraction`` is kept
out of the gallery; every image of those is a non-mated search. Each other identity enrols its first
``--gallery-per-identity`` images that acquire (in file-name order) into the production matcher
(:class:`biometrics.matcher.TemplateIndex`); its remaining images are mated searches. Identities with a
single image enrol as distractors only. Templates come from the production face pipeline
(``purpose="probe"``; enrolment's stricter checks are not applied, so that the gallery is the same set
for every run). Scores are calibrated false-match scores ``s = -log10(FMR)`` of the distance; metrics are
computed on the negated distance, which orders searches identically without the calibration's caps.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import metrics as m
from benchmarks.provenance import face_cache, face_code_version, provenance_line, run_provenance

COMMAND = "identify"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``checkpoint-bench identify``."""
    parser.add_argument("--data", required=True, type=Path, help="DIR/<identity>/*.jpg or DIR/images/<identity>/")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json, plots and report.md")
    parser.add_argument("--gallery-per-identity", type=int, default=1, help="enrolled images per identity")
    parser.add_argument("--non-mated-fraction", type=float, default=0.5,
                        help="fraction of identities kept out of the gallery (default 0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the identity split")
    parser.add_argument("--candidates", type=int, default=10, help="candidate list length L (default 10)")
    parser.add_argument("--limit", type=int, default=0, help="use N identities only (after shuffling)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="extraction processes")
    parser.add_argument("--cache", type=Path,
                        help="npz of extracted templates, reused when this face code made it on the same images")
    parser.add_argument("--fmr", type=float, default=0.001,
                        help="the service's operating point: its threshold s = -log10(FMR) is evaluated too")
    parser.add_argument("--fpir", type=float, default=0.01,
                        help="the service's 1:N setting: its threshold max(-log10(FMR), -log10(FPIR) + log10(N)) "
                        "is evaluated too (default 0.01, the server's)")


def identities(root: Path) -> dict[str, list[Path]]:
    """Images by identity in a folder-per-identity set, names sorted."""
    base = root / "images" if (root / "images").is_dir() else root
    if not base.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of identities")
    out = {}
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[d.name] = files
    if not out:
        raise FileNotFoundError(f"{base} holds no <identity>/<image> folders")
    return out


def split(ids: list[str], non_mated_fraction: float, seed: int, limit: int = 0) -> tuple[list[str], list[str]]:
    """(enrolled, non-mated) identities: a seeded shuffle, the first fraction kept out of the gallery."""
    if not 0.0 < non_mated_fraction < 1.0:
        raise ValueError("--non-mated-fraction must be strictly between 0 and 1")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    if limit:
        order = order[:limit]
    cut = max(1, round(non_mated_fraction * len(order)))
    return sorted(order[cut:]), sorted(order[:cut])


def _extract(paths: list[Path], workers: int, cache: Path | None, root: Path) -> tuple[np.ndarray, np.ndarray]:
    from benchmarks.accuracy import extract_all, extract_face_production

    names = np.array([str(p.relative_to(root)) for p in paths])
    version = face_code_version()
    cached = face_cache(cache, "names", names.tolist())
    if cached is not None:
        return cached["templates"], cached["ok"]
    results = extract_all(extract_face_production, paths, workers, "extract")
    ok = np.array([r.template is not None for r in results])
    templates = np.stack([r.template if r.template is not None else np.zeros(128, np.float32) for r in results])
    if cache:
        np.savez(cache, names=names, templates=templates, ok=ok, code_version=np.array(version))
    return templates, ok


def evaluate(args: argparse.Namespace) -> dict:
    """Run the open-set benchmark; write metrics.json, cmc.png, open_set_det.png, report.md."""
    from biometrics.matcher import TemplateIndex
    from biometrics.scores import CALIBRATION_DIR, ScoreCalibration

    provenance = run_provenance({"cache": args.cache}, {"face": face_code_version()}, [CALIBRATION_DIR / "face.json"])
    by_id = identities(args.data)
    enrolled, non_mated = split(list(by_id), args.non_mated_fraction, args.seed, args.limit)
    chosen = enrolled + non_mated
    paths = [p for name in chosen for p in by_id[name]]
    owner = [name for name in chosen for _ in by_id[name]]
    templates, ok = _extract(paths, args.workers, args.cache, args.data)

    index = TemplateIndex(128)
    mated_probes: list[tuple[str, int]] = []  # (identity, row)
    failed_to_enrol = []
    rows_of: dict[str, list[int]] = {}
    for row, name in enumerate(owner):
        rows_of.setdefault(name, []).append(row)
    for name in enrolled:
        rows = rows_of[name]
        good = [r for r in rows if ok[r]][: args.gallery_per_identity]
        if not good:
            failed_to_enrol.append(name)
            continue
        index.add(name, templates[good])
        mated_probes += [(name, r) for r in rows if r not in good]
    nonmated_rows = [r for name in non_mated for r in rows_of[name]]

    k = max(args.candidates, max(m.DEFAULT_CMC_RANKS))
    start = time.perf_counter()
    mated_ok = [(n, r) for n, r in mated_probes if ok[r]]
    mated_results = index.search(templates[[r for _, r in mated_ok]], k) if mated_ok else []
    nm_ok = [r for r in nonmated_rows if ok[r]]
    nm_results = index.search(templates[nm_ok], k) if nm_ok else []
    search_seconds = time.perf_counter() - start
    n_searches = len(mated_ok) + len(nm_ok)

    ranks, mated_scores = [], []
    for (name, _), cands in zip(mated_ok, mated_results, strict=True):
        ids = [c[0] for c in cands]
        if name in ids:
            ranks.append(ids.index(name) + 1)
            mated_scores.append(-cands[ids.index(name)][1])
        else:
            ranks.append(0)
            mated_scores.append(-np.inf)
    top = [(-cands[0][1] if cands else -np.inf) for cands in nm_results]
    outcomes = m.SearchOutcomes(
        mated_rank=np.array(ranks, dtype=np.int64),
        mated_score=np.array(mated_scores),
        nonmated_top_score=np.array(top),
        mated_fta=len(mated_probes) - len(mated_ok),
        nonmated_fta=len(nonmated_rows) - len(nm_ok),
    )
    summary = m.summarise_identification(outcomes, list_length=args.candidates)
    calibration = ScoreCalibration.for_modality("face")
    for entry in summary["fnir_at_fpir"].values():
        t = entry["threshold"]
        entry["threshold_distance"] = None if t is None else -t
        entry["threshold_score"] = None if t is None else float(calibration.score(-t))
    from biometrics.scores import threshold_for_fmr, threshold_for_fpir

    def at_score(score: float, note: str) -> dict[str, Any]:
        d = calibration.raw_threshold(10.0 ** -score)  # the distance whose false-match score is ``score``
        return {"score_threshold": score, "distance_threshold": d, "fpir": outcomes.fpir(-d),
                "fnir_rank_1": outcomes.fnir(-d, 1), f"fnir_rank_{args.candidates}": outcomes.fnir(-d, args.candidates),
                "note": note}

    one_to_one = threshold_for_fmr(args.fmr)
    service = at_score(one_to_one, "the per-comparison (1:1) threshold applied to a whole gallery: FPIR grows "
                       "with the gallery's size (about 1 - (1 - FMR)^N for N subjects)")
    service_1n = at_score(threshold_for_fpir(args.fpir, index.subject_count, one_to_one),
                          f"the service's 1:N threshold for FPIR {args.fpir:g} at this gallery size (union bound)")
    result = {
        "data": str(args.data),
        "at_service_threshold": service,
        "at_service_1n_threshold": service_1n,
        "command": command_line(args),
        "provenance": provenance,
        "split": {
            "seed": args.seed,
            "non_mated_fraction": args.non_mated_fraction,
            "identities": len(chosen),
            "enrolled_identities": index.subject_count,
            "gallery_templates": len(index),
            "non_mated_identities": len(non_mated),
            "failed_to_enrol": failed_to_enrol,
            "gallery_per_identity": args.gallery_per_identity,
            "rule": "seeded shuffle of identity names; the first fraction are non-mated (never enrolled); "
            "each other identity enrols its first N acquired images, its others are mated searches",
        },
        "score": "negated euclidean distance (thresholds also given as distance and as s = -log10(FMR))",
        "search_ms_per_probe": 1000 * search_seconds / max(n_searches, 1),
        **summary,
    }
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    from benchmarks import plots
    from benchmarks.accuracy import json_safe

    plots.cmc_plot({"production": np.asarray(summary["cmc_curve"])}, out / "cmc.png",
                   f"CMC, gallery of {index.subject_count} subjects")
    _, fpir, fnir = m.fpir_fnir_curve(outcomes, rank=1)
    plots.open_set_det_plot({"production, rank 1": (fpir, fnir)}, out / "open_set_det.png")
    (out / "metrics.json").write_text(json.dumps(json_safe(result), indent=1) + "\n")
    write_report(out, result)
    return result


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    parts = ["checkpoint-bench", "identify", "--data", str(args.data), "--out", str(args.out),
             "--gallery-per-identity", str(args.gallery_per_identity),
             "--non-mated-fraction", f"{args.non_mated_fraction:g}", "--seed", str(args.seed),
             "--candidates", str(args.candidates)]
    if args.fmr != 0.001:
        parts += ["--fmr", f"{args.fmr:g}"]
    if args.fpir != 0.01:
        parts += ["--fpir", f"{args.fpir:g}"]
    if args.limit:
        parts += ["--limit", str(args.limit)]
    if args.cache:
        parts += ["--cache", str(args.cache)]
    return " ".join(parts)


def summary_lines(result: dict) -> list[str]:
    """The headline table of an identification run."""
    s = result["split"]
    lines = [
        f"Gallery: {s['enrolled_identities']} subjects ({s['gallery_templates']} templates, "
        f"{s['gallery_per_identity']} per identity); {result['n_mated']} mated searches "
        f"({result['mated_fta']} FTA), {result['n_nonmated']} non-mated searches ({result['nonmated_fta']} FTA) "
        f"from {s['non_mated_identities']} identities kept out (seed {s['seed']}).",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key, e in result["fnir_at_fpir"].items():
        lo, hi = e["fnir_ci_wilson"]
        dist = "n/a" if e["threshold_distance"] is None else f"{e['threshold_distance']:.4f}"
        lines.append(
            f"| FNIR at FPIR {float(key) * 100:g}% (rank 1) | {100 * e['fnir']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]"
            f" (distance <= {dist}, FPIR {100 * e['fpir']:.2f}%) |"
        )
        if "fnir_at_rank_list_length" in e:
            lines.append(f"| FNIR at FPIR {float(key) * 100:g}% (rank <= {e['list_length']}) | "
                         f"{100 * e['fnir_at_rank_list_length']:.2f}% |")
    for key, label in (("at_service_threshold", "the 1:1 threshold"),
                       ("at_service_1n_threshold", "the service's 1:N threshold")):
        svc = result.get(key)
        if svc:
            lines.append(f"| at {label} s >= {svc['score_threshold']:.2f} (distance <= "
                         f"{svc['distance_threshold']:.4f}) | FPIR {100 * svc['fpir']:.2f}%, FNIR (rank 1) "
                         f"{100 * svc['fnir_rank_1']:.2f}% |")
    for rank, rate in result["cmc"].items():
        lines.append(f"| CMC rank {rank} | {100 * rate:.2f}% |")
    lines.append(f"| search time per probe | {result['search_ms_per_probe']:.2f} ms |")
    return lines


def write_report(out: Path, result: dict) -> Path:
    """``report.md`` of an identification run."""
    lines = [
        "# Open-set 1:N identification: face",
        "",
        f"Data: `{result['data']}`. Command: `{result['command']}`",
        "",
        provenance_line(result.get("provenance")),
        "",
        f"Conventions: {result['convention']}. Split: {result['split']['rule']}.",
        "",
        *summary_lines(result),
        "",
        "![CMC](cmc.png)",
        "",
        "![open-set DET](open_set_det.png)",
        "",
        "Warnings:",
        "",
        *[f"- {w}" for w in result["warnings"]],
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    """Entry point of ``checkpoint-bench identify``."""
    try:
        result = evaluate(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"checkpoint-bench identify: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    print(f"\nwritten: {args.out / 'metrics.json'}, {args.out / 'report.md'}, cmc.png, open_set_det.png")
    return 0
