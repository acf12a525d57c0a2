"""Fingerprint ceiling: what the ridge stage alone can do on degraded captures, given the clean capture's fields.

For the degradations that keep an image's geometry (``contrast``, ``blur``, ``dry``, ``wet``), each FVC2002
set is extracted twice from the same degraded pixels:

- ``shipped``: the extractor as it is (``measure_fields`` of the degraded image, then ``trace_ridges``): the
  figure of ``checkpoint-bench fingerprint-robustness``'s ``new`` column;
- ``clean fields``: the degraded image's ridges traced with every field measured on the clean image of the
  same capture (foreground mask, orientation, coherence, ridge flow, ridge periods): an oracle no extractor
  has. It bounds what better segmentation, orientation or frequency estimation can gain: whatever error
  remains is lost in enhancement, thinning and minutiae detection, or in the pixels themselves.

Pairs are the ``all`` protocol (pairs.csv: 280 same-finger, 2,880 different-finger, both images degraded),
the one the robustness target is judged on: no degradation more than doubles the set's clean EER. The clean
rows of both extractions are the same templates (a check of the harness). Run under
``flock -x /tmp/checkpoint-bench.lock``; about a minute a set with 2 workers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.degrade import degrade, seed_for
from benchmarks.fingerprint_eval import DEFAULT_DATA, SENSOR_DPI, error_rates, score_pairs

COMMAND = "fingerprint-ceiling"
SAME_GEOMETRY = ("contrast", "blur", "dry", "wet")
EXTRACTIONS = ("shipped", "clean fields")


def add_set_arguments(parser: argparse.ArgumentParser, kinds: tuple[str, ...]) -> None:
    """Options of a benchmark over the FVC2002 sets and their degraded copies (``kinds``, all by default)."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the fvc2002 folder")
    parser.add_argument("--sets", nargs="+", default=list(SENSOR_DPI), choices=list(SENSOR_DPI))
    parser.add_argument("--degradations", nargs="+", default=list(kinds), choices=kinds)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options."""
    add_set_arguments(parser, SAME_GEOMETRY)


def _templates(job: tuple[str, str, int, tuple[str, ...]]) -> tuple[str, dict[tuple[str, str], bytes | None]]:
    """One image's templates: {(degradation, extraction): bytes, or None when refused}."""
    from PIL import Image

    from biometrics.errors import InvalidSample
    from biometrics.fingerprint.extraction import template_or_refusal
    from biometrics.fingerprint.image import as_working_image
    from biometrics.fingerprint.pipeline import measure_fields, trace_ridges

    path, set_name, dpi, kinds = job
    name = Path(path).name
    grey = np.array(Image.open(path).convert("L"))

    def template(analysis) -> bytes | None:
        try:
            return template_or_refusal(analysis).to_bytes()
        except InvalidSample:
            return None

    clean = measure_fields(as_working_image(grey, dpi))
    out: dict[tuple[str, str], bytes | None] = {}
    out["clean", "shipped"] = out["clean", "clean fields"] = template(trace_ridges(clean.local, clean))
    for kind in kinds:
        fields = measure_fields(as_working_image(degrade(grey, kind, seed_for(set_name, name, kind)), dpi))
        out[kind, "shipped"] = template(trace_ridges(fields.local, fields))
        out[kind, "clean fields"] = template(trace_ridges(fields.local, clean))
    return name, out


def measure(data: Path, set_name: str, kinds: list[str], workers: int) -> list[dict]:
    """Rows of one set: per (degradation, extraction), its error rates and its ratio to the clean EER."""
    from biometrics.fingerprint import FingerprintTemplate

    jobs = [(str(p), set_name, SENSOR_DPI[set_name], tuple(kinds)) for p in sorted((data / set_name).glob("*.png"))]
    with ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn")) as pool:
        per_image = dict(pool.map(_templates, jobs, chunksize=2))
    rows = []
    for kind in ("clean", *kinds):
        for extraction in EXTRACTIONS:
            blobs = {name: out[kind, extraction] for name, out in per_image.items()}
            templates = {name: FingerprintTemplate.from_bytes(b) if b else None for name, b in blobs.items()}
            rates = error_rates(*score_pairs(data / set_name, templates))
            rates.update({"set": set_name, "degradation": kind, "extraction": extraction,
                          "refused": sum(b is None for b in blobs.values())})
            rows.append(rates)
    clean_eer = next(r["eer"] for r in rows if r["degradation"] == "clean")
    for r in rows:
        r["ratio"] = r["eer"] / clean_eer if clean_eer > 0 else float("inf")
        r["met"] = bool(r["eer"] <= 2.0 * clean_eer)
    return rows


def markdown(rows: list[dict]) -> str:
    """One table: a row per set and degradation, the shipped extraction beside the clean-fields ceiling."""
    by = {(r["set"], r["degradation"], r["extraction"]): r for r in rows}
    lines = ["| set | degradation | EER % shipped | EER % clean fields | x clean shipped | x clean clean fields "
             "| met shipped / clean fields | FMR1000 % shipped | FMR1000 % clean fields | refused |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s, k in dict.fromkeys((r["set"], r["degradation"]) for r in rows):
        a, b = by[s, k, "shipped"], by[s, k, "clean fields"]
        yes = {True: "yes", False: "**no**"}
        lines.append(f"| {s} | {k} | {100 * a['eer']:.2f} | {100 * b['eer']:.2f} | {a['ratio']:.2f} | "
                     f"{b['ratio']:.2f} | {yes[a['met']]} / {yes[b['met']]} | {100 * a['fmr1000']:.2f} | "
                     f"{100 * b['fmr1000']:.2f} | {a['refused']} / {b['refused']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Measure every set, print the table, write the figures."""
    t0 = time.perf_counter()
    rows: list[dict] = []
    for set_name in args.sets:
        rows += measure(args.data, set_name, list(args.degradations), args.workers)
        print(f"<!-- {set_name}: {time.perf_counter() - t0:.0f} s -->", file=sys.stderr, flush=True)
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=1))
    return 0
