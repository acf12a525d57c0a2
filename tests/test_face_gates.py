"""The enrolment gates of biometrics.face (too small, low quality) on real LFW images, and ``checkpoint-bench
face-gates`` on a tiny folder made of tests/data/faces (see its README for the source)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import cli
from benchmarks.face_gates import CONDITIONS, degrade
from biometrics.errors import PoorQuality
from biometrics.face import MIN_ENROL_FACE_SIDE, MIN_ENROL_QUALITY, detect_faces, extract_face_template
from biometrics.imaging import decode_rgb

FACES = Path(__file__).resolve().parent / "data" / "faces"


def _scaled(name: str, side: int, sigma: float = 0.0) -> np.ndarray:
    """The image downscaled so that its face (the enrolment detector's box) is about ``side`` px, then blurred."""
    rgb = decode_rgb((FACES / name).read_bytes())
    img = degrade(rgb, detect_faces(rgb, thorough=True)[0].side, side, sigma)
    assert img is not None
    return img


@pytest.mark.parametrize("name", ["Kofi_Annan_0001.jpg", "Hans_Blix_0001.jpg"])
def test_a_face_too_small_is_refused_at_enrolment_and_accepted_as_a_probe(name):
    img = _scaled(name, 40)
    with pytest.raises(PoorQuality, match="too small"):
        extract_face_template(img, "enrol")
    probe = extract_face_template(img, "probe")
    assert probe.template.shape == (128,)
    assert probe.box.side < MIN_ENROL_FACE_SIDE


@pytest.mark.parametrize("name", ["Kofi_Annan_0001.jpg", "Hans_Blix_0001.jpg"])
def test_a_heavily_blurred_face_is_refused_for_low_quality(name):
    sharp = extract_face_template(decode_rgb((FACES / name).read_bytes()), "enrol")  # the photograph: accepted
    blurred = _scaled(name, 80, sigma=4.0)
    with pytest.raises(PoorQuality, match="quality is too low"):
        extract_face_template(blurred, "enrol")
    probe = extract_face_template(blurred, "probe")
    assert probe.box.side >= MIN_ENROL_FACE_SIDE  # refused for its quality, not its size
    assert probe.quality < MIN_ENROL_QUALITY <= sharp.quality


@pytest.mark.parametrize("name", ["Hans_Blix_0001.jpg", "Megawati_Sukarnoputri_0001.jpg"])
def test_a_face_just_over_the_gates_is_accepted(name):
    template = extract_face_template(_scaled(name, 70), "enrol")
    assert MIN_ENROL_FACE_SIDE <= template.box.side < MIN_ENROL_FACE_SIDE + 15
    assert template.quality >= MIN_ENROL_QUALITY


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``checkpoint-bench face-gates`` on tests/data/faces laid out as images/<identity>/*.jpg."""
    data = tmp_path_factory.mktemp("faces")
    for f in FACES.glob("*.jpg"):
        identity = f.stem.rsplit("_", 1)[0]
        (data / "images" / identity).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, data / "images" / identity / f.name)
    out = tmp_path_factory.mktemp("out")
    assert cli.main(["face-gates", "--faces", str(data), "--out", str(out), "--workers", "1"]) == 0
    return data, json.loads((out / "metrics.json").read_text()) | {"_out": str(out)}


@pytest.mark.bench
def test_the_bench_counts_are_consistent(bench_run):
    data, result = bench_run
    images = {d.name: len(list(d.glob("*.jpg"))) for d in (data / "images").iterdir()}
    several = {k: n for k, n in images.items() if n >= 2}
    assert result["n_identities"] == len(several)
    assert result["n_probes"] == sum(several.values())  # at most 4 probes + 1 reference each: all of them here
    assert result["probe_fta"] == 0
    assert len(result["conditions"]) == len(CONDITIONS)
    totals = {"identities": 0, "clean_genuine": 0}
    for split in ("dev", "test"):
        s = result[split]
        totals["identities"] += s["identities"]
        totals["clean_genuine"] += s["clean"]["fnmr"]["n"]
        scored = 0
        for c in s["per_condition"]:
            o = c["outcomes"]
            assert sum(o.values()) == s["identities"]
            refused = o["too_small"] + o["low_quality"] + o["multiple_faces"]
            assert c["accepted"]["references"] == o["accepted"]
            assert c["refused_forced"]["references"] == refused
            assert c["all_forced"]["fnmr"]["n"] == c["accepted"]["fnmr"]["n"] + c["refused_forced"]["fnmr"]["n"]
            scored += o["accepted"] + refused
        for gates in ("current_gates", "chosen_gates"):
            g = s[gates]
            assert g["accepted"]["references"] + g["refused_forced"]["references"] == scored
        unblurred = [c for c in s["per_condition"] if c["sigma"] == 0]  # the side bins hold these
        assert sum(b["references"] for b in s["by_side"]) == sum(c["all_forced"]["references"] for c in unblurred)
        assert sum(b["fnmr"]["n"] for b in s["by_side"]) == sum(c["all_forced"]["fnmr"]["n"] for c in unblurred)
        for g in s["grid"]:
            assert g["accepted"]["references"] + g["refused_forced"]["references"] == scored
        small = [c for c in s["per_condition"] if c["target_side"] in (30, 40)]
        assert all(c["outcomes"]["accepted"] == 0 for c in small)  # a 30 or 40 px face never passes 60 px
    assert totals["identities"] == len(several)
    # each identity's reference against its other images, clean (every image acquired)
    assert totals["clean_genuine"] == sum(n - 1 for n in several.values())
    report = (Path(result["_out"]) / "report.md").read_text()
    assert "| clean |" in report and "| side40 |" in report


@pytest.mark.bench
def test_the_bench_reuses_its_extractions(bench_run, tmp_path):
    data, result = bench_run
    out = Path(result["_out"])
    before = (out / "extractions.npz").stat().st_mtime_ns
    assert cli.main(["face-gates", "--faces", str(data), "--out", str(out), "--workers", "1", "--reuse"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert (out / "extractions.npz").stat().st_mtime_ns == before
    assert again["test"]["per_condition"] == result["test"]["per_condition"]
