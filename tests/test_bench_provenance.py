"""Caches keyed on the code that made them, and each run's own provenance in metrics.json and the reports.

The review's case: a cache of random vectors under the right image names was accepted and reported (EER 0.423,
extraction 1.0 ms). A cache that does not say which code made it, or says other code, is made again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import cli
from benchmarks.accuracy import read_pairs, unique_images
from benchmarks.identify_bench import identities, split

FACES = Path(__file__).resolve().parent / "data" / "faces"
PAIRS = FACES / "pairs_bench_accuracy.csv"


def forged_face_cache(path: Path, names: list[str], **extra: np.ndarray) -> None:
    """Random 128-d vectors under the right image names, each 'extracted' in 1 ms (no code version)."""
    rng = np.random.default_rng(0)
    np.savez(path, names=np.array(names), production_templates=rng.standard_normal((len(names), 128)),
             production_ok=np.ones(len(names), bool), production_errors=np.array([""] * len(names)),
             production_seconds=np.full(len(names), 0.001), templates=rng.standard_normal((len(names), 128)),
             ok=np.ones(len(names), bool), **extra)


@pytest.mark.bench
@pytest.mark.slow  # extracts the seven test faces
def test_a_face_cache_of_unknown_origin_is_made_again_and_the_run_records_its_provenance(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cache = tmp_path / "faces.npz"
    forged_face_cache(cache, unique_images(read_pairs(PAIRS)))
    out = tmp_path / "out"
    args = ["accuracy", "--modality", "face", "--pairs", str(PAIRS), "--out", str(out), "--workers", "1",
            "--no-baseline", "--cache", str(cache)]
    assert cli.main(args) == 0
    assert "not reused, made again" in capsys.readouterr().err
    result = json.loads((out / "metrics.json").read_text())
    assert result["timing"]["extract_ms_median"] > 1.5, "the forged 1 ms extractions were reported"
    assert f"--cache {cache}" in result["command"]
    p = result["provenance"]
    assert p["caches"] == {"cache": str(cache)} and p["code_versions"]["face"].startswith("face-")
    assert len(p["git_commit"]) == 40 and isinstance(p["git_tree_modified"], bool)
    assert "Run provenance: commit" in (out / "report.md").read_text()
    assert str(np.load(cache)["code_version"]) == p["code_versions"]["face"]  # rebuilt, keyed on this code
    assert cli.main(args) == 0  # the rebuilt cache is this code's: reused, nothing said
    assert "not reused" not in capsys.readouterr().err


@pytest.mark.bench
@pytest.mark.slow  # extracts the seven test faces
def test_an_identify_cache_made_by_other_code_is_refused_and_the_report_shows_the_runs_provenance(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = tmp_path / "data"
    for f in FACES.glob("*.jpg"):
        (data / f.stem.rsplit("_", 1)[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, data / f.stem.rsplit("_", 1)[0] / f.name)
    by_id = identities(data)
    enrolled, non_mated = split(list(by_id), 0.5, 0)
    names = [str(p.relative_to(data)) for name in enrolled + non_mated for p in by_id[name]]  # as identify lists them
    cache = tmp_path / "id.npz"
    forged_face_cache(cache, names, code_version=np.array("face-0000000000"))
    out = tmp_path / "id"
    assert cli.main(["identify", "--data", str(data), "--out", str(out), "--workers", "1", "--cache",
                     str(cache), "--seed", "0"]) == 0
    assert "made by other code (face-0000000000)" in capsys.readouterr().err
    assert str(np.load(cache)["code_version"]).startswith("face-") and str(np.load(cache)["code_version"]) != \
        "face-0000000000"
    result = json.loads((out / "metrics.json").read_text())
    assert f"--cache {cache}" in result["command"] and result["provenance"]["caches"] == {"cache": str(cache)}
    result["provenance"].update(git_commit="feedc0de" * 5, git_tree_modified=True)  # as if run elsewhere
    (out / "metrics.json").write_text(json.dumps(result))
    assert cli.main(["report", "--out", str(tmp_path / "report"), "--identify", str(out)]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"Run provenance: commit `{'feedc0de' * 5}` (working tree modified)" in text
    assert f"caches: cache `{cache}`" in text


def test_finger_scores_made_by_other_code_are_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]):
    """The chimeric benchmark's finger score cache: an entry without this code's version is computed again."""
    from benchmarks import chimeric
    from benchmarks.provenance import finger_scores_code_version

    made: list[tuple[str, str]] = []

    def fresh(folder: Path, variant: str, workers: int) -> chimeric.FingerScores:
        made.append((folder.name, variant))
        return chimeric.FingerScores(folder.name, variant, ["101"], np.ones((1, 8, 1, 8)), [])

    monkeypatch.setattr(chimeric, "finger_scores", fresh)
    cache = tmp_path / "fingers.npz"
    forged = {f"DB1_B_{v}_{k}": x for v in chimeric.FINGER_VARIANTS
              for k, x in (("raw", np.zeros((1, 8, 1, 8))), ("fingers", np.array(["101"])), ("failed", np.array([""])))}
    np.savez(cache, **forged)
    got = chimeric.load_finger_scores(tmp_path, ["DB1_B"], 1, cache)
    assert made == [("DB1_B", v) for v in chimeric.FINGER_VARIANTS], "the unversioned scores were reused"
    assert np.all(got[("DB1_B", "zfm")].raw == 1.0)
    assert "not reused, made again" in capsys.readouterr().err
    assert str(np.load(cache)["DB1_B_zfm_version"]) == finger_scores_code_version()
    made.clear()
    chimeric.load_finger_scores(tmp_path, ["DB1_B"], 1, cache)
    assert made == []  # this code's scores: reused


def test_the_set_modes_record_their_provenance_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """--modality fused, --frames and --augment write metrics.json and report.md through one path: both carry
    the run's provenance (here --augment, its evaluation stubbed)."""
    import argparse

    from benchmarks import accuracy, frames

    monkeypatch.setattr(frames, "evaluate_augmentation", lambda args: {"figures": 1})
    monkeypatch.setattr(frames, "augmentation_report", lambda result: ["# augmentation"])
    (tmp_path / "faces").mkdir()
    args = argparse.Namespace(modality="face", frames=0, augment=True, faces=tmp_path / "faces", out=tmp_path / "out",
                              cache=tmp_path / "faces.npz", calibration=None)
    accuracy._evaluate_set(args)
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert result["provenance"]["caches"] == {"cache": str(tmp_path / "faces.npz")}
    assert "face" in result["provenance"]["code_versions"] and result["provenance"]["calibrations"]
    assert (tmp_path / "out" / "report.md").read_text().rstrip().splitlines()[-1].startswith("Run provenance: commit")


def test_the_face_calibration_does_not_fit_on_a_cache_of_unknown_origin(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """checkpoint-bench calibrate --cache: random vectors under no code version are not what it fits on (the
    shipped face calibration is written by this command)."""
    from benchmarks import calibrate

    data = tmp_path / "faces"
    for identity in range(20):
        (data / f"id{identity:02d}").mkdir(parents=True)
        for k in (1, 2):
            (data / f"id{identity:02d}" / f"{k}.jpg").write_bytes(b"")  # extraction is stubbed below
    extracted: list[int] = []

    def extract_all(paths: list[Path], workers: int) -> list[np.ndarray]:
        extracted.append(len(paths))
        return [np.full(128, i / len(paths), np.float32) for i in range(len(paths))]

    monkeypatch.setattr(calibrate, "extract_all", extract_all)
    cache = tmp_path / "calibration-faces.npz"
    rng = np.random.default_rng(1)
    np.savez(cache, labels=np.repeat([f"id{i:02d}" for i in range(20)], 2), templates=rng.standard_normal((40, 128)),
             ok=np.ones(40, bool))
    args = ["calibrate", "--modality", "face", "--data", str(data), "--out", str(tmp_path / "face.json"),
            "--cache", str(cache), "--workers", "1"]
    assert cli.main(args) == 0
    assert extracted == [40], "the forged templates were fitted on"
    assert cli.main(args) == 0 and extracted == [40]  # the rewritten cache is this code's: reused


def test_a_face_cache_of_more_images_is_read_in_the_pairs_order_and_left_as_it_is(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A cache of a whole face set (this face code's) serves a pairs list of some of its images: their rows, in the
    list's order, and the cache is not rewritten to the list's images (another benchmark's cache stays whole)."""
    from benchmarks.provenance import face_cache, face_code_version

    wanted = unique_images(read_pairs(PAIRS))
    held = ["images/Other/Other_0001.jpg", *reversed(wanted), "images/Other/Other_0002.jpg"]
    cache = tmp_path / "all.npz"
    forged_face_cache(cache, held, code_version=np.array(face_code_version()))
    stored = np.load(cache)
    got = face_cache(cache, "names", wanted, subset=True)
    assert got is not None and got["names"].tolist() == wanted
    assert np.array_equal(got["production_templates"], stored["production_templates"][[held.index(w) for w in wanted]])
    assert str(got["code_version"]) == face_code_version()
    assert face_cache(cache, "names", wanted) is None  # the exact-list callers (calibrate, identify) as before
    assert face_cache(cache, "names", [*wanted, "images/Absent/Absent_0001.jpg"], subset=True) is None
    assert "holds other images" in capsys.readouterr().err
    before = cache.read_bytes()
    out = tmp_path / "out"
    assert cli.main(["accuracy", "--modality", "face", "--pairs", str(PAIRS), "--out", str(out), "--workers", "1",
                     "--no-baseline", "--cache", str(cache)]) == 0
    assert f"{len(wanted)} of its {len(held)} images reused" in capsys.readouterr().err
    assert cache.read_bytes() == before
    assert json.loads((out / "metrics.json").read_text())["timing"]["extract_ms_median"] == pytest.approx(1.0)


def test_a_calibration_records_the_command_it_was_made_by(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The face calibration's notes name the run's own data, limit, cache and output, its commit and face code
    version, and a caveat worded from its data (they named lfw-dev and the shipped file whatever was run)."""
    from benchmarks import calibrate
    from benchmarks.provenance import face_code_version

    data = tmp_path / "station-faces"
    for identity in range(12):
        (data / f"id{identity:02d}").mkdir(parents=True)
        for k in (1, 2):
            (data / f"id{identity:02d}" / f"{k}.jpg").write_bytes(b"")  # extraction is stubbed below
    rng = np.random.default_rng(3)
    monkeypatch.setattr(calibrate, "extract_all",
                        lambda paths, workers: [rng.standard_normal(128).astype(np.float32) for _ in paths])
    out = tmp_path / "cal" / "face.json"
    assert cli.main(["calibrate", "--modality", "face", "--data", str(data), "--out", str(out), "--limit", "10",
                     "--workers", "1"]) == 0
    notes = json.loads(out.read_text())["notes"]
    assert notes["command"] == (f"checkpoint-bench calibrate --modality face --data {data} --limit 10 "
                                f"--out {out}")
    assert notes["identities"] == 10
    assert notes["provenance"]["face_code_version"] == face_code_version()
    assert "git_commit" in notes["provenance"] and notes["provenance"]["cache"] is None
    assert "LFW" not in notes["caveat"] and "station-faces" in notes["caveat"]
