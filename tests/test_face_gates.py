"""The enrolment gates of biometrics.face (too small, blurred) on real LFW images, ``checkpoint-bench face-gates``
on a tiny folder made of tests/data/faces (see its README for the source), and the bench's rule on hand-made
figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import cli
from benchmarks import face_gates as fg
from benchmarks.face_gates import CONDITIONS, SUPERSEDED_QUALITY_GATE, degrade
from biometrics.errors import PoorQuality
from biometrics.face import (
    MIN_ENROL_FACE_SIDE,
    MIN_ENROL_SHARPNESS,
    detect_faces,
    extract_face_template,
    face_quality,
    face_sharpness,
)
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
def test_a_heavily_blurred_face_is_refused_as_blurred(name):
    photograph = decode_rgb((FACES / name).read_bytes())
    sharp = extract_face_template(photograph, "enrol")  # the photograph: accepted
    blurred = _scaled(name, 80, sigma=4.0)
    with pytest.raises(PoorQuality, match="blurred"):
        extract_face_template(blurred, "enrol")
    probe = extract_face_template(blurred, "probe")
    assert probe.box.side >= MIN_ENROL_FACE_SIDE  # refused for its blur, not its size
    assert face_sharpness(blurred, probe.box) < MIN_ENROL_SHARPNESS <= face_sharpness(photograph, sharp.box)


@pytest.mark.parametrize("name", ["Hans_Blix_0001.jpg", "Megawati_Sukarnoputri_0001.jpg"])
def test_a_face_just_over_the_gates_is_accepted(name):
    img = _scaled(name, 70)
    template = extract_face_template(img, "enrol")
    assert MIN_ENROL_FACE_SIDE <= template.box.side < MIN_ENROL_FACE_SIDE + 15
    assert face_sharpness(img, template.box) >= MIN_ENROL_SHARPNESS


@pytest.mark.parametrize("name", ["Kofi_Annan_0004.jpg", "Megawati_Sukarnoputri_0004.jpg"])
def test_a_sharp_face_just_over_60_px_that_the_quality_gate_refused_is_accepted(name):
    img = _scaled(name, 62)
    box = detect_faces(img, thorough=True)[0]
    assert MIN_ENROL_FACE_SIDE <= box.side < MIN_ENROL_FACE_SIDE + 15
    assert face_quality(img, box) < SUPERSEDED_QUALITY_GATE  # the gate on face_quality refused this face
    template = extract_face_template(img, "enrol")
    assert template.box == box
    assert template.quality == face_quality(img, box)  # the reported quality keeps its meaning


@pytest.mark.parametrize("name", ["Kofi_Annan_0001.jpg", "Megawati_Sukarnoputri_0001.jpg"])
def test_a_blurred_large_face_is_refused_as_blurred(name):
    img = _scaled(name, 170, sigma=3.0)  # upscaled so that the face is about 170 px, then blurred
    box = detect_faces(img, thorough=True)[0]
    assert box.side >= 150
    assert face_quality(img, box) >= SUPERSEDED_QUALITY_GATE  # the gate on face_quality let this face through
    with pytest.raises(PoorQuality, match="blurred") as refusal:
        extract_face_template(img, "enrol")
    assert "retake" in str(refusal.value)
    assert extract_face_template(img, "probe").box.side >= 150  # a probe is not gated


def _hand_made(sharpness: list[float], side: list[float], errors: list[int], split: str = "dev"
               ) -> tuple[fg.Sample, fg.Extractions, fg.Counts]:
    """References of ``split`` (one per identity), each with 10 genuine comparisons of which ``errors`` fail,
    under the clean condition only (the others not applicable); the first reference's errors set the clean
    FNMR."""
    from benchmarks.chimeric import split_of

    n, k = len(sharpness), len(CONDITIONS)
    names = [name for name in (f"person_{i}" for i in range(10 * n)) if split_of(name) == split][:n]
    outcome = np.full((n, k), "not_applicable", dtype="<U16")
    outcome[:, 0] = "accepted"
    values = np.zeros((n, k))

    def column(v: list[float]) -> np.ndarray:
        out = values.copy()
        out[:, 0] = v
        return out

    ex = fg.Extractions(
        outcome=outcome, side=column(side), quality=column([50.0] * n), sharpness=column(sharpness),
        lap96=values, chip_ratio=values, detector=np.full((n, k), "hog1"), templates=np.zeros((n, k, 128)),
        seconds=values, probe_templates=np.zeros((0, 128)), probe_ok=np.zeros(0, bool),
        gates=np.array([60.0, np.nan, np.nan]))
    gen_n = np.zeros((n, k), np.int64)
    gen_n[:, 0] = 10
    gen_err = np.zeros((n, k), np.int64)
    gen_err[:, 0] = errors
    sample = fg.Sample(names, [f"{x}/0.jpg" for x in names], [], np.array([]))
    return sample, ex, fg.Counts(gen_n, gen_err, np.zeros((n, k), np.int64), np.zeros((n, k), np.int64))


def test_the_sharpness_gate_is_the_lowest_bin_edge_from_which_no_bin_rises():
    # 40 references per sharpness bin from 30 down to 8 (FNMR 10%, the clean one), then 40 at 7 (FNMR 50%: rises)
    # and 40 at 5 (FNMR 10% again: below a rise, no licence)
    bins = [35.0, 25.0, 17.0, 13.0, 11.0, 9.0, 7.0, 5.0]
    sharp = [v for v in bins for _ in range(40)]
    errors = [5 if v == 7.0 else 1 for v in sharp]
    sample, ex, counts = _hand_made(sharp, [100.0] * len(sharp), errors)
    assert fg.choose_gates(sample, ex, counts)["sharpness"] == 8.0

    # the same with 40 more references at 13, blurred-looking failures but under the side gate: not counted
    small = sharp + [13.0] * 40
    sample, ex, counts = _hand_made(small, [100.0] * len(sharp) + [40.0] * 40, errors + [9] * 40)
    chosen = fg.choose_gates(sample, ex, counts)
    assert chosen["side"] == 100.0  # the empty side bins under 100 px stop the descent
    assert chosen["sharpness"] == 8.0  # counted, the 40 px ones would make the 12-15 bin rise (50% FNMR)

    # a bin of fewer than MIN_BIN_REFERENCES references stops the descent as a rise does
    thin = [v for v in sharp if v != 9.0] + [9.0] * (fg.MIN_BIN_REFERENCES - 1)
    sample, ex, counts = _hand_made(thin, [100.0] * len(thin), [5 if v == 7.0 else 1 for v in thin])
    assert fg.choose_gates(sample, ex, counts)["sharpness"] == 10.0


def test_no_dev_reference_means_no_choice():
    sample, ex, counts = _hand_made([20.0] * 5, [100.0] * 5, [1] * 5, split="test")
    assert fg.choose_gates(sample, ex, counts) is None


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
