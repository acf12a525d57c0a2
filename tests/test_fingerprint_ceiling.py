"""The extractor's two stages (``measure_fields``, ``trace_ridges``) and the ceiling benchmark built on them:
the split changes no template, a capture's ridges can be traced along another capture's fields, and the
benchmark's two extractions agree on clean images."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import fingerprint_ceiling as fc
from benchmarks.degrade import degrade, seed_for
from biometrics.fingerprint import extract_fingerprint
from biometrics.fingerprint.extraction import template_or_refusal
from biometrics.fingerprint.image import as_working_image
from biometrics.fingerprint.pipeline import measure_fields, trace_ridges

DATA = Path(__file__).parent / "data" / "fingerprints"
NAMES = ("101_1", "101_2", "101_3", "102_1", "103_1")


def grey(name: str) -> np.ndarray:
    return np.array(Image.open(DATA / f"DB1_B_{name}.png").convert("L"))


def test_tracing_a_capture_along_its_own_fields_is_the_extractor():
    image = grey("101_1")
    fields = measure_fields(as_working_image(image))
    traced = template_or_refusal(trace_ridges(fields.local, fields))
    assert traced.to_bytes() == extract_fingerprint(image).to_bytes()


def test_a_degraded_capture_traced_along_the_clean_fields_keeps_its_own_ridges():
    image = grey("101_1")
    dry = degrade(image, "dry", seed_for("DB1_B", "101_1.png", "dry"))
    clean = measure_fields(as_working_image(image))
    own = measure_fields(as_working_image(dry))
    ceiling = trace_ridges(own.local, clean)
    assert np.array_equal(ceiling.mask, clean.mask) and not np.array_equal(own.mask, clean.mask)
    assert np.all(ceiling.mask[ceiling.minutiae["y"].astype(int), ceiling.minutiae["x"].astype(int)])
    clean_ridges = trace_ridges(clean.local, clean).ridges
    assert not np.array_equal(ceiling.ridges, clean_ridges)  # the dry image's pixels, not the clean ones


def test_the_benchmark_scores_both_extractions_and_they_agree_on_clean_images(tmp_path):
    folder = tmp_path / "DB1_B"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(DATA / f"DB1_B_{name}.png", folder / f"{name}.png")
    with open(folder / "pairs.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["path_a", "path_b", "same"])
        for i, a in enumerate(NAMES):
            for b in NAMES[i + 1:]:
                out.writerow([f"{a}.png", f"{b}.png", int(a[:3] == b[:3])])
    rows = fc.measure(tmp_path, "DB1_B", ["dry"], workers=1)
    by = {(r["degradation"], r["extraction"]): r for r in rows}
    assert set(by) == {(k, e) for k in ("clean", "dry") for e in fc.EXTRACTIONS}
    assert by["clean", "shipped"]["eer"] == by["clean", "clean fields"]["eer"]
    assert all(r["n_genuine"] == 3 and r["n_impostor"] == 7 for r in rows)
    assert by["clean", "shipped"]["ratio"] == 1.0 or by["clean", "shipped"]["eer"] == 0
    table = fc.markdown(rows)
    assert table.count("| DB1_B |") == 2
