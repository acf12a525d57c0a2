"""A station's own fingerprint calibration: fitted on captures of its scanner (`checkpoint-bench calibrate
--modality fingerprint`), checked when loaded, and used by `checkpoint-server --fingerprint-calibration`.

The captures (tests/data/station/README.md) are five FVC2002 DB3_B fingers, four impressions each, as the
station's ZFM sensor gives them (256x288 at 500 dpi, 16 grey levels)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import DATA, ServerProcess
from PIL import Image

from benchmarks import cli as bench
from biometrics.fingerprint import compare_fingerprints, extract_fingerprint
from biometrics.scores import ScoreCalibration

CAPTURES = DATA / "station"
FINGERS, IMPRESSIONS = 5, 4
N_IMPOSTOR = math.comb(FINGERS * IMPRESSIONS, 2) - FINGERS * math.comb(IMPRESSIONS, 2)  # 160


def capture(finger: int, impression: int) -> Path:
    return CAPTURES / str(finger) / f"{impression}.png"


@pytest.fixture(scope="module")
def station_calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibration") / "station-fingerprint.json"
    assert bench.main(["calibrate", "--modality", "fingerprint", "--data", str(CAPTURES), "--out", str(out),
                       "--workers", "2"]) == 0
    return out


def test_the_station_calibration_states_the_measured_false_match_rate(station_calibration: Path) -> None:
    cal = ScoreCalibration.load_checked(station_calibration, "fingerprint")
    assert cal.modality == "fingerprint" and cal.higher_is_better and cal.n_impostor == N_IMPOSTOR
    assert cal.notes["fingers"] == FINGERS and cal.notes["n_genuine"] == FINGERS * math.comb(IMPRESSIONS, 2)
    assert cal.notes["failed_to_acquire"] == []
    # The k-th highest impostor similarity scores -log10(k / n): the top one log10(160) = 2.20.
    templates = {(f, i): extract_fingerprint(np.array(Image.open(capture(f, i)).convert("L")))
                 for f in range(101, 101 + FINGERS) for i in range(1, IMPRESSIONS + 1)}
    keys = sorted(templates)
    impostor = sorted((compare_fingerprints(templates[a], templates[b]) for n, a in enumerate(keys)
                       for b in keys[n + 1:] if a[0] != b[0]), reverse=True)
    assert len(impostor) == N_IMPOSTOR
    assert cal.score(impostor[0]) == pytest.approx(math.log10(N_IMPOSTOR), abs=1e-9)
    assert cal.score(impostor[9]) == pytest.approx(math.log10(N_IMPOSTOR / 10), abs=0.02)
    assert cal.score(impostor[0]) != pytest.approx(ScoreCalibration.for_modality("fingerprint").score(impostor[0]))


def test_fvc_files_in_one_folder_give_the_same_calibration(tmp_path: Path, station_calibration: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in range(101, 101 + FINGERS):
        for i in range(1, IMPRESSIONS + 1):
            shutil.copy(capture(f, i), flat / f"{f}_{i}.png")
    out = tmp_path / "flat.json"
    assert bench.main(["calibrate", "--modality", "fingerprint", "--data", str(flat), "--out", str(out)]) == 0
    a, b = json.loads(out.read_text()), json.loads(station_calibration.read_text())
    assert (a["values"], a["scores"], a["n_impostor"]) == (b["values"], b["scores"], b["n_impostor"])


def test_captures_of_one_finger_cannot_calibrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = tmp_path / "one"
    shutil.copytree(CAPTURES / "101", one / "101")
    assert bench.main(["calibrate", "--modality", "fingerprint", "--data", str(one), "--out",
                       str(tmp_path / "x.json")]) == 2
    assert "captures of several fingers" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_calibration_of_another_modality_or_a_broken_file_is_refused(tmp_path: Path) -> None:
    face = Path(__file__).resolve().parents[1] / "biometrics" / "calibration" / "face.json"
    with pytest.raises(ValueError, match="calibrates 'face' scores, not 'fingerprint'"):
        ScoreCalibration.load_checked(face, "fingerprint")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not a score calibration"):
        ScoreCalibration.load_checked(broken, "fingerprint")
    shipped = json.loads((face.parent / "fingerprint.json").read_text())
    bad = {  # each would let the server start and state every finger wrongly
        "decreasing": ({"scores": list(reversed(shipped["scores"]))}, "non-decreasing scores"),
        "nan scores": ({"scores": [float("nan")] * len(shipped["scores"])}, "non-decreasing scores"),
        "scores shifted up": ({"scores": [v + 6 for v in shipped["scores"]]}, "cannot measure"),
        "a distance": ({"higher_is_better": False}, "similarity"),
        "nan tail": ({"tail_slope": float("nan")}, "tail slope"),
        "huge tail": ({"tail_slope": 1e9}, "tail slope"),
    }
    for name, (change, words) in bad.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({**shipped, **change}))
        with pytest.raises(ValueError, match=words):
            ScoreCalibration.load_checked(tmp_path / f"{name}.json", "fingerprint")
    assert ScoreCalibration.load_checked(face.parent / "fingerprint.json", "fingerprint").n_impostor > 100
    assert ScoreCalibration.load_checked(face, "face").higher_is_better is False


def test_the_server_refuses_to_start_on_a_bad_calibration(tmp_path: Path) -> None:
    for bad in (tmp_path / "missing.json",
                Path(__file__).resolve().parents[1] / "biometrics" / "calibration" / "face.json"):
        done = subprocess.run([sys.executable, "-m", "verify.server", "--plaintext", "--listen", "127.0.0.1:0",
                               "--data-dir", str(tmp_path / "data"), "--key-dir", str(tmp_path / "keys"),
                               "--fingerprint-calibration", str(bad)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "--fingerprint-calibration" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before the data directory is touched


def test_the_server_refuses_a_calibration_too_small_for_its_fmr(tmp_path: Path, station_calibration: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "verify.server", "--plaintext", "--listen", "127.0.0.1:0",
                           "--data-dir", str(tmp_path / "data"), "--key-dir", str(tmp_path / "keys"),
                           "--fingerprint-calibration", str(station_calibration)],  # the default --fmr 0.001
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "160 impostor comparisons" in done.stderr and "needs at least 3000" in done.stderr
    assert not (tmp_path / "data").exists()


def test_a_calibration_measures_an_fmr_down_to_three_over_its_impostors(station_calibration: Path) -> None:
    calibration = ScoreCalibration.load(station_calibration)
    assert calibration.n_impostor == 160
    calibration.check_measures(3 / 160)
    with pytest.raises(ValueError, match="needs at least 161"):
        calibration.check_measures(3 / 161)
    shipped = ScoreCalibration.for_modality("fingerprint")  # 14,400 comparisons of 2,880 pairs (shifted windows)
    assert (shipped.n_impostor, shipped.n_pairs) == (14_400, 2_880)
    shipped.check_measures(3 / 2880)
    with pytest.raises(ValueError, match=r"2880 distinct pairs of captures \(14400 impostor comparisons\) measure "
                                         "an FMR down to 0.001 at best.*needs at least 3000"):
        shipped.check_measures(0.001)
    assert not shipped.measures(0.001) and calibration.measures(3 / 160)
    with pytest.raises(ValueError, match="false-match rate"):
        calibration.check_measures(0)


@pytest.mark.server
def test_a_server_states_fingerprint_scores_by_the_station_calibration(tmp_path: Path,
                                                                       station_calibration: Path) -> None:
    # the test captures give 160 impostor comparisons: they measure an FMR of 3/160 at best, so --fmr 0.02
    proc = ServerProcess(tmp_path, args=("--fingerprint-calibration", str(station_calibration),
                                         "--fmr", "0.02")).start()
    try:
        stub = proc.stub()

        def finger(f: int, i: int) -> pb.Sample:
            return pb.Sample(modality=pb.FINGERPRINT, finger=pb.RIGHT_INDEX, image=capture(f, i).read_bytes())

        enrolled = stub.Enroll(pb.EnrollRequest(subject_id="IDN0000501", info=pb.SubjectInfo(name="Station 101"),
                                                samples=[finger(101, 1)]), timeout=60)
        assert enrolled.enrolled, enrolled
        got = stub.Verify(pb.VerifyRequest(subject_id="IDN0000501", samples=[finger(101, 2)]), timeout=60)
        grey = {i: np.array(Image.open(capture(101, i)).convert("L")) for i in (1, 2)}
        raw = compare_fingerprints(extract_fingerprint(grey[2]), extract_fingerprint(grey[1]))
        station = ScoreCalibration.load(station_calibration)
        assert got.modality_scores[0].score == pytest.approx(station.score(raw), abs=1e-9)
        assert got.score == pytest.approx(station.score(raw), abs=1e-9)  # one modality: the fused score is it
        assert station.score(raw) != pytest.approx(ScoreCalibration.for_modality("fingerprint").score(raw))
    finally:
        proc.stop()



def test_the_station_calibration_bench_counts_each_half_by_each_calibration() -> None:
    from benchmarks.station_calibration import judge, table

    class Linear:  # raw similarity r scores 100 r under one calibration, 50 r under the other
        def __init__(self, factor: float) -> None:
            self.factor = factor

        def score(self, raw: np.ndarray) -> np.ndarray:
            return self.factor * np.asarray(raw)

    impostor, genuine = np.array([0.01, 0.02, 0.03, 0.05]), np.array([0.02, 0.2])
    got = judge(Linear(100), Linear(50), genuine, impostor)
    assert got["n_impostor"] == 4 and got["n_genuine"] == 2
    assert got["shipped"] == {"impostor_at_s2": 3, "impostor_at_s3": 2, "genuine_under_s3": 1, "same_image_under_s3": 0}
    assert got["station"] == {"impostor_at_s2": 1, "impostor_at_s3": 0, "genuine_under_s3": 1, "same_image_under_s3": 0}
    row = {**got, "set": "DB9_B", "captures": 6, "refused": 0, "identical_dropped": 2}
    assert "| DB9_B | 6 (0; 2) | 4 / 2 | 0, 3, 1 | 0.0, 2, 0 | 1, 1 | 0, 0 (of 0) |" in table([row])


def _fvc_folder(tmp_path: Path, images: dict[str, Path]) -> Path:
    """A set folder of FVC-named images (``<finger>_<impression>.png``) copied from the station's captures."""
    folder = tmp_path / "DB9_B"
    folder.mkdir()
    for name, source in images.items():
        shutil.copy(source, folder / name)
    return folder


def test_the_station_calibration_bench_drops_a_shifted_capture_identical_to_another_of_its_image(
        tmp_path: Path) -> None:
    """The captures are already the sensor's 256x288 window: no placement can move it, so each shifted run gives
    the centred capture again. Those duplicates are dropped, not compared with their own image or counted twice."""
    from benchmarks.fingerprint_eval import SHIFTED_RUNS
    from benchmarks.station_calibration import captures, pair_scores

    folder = _fvc_folder(tmp_path, {"101_1.png": capture(101, 1), "101_2.png": capture(101, 2),
                                    "102_1.png": capture(102, 1)})
    got = captures(folder, 500, 1)
    assert sorted(got.images.tolist()) == ["101_1.png", "101_2.png", "102_1.png"]
    assert got.identical_dropped == 3 * SHIFTED_RUNS
    genuine, same_image, impostor = pair_scores(got, np.ones(len(got.images), bool))
    assert (genuine.size, same_image.size, impostor.size) == (1, 0, 2)


def test_two_placements_of_one_impression_are_counted_apart_from_genuine_comparisons() -> None:
    """A pair of captures of one image is not a genuine comparison of two impressions: counted apart."""
    from benchmarks.station_calibration import distinct_captures, judge, pair_scores

    def template(finger: int, impression: int, roll: int = 0):
        grey = np.array(Image.open(capture(finger, impression)).convert("L"))
        return extract_fingerprint(np.roll(grey, roll, axis=1), dpi=500)

    centred = {"101_1.png": template(101, 1), "101_2.png": template(101, 2), "102_1.png": template(102, 1)}
    moved = {"101_1.png": template(101, 1, roll=12)}  # another placement of the same impression
    c = distinct_captures([centred, moved, dict(centred)])  # the third run repeats the centred captures
    assert c.identical_dropped == 3 and c.images.tolist().count("101_1.png") == 2
    genuine, same_image, impostor = pair_scores(c, np.ones(len(c.images), bool))
    assert (genuine.size, same_image.size, impostor.size) == (2, 1, 3)
    counts = judge(ScoreCalibration.for_modality("fingerprint"), ScoreCalibration.for_modality("fingerprint"),
                   genuine, impostor, same_image)
    assert (counts["n_genuine"], counts["n_same_image"]) == (2, 1)


def test_the_station_calibration_bench_counts_no_capture_twice_and_no_same_image_pair_as_genuine(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole run on stand-in captures (a template is its window: image and placement): the shifted run
    whose placement is the centre repeats the centred capture (16 of 20 images get one); the table counts each
    window once and keeps two placements of one impression out of the genuine comparisons."""
    import argparse
    import zlib

    import biometrics.fingerprint as fingerprint
    from benchmarks import station_calibration as sc
    from benchmarks.fingerprint_eval import SHIFTED_RUNS, shift_of

    class Window:
        def __init__(self, key: str) -> None:
            self.key = key

        def to_bytes(self) -> bytes:
            return self.key.encode()

    names = [f"{finger}_{impression}.png" for finger in range(101, 111) for impression in (1, 2)]

    def extract_set(folder: Path, dpi: int, cut: bool, workers: int, run: int | None = None):
        return {n: Window(f"{n}@{(0, 0) if run is None else shift_of(k, run)}") for k, n in enumerate(names)}, []

    monkeypatch.setattr(sc, "extract_set", extract_set)
    monkeypatch.setattr(fingerprint, "compare_fingerprints",
                        lambda a, b: zlib.crc32((a.key + b.key).encode()) / 2**32)
    assert sc.run(argparse.Namespace(data=Path("."), sets=["DB2_B"], workers=1)) == 0
    windows = [1 + len({shift_of(k, run) for run in range(SHIFTED_RUNS)} - {(0, 0)}) for k in range(len(names))]
    assert sum(windows) == 84  # of 100 captures, 16 repeat the centred one
    genuine = sum(windows[2 * f] * windows[2 * f + 1] for f in range(10))
    same_image = sum(w * (w - 1) // 2 for w in windows)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| DB2_B"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "84 (0; 16)"
    assert cells[2].endswith(f"/ {genuine}")
    assert cells[6].endswith(f"(of {same_image})")
