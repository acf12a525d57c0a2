"""checkpoint-bench accuracy: a small real run on tests/data/faces, and its refusals of bad input.

The pairs file ``tests/data/faces/pairs_bench_accuracy.csv`` (6 genuine, 6 impostor pairs of the seven
LFW images described in ``tests/data/faces/README.md``) belongs to these tests.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import cli
from benchmarks import metrics as m

FACES = Path(__file__).resolve().parent / "data" / "faces"
PAIRS = FACES / "pairs_bench_accuracy.csv"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One accuracy run on the test pairs plus two pairs with an image that has no face."""
    data = tmp_path_factory.mktemp("pairs")
    for f in FACES.glob("*.jpg"):
        shutil.copy(f, data / f.name)
    blank = np.full((250, 250, 3), 128, np.uint8)
    cv2.imwrite(str(data / "no_face.jpg"), blank)
    rows = PAIRS.read_text().splitlines()
    rows += ["no_face.jpg,Kofi_Annan_0001.jpg,1", "Hans_Blix_0001.jpg,no_face.jpg,0"]
    (data / "pairs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path_factory.mktemp("out")
    rc = cli.main(["accuracy", "--modality", "face", "--pairs", str(data / "pairs.csv"), "--out", str(out),
                   "--workers", "1"])
    assert rc == 0
    return out


@pytest.mark.bench
@pytest.mark.slow  # the accuracy run (run_dir) takes several seconds
def test_writes_metrics_plots_and_report(run_dir: Path):
    for name in ("metrics.json", "det.png", "roc.png", "scores.png", "report.md", "scores.csv"):
        assert (run_dir / name).stat().st_size > 0, name
    result = json.loads((run_dir / "metrics.json").read_text())
    assert (result["n_genuine"], result["n_impostor"]) == (7, 7)
    for key in ("fnmr_at_fmr", "threshold_at_fmr"):
        assert set(result[key]) == {"0.01", "0.001", "0.0001"}
    report = (run_dir / "report.md").read_text()
    assert "baseline (face_recognition defaults)" in report and "no_face.jpg" in report


@pytest.mark.bench
@pytest.mark.slow
def test_fta_image_is_listed_and_its_pairs_never_match(run_dir: Path):
    result = json.loads((run_dir / "metrics.json").read_text())
    for section in (result["production"], result["baseline"]):
        fta = section["fta"]
        assert [f["path"] for f in fta["failed_images"]] == ["no_face.jpg"]
        assert (fta["genuine_pairs"], fta["impostor_pairs"]) == (1, 1)
        assert len(fta["failed_pairs"]) == 2
        op = section["at_operating_threshold"]
        assert op["fnmr"]["n"] == 7 and op["fmr"]["n"] == 7


@pytest.mark.bench
@pytest.mark.slow
def test_figures_agree_with_the_written_scores(run_dir: Path):
    """metrics.json is recomputable from scores.csv with benchmarks.metrics (the auditor's check)."""
    result = json.loads((run_dir / "metrics.json").read_text())
    with (run_dir / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 14
    for column, section in (("score_0", result["production"]), ("score_1", result["baseline"])):
        same = np.array([r["same"] == "1" for r in rows])
        sim = np.array([float(r[column]) if r[column] else np.nan for r in rows])
        fta = np.isnan(sim)
        scores = m.VerificationScores(sim[same & ~fta], sim[~same & ~fta], int((same & fta).sum()),
                                      int((~same & fta).sum()))
        # scores.csv rounds to 6 decimals
        assert m.equal_error_rate(scores).eer == pytest.approx(section["eer"], abs=1e-9)
        t = section["operating_threshold"]
        op = m.operating_point(scores, t)
        assert op.false_matches == section["at_operating_threshold"]["fmr"]["errors"]
        assert op.false_non_matches == section["at_operating_threshold"]["fnmr"]["errors"]
        assert op.false_non_matches >= 1  # at least the FTA genuine pair


@pytest.mark.bench
@pytest.mark.slow
def test_the_face_report_gives_subject_level_intervals_beside_clopper_pearson(run_dir: Path):
    """``--bootstrap`` (500 by default): every pipeline's EER, FNMR at each FMR and rates at its own threshold carry
    the subsets bootstrap's interval (identities resampled) beside Clopper-Pearson, in metrics.json and report.md."""
    result = json.loads((run_dir / "metrics.json").read_text())
    for section in (result["production"], result["baseline"]):
        boot = section["subsets_bootstrap"]
        assert (boot["replicates"], boot["n_identities"], boot["confidence"]) == (500, 4, 0.95)  # no_face is "no"
        assert section["eer_subsets_bootstrap"] == boot["eer"]
        for key, op in section["operating_points"].items():
            assert "clopper_pearson" in op["fnmr"]
            assert op["fnmr"]["subsets_bootstrap"] == boot["fnmr_at_fmr"][key]
            low, high = boot["fnmr_at_fmr"][key]
            assert 0.0 <= low <= section["fnmr_at_fmr"][key] <= high <= 1.0
        for kind in ("fmr", "fnmr"):
            at = section["at_operating_threshold"][kind]
            assert at["subsets_bootstrap"] == boot["at_operating_threshold"][kind]
    assert result["subsets_bootstrap"] == result["production"]["subsets_bootstrap"]  # the top level: production
    report = (run_dir / "report.md").read_text()
    assert "subjects [" in report and "subsets bootstrap" in report


def test_a_subjects_interval_over_no_error_is_not_printed_as_a_bound() -> None:
    """No error seen and none in any replicate: the bootstrap's [0, 0] bounds nothing; the report says so, and
    prints the interval where a replicate (its threshold chosen again) did see one."""
    from benchmarks.accuracy import _ci

    entry = {"errors": 0, "clopper_pearson": [0.0, 0.0074], "subsets_bootstrap": [0.0, 0.0]}
    assert _ci(entry) == "[0.00, 0.74]; subjects: no error to resample"
    assert _ci({**entry, "subsets_bootstrap": [0.0, 0.004]}) == "[0.00, 0.74]; subjects [0.00, 0.40]"
    assert _ci({"errors": 3, "clopper_pearson": [0.001, 0.02]}) == "[0.10, 2.00]"  # --bootstrap 0


def test_fingerprint_pairs_get_the_subsets_bootstrap_over_fingers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """FVC names a finger ``101_3.png``: the fingerprint pairs mode resamples fingers (identity_of: the name less its
    impression). The extraction is stood in for (scores given), the rest is the command's; --bootstrap 0: none."""
    from benchmarks import accuracy

    fingers = {f: [f"{f}_{i}.png" for i in range(1, 4)] for f in range(101, 111)}
    rows = [(a, b, 1) for imgs in fingers.values() for a, b in ((imgs[0], imgs[1]), (imgs[0], imgs[2]))]
    rows += [(fingers[f][0], fingers[g][1], 0) for f in fingers for g in fingers if f < g]
    for name in {n for r in rows for n in r[:2]}:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "pairs.csv").write_text("path_a,path_b,same\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows))
    rng = np.random.default_rng(0)
    sim = np.array([(1.0 if a.startswith("101_") else 6.0) if s else rng.normal(0.0, 1.0) for a, _, s in rows])

    def runs(args, pairs, images):
        extracted = {i: accuracy.Extracted(template=np.zeros(2)) for i in images}
        return [accuracy.PipelineRun("production (fingerprint)", extracted, sim, "s", 3.0, "s >= 3", 0.0)]

    monkeypatch.setattr(accuracy, "_fingerprint_runs", runs)
    out = tmp_path / "out"
    assert cli.main(["accuracy", "--modality", "fingerprint", "--pairs", str(tmp_path / "pairs.csv"), "--out",
                     str(out), "--bootstrap", "300"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    boot = result["production"]["subsets_bootstrap"]
    assert (boot["n_identities"], boot["replicates"]) == (10, 300)
    assert result["at_operating_threshold"]["fnmr"]["errors"] == 2  # both of finger 101's genuine pairs
    assert boot["at_operating_threshold"]["fnmr"][0] == 0.0  # replicates without finger 101
    assert "--bootstrap 300" in result["command"]
    assert cli.main(["accuracy", "--modality", "fingerprint", "--pairs", str(tmp_path / "pairs.csv"), "--out",
                     str(out), "--bootstrap", "0"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert "subsets_bootstrap" not in result["production"]
    assert "subjects [" not in (out / "report.md").read_text()


def test_exhaustive_comparisons_name_each_sides_identity_and_never_match_a_failed_image() -> None:
    """The exhaustive cross-comparison's pairs, with the identities the subsets bootstrap resamples."""
    from benchmarks.accuracy import Extracted, PipelineRun, exhaustive_comparisons, exhaustive_scores

    images = ["a/a_0001.jpg", "a/a_0002.jpg", "b/b_0001.jpg", "c/c_0001.jpg"]
    extracted = {i: Extracted(template=np.full(128, float(k))) for k, i in enumerate(images)}
    extracted["c/c_0001.jpg"] = Extracted(error="no face")
    run = PipelineRun("p", extracted, np.array([]), "", 0.0, "", 0.0)
    sim, same, id_a, id_b = exhaustive_comparisons(run, images, np.negative)
    assert list(same) == [True, False, False, False, False, False]
    assert list(zip(id_a, id_b, strict=True)) == [("a", "a"), ("a", "b"), ("a", "c"), ("a", "b"), ("a", "c"),
                                                  ("b", "c")]
    assert np.isnan(sim[[2, 4, 5]]).all()
    assert sim[[0, 1, 3]] == pytest.approx(-np.sqrt(128) * np.array([1, 2, 1]))
    sc = exhaustive_scores(run, images, np.negative)
    assert (sc.n_genuine, sc.n_impostor, sc.genuine_fta, sc.impostor_fta) == (1, 5, 0, 3)


def test_enrolment_agreement_counts_the_pairs_strictly_under_each_score() -> None:
    """The figures behind ``biometrics.multiframe.MIN_ENROL_AGREEMENT`` (a review: its comment gave figures no
    benchmark produced): hand-made scores, a tie at the threshold not under it, FTA pairs counted apart."""
    from benchmarks.accuracy import AGREEMENT_SCORES, agreement_table, enrol_agreement

    assert AGREEMENT_SCORES == (1.0, 1.5, 2.0)
    scores = m.VerificationScores(genuine=np.array([0.5, 1.5, 1.9, 3.0, 6.0]),
                                  impostor=np.array([0.0, 0.2, 0.99, 1.0, 1.49, 1.6, 2.0, 2.5]),
                                  genuine_fta=1, impostor_fta=2)
    got = enrol_agreement(scores)
    by = got["by_score"]
    assert list(by) == ["1", "1.5", "2"]
    assert [(by[t]["genuine"]["under"], by[t]["genuine"]["n"]) for t in by] == [(1, 5), (1, 5), (3, 5)]
    assert [(by[t]["impostor"]["under"], by[t]["impostor"]["n"]) for t in by] == [(3, 8), (5, 8), (6, 8)]
    assert by["1.5"]["impostor"]["rate"] == pytest.approx(5 / 8)
    low, high = by["1.5"]["genuine"]["clopper_pearson"]
    assert low < 0.2 < high
    assert (got["genuine_fta"], got["impostor_fta"]) == (1, 2)
    table = agreement_table(got)
    assert "| 1.5 | 1 of 5, 20.00% [" in "\n".join(table) and "| 5 of 8, 62.50% [" in "\n".join(table)


@pytest.mark.bench
@pytest.mark.slow
def test_the_face_report_gives_the_enrolment_agreement(run_dir: Path) -> None:
    result = json.loads((run_dir / "metrics.json").read_text())
    agreement = result["enrol_agreement"]
    assert (agreement["genuine_fta"], agreement["impostor_fta"]) == (1, 1)
    assert agreement["by_score"]["1.5"]["genuine"]["n"] == 6 and agreement["by_score"]["1.5"]["impostor"]["n"] == 6
    assert "Enrolment agreement" in (run_dir / "report.md").read_text()


def test_refuses_missing_images_and_bad_headers(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    bad = tmp_path / "pairs.csv"
    bad.write_text("path_a,path_b,same\nnope.jpg,Kofi_Annan_0001.jpg,1\n")
    assert cli.main(["accuracy", "--pairs", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "do not exist" in capsys.readouterr().err
    bad.write_text("a,b\nx,y\n")
    assert cli.main(["accuracy", "--pairs", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "header must be path_a,path_b,same" in capsys.readouterr().err
    bad.write_text("path_a,path_b,same\nx,y,maybe\n")
    assert cli.main(["accuracy", "--pairs", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "same must be 0 or 1" in capsys.readouterr().err


def test_weighted_fnmr_at_fmr_with_unit_weights_is_the_metrics_figure():
    """The bootstraps' weighted FNMR at FMR (benchmarks.metrics, used by benchmarks.chimeric) follows the unweighted
    figure's conventions."""
    from benchmarks.metrics import fnmr_at_fmr_weighted

    rng = np.random.default_rng(2)
    genuine = np.round(rng.normal(3.0, 1.0, 400), 1)  # rounded: ties between and within the two sets
    impostor = np.round(rng.normal(0.0, 1.0, 5000), 1)
    genuine[:3] = -np.inf  # failures to acquire never match
    fta = 3
    sc = m.VerificationScores(genuine[fta:], impostor, genuine_fta=fta)
    g, i = np.sort(genuine), np.sort(impostor)
    got = fnmr_at_fmr_weighted(g, np.ones_like(g), i, np.ones_like(i), [0.1, 0.01, 0.001, 0.0])
    assert got == pytest.approx([m.fnmr_at_fmr(sc, t).fnmr for t in (0.1, 0.01, 0.001, 0.0)])
    # a weight of 0 leaves a comparison out (the bootstrap draws a subject 0, 1, 2... times)
    w = np.ones_like(g)
    w[-1] = 0.0
    without_last = m.VerificationScores(g[fta:-1], impostor, genuine_fta=fta)
    assert fnmr_at_fmr_weighted(g, w, i, np.ones_like(i), [0.01])[0] == pytest.approx(
        m.fnmr_at_fmr(without_last, 0.01).fnmr)


def test_chimeric_comparisons_pair_subjects_with_fingers_as_the_protocol_says():
    """Genuine: one subject's images and two impressions of its finger; impostor: two subjects whose fingers
    differ and come from the same set (one sensor); fingers reused round robin."""
    from benchmarks.chimeric import FaceSet, chimeric_comparisons

    names = [f"id{i:02d}" for i in range(12) for _ in range(1 + i % 3)]  # 1 to 3 images each
    faces = FaceSet(Path("."), [f"{n}_{k}.jpg" for k, n in enumerate(names)], np.array(names),
                    np.zeros((len(names), 128)), np.ones(len(names), bool), np.full(len(names), 50.0),
                    np.zeros(len(names)))
    fingers = [("DB2_B", "101"), ("DB2_B", "102"), ("DB3_B", "101"), ("DB3_B", "102")]
    c = chimeric_comparisons(faces, sorted(set(names)), fingers, max_genuine=2)
    g = c.genuine
    assert np.all(c.subject_a[g] == c.subject_b[g]) and np.all(c.finger_a[g] == c.finger_b[g])
    assert np.all(c.impression_a[g] != c.impression_b[g])
    assert np.all(faces.identity[c.image_a[g]] == faces.identity[c.image_b[g]])
    assert np.all(c.image_a[g] != c.image_b[g])
    sets = np.array([f[0] for f in fingers])
    assert np.all(c.finger_a[~g] != c.finger_b[~g]) and np.all(sets[c.finger_a[~g]] == sets[c.finger_b[~g]])
    assert np.all(c.subject_a[~g] != c.subject_b[~g])
    assert all(c.assignment[c.subjects[s]] == fingers[f] for s, f in zip(c.subject_a[g], c.finger_a[g],
                                                                          strict=True))
    per_finger = np.bincount([fingers.index(f) for f in c.assignment.values()], minlength=len(fingers))
    assert per_finger.tolist() == [3, 3, 3, 3]  # 12 subjects over 4 fingers, round robin
    # identities with one image give impostor comparisons only; at most max_genuine genuine pairs each
    assert np.bincount(c.subject_a[g], minlength=12).max() <= 2


def test_a_finger_enrolled_from_several_impressions_scores_its_best_never_the_probe_itself():
    """The desk's protocol: the reference finger holds k impressions, the first the comparison's own, the
    others drawn among the finger's impressions but never the probe's; the score is the best of the k."""
    from benchmarks.chimeric import (
        IMPRESSIONS,
        FaceSet,
        FingerScores,
        chimeric_comparisons,
        enrolled_finger_raw,
        enrolled_impressions,
        finger_raw_of,
        placement_finger_raw,
        probe_impressions,
    )

    names = [f"id{i:02d}" for i in range(16) for _ in range(3)]
    faces = FaceSet(Path("."), [f"{n}_{k}.jpg" for k, n in enumerate(names)], np.array(names),
                    np.zeros((len(names), 128)), np.ones(len(names), bool), np.full(len(names), 50.0),
                    np.zeros(len(names)))
    fingers = [("DB2_B", f"10{i}") for i in range(4)]
    c = chimeric_comparisons(faces, sorted(set(names)), fingers, max_genuine=3)
    refs = enrolled_impressions(c, 3)
    assert refs.shape == (len(c.genuine), 3)
    assert np.array_equal(refs[:, 0], c.impression_a)
    assert all(len(set(r)) == 3 for r in refs.tolist())
    g = c.genuine
    assert not np.any(refs[g] == c.impression_b[g][:, None]), "a probe is never compared with itself"
    # Raw similarity = a code of (finger a, impression a, finger b, impression b): the best is knowable.
    raw = np.fromfunction(lambda fa, ia, fb, ib: fa * 1000 + ia * 100 + fb * 10 + ib, (4, IMPRESSIONS, 4, IMPRESSIONS))
    raw[0, 5] = np.nan  # one impression of finger 0 failed to extract
    scores = {"DB2_B": FingerScores("DB2_B", "zfm", [f[1] for f in fingers], raw, [])}
    assert np.array_equal(enrolled_finger_raw(c, scores, 1), finger_raw_of(c, scores), equal_nan=True)
    got = enrolled_finger_raw(c, scores, 3)
    want = [np.nanmax([raw[fa, i, fb, ib] for i in r]) if not np.all(np.isnan([raw[fa, i, fb, ib] for i in r]))
            else np.nan for fa, fb, ib, r in zip(c.finger_a, c.finger_b, c.impression_b, refs, strict=True)]
    assert np.array_equal(got, np.array(want), equal_nan=True)
    assert np.all(got[np.isfinite(got)] >= np.nan_to_num(finger_raw_of(c, scores), nan=-1)[np.isfinite(got)])
    # Two placements at the kiosk: the second probe impression is neither the first nor an enrolled one.
    probes = probe_impressions(c, refs, 2)
    assert np.array_equal(probes[:, 0], c.impression_b) and np.all(probes[:, 1] != probes[:, 0])
    assert not np.any(probes[g, 1][:, None] == refs[g]), "a second placement is never an enrolled impression"
    two = enrolled_finger_raw(c, scores, 3, placements=2)
    want2 = [np.nanmax(v) if not np.all(np.isnan(v)) else np.nan for v in
             ([raw[fa, i, fb, q] for i in r for q in pq] for fa, fb, r, pq in zip(c.finger_a, c.finger_b, refs, probes,
                                                                                   strict=True))]
    assert np.array_equal(two, np.array(want2), equal_nan=True)
    per_placement = placement_finger_raw(c, scores, 3, placements=2)
    assert per_placement.shape == (len(c.genuine), 2)
    assert np.array_equal(per_placement[:, 0], got, equal_nan=True)  # the first placement is the one-call probe
    assert np.array_equal(np.fmax.reduce(per_placement, axis=1), two, equal_nan=True)
    with pytest.raises(ValueError):
        probe_impressions(c, refs, IMPRESSIONS - 2)  # 3 enrolled + 6 placements: more than the 8 impressions


def test_the_union_bound_check_counts_every_enrolment_of_every_finger_pair():
    """best_of_k_tail: one impression of every finger that out-scores the rest gives a best of three that
    passes exactly three times as often as one comparison (it is in 3 of every 8 enrolments)."""
    from benchmarks.chimeric import IMPRESSIONS, FingerScores, best_of_k_tail

    class Identity:
        def score(self, raw: np.ndarray) -> np.ndarray:
            return raw

    raw = np.zeros((4, IMPRESSIONS, 4, IMPRESSIONS))
    raw[:, 0] = 5.0  # impression 0 of each finger scores 5 against everything
    for f in range(4):
        raw[f, :, f, :] = np.nan  # same-finger cells are not impostor comparisons (never read)
    rows = best_of_k_tail(FingerScores("DB1_B", "zfm", ["1", "2", "3", "4"], raw, []), Identity(), 3,
                          thresholds=(1.0, 6.0))
    assert rows[0]["n_single"] == 4 * 3 * IMPRESSIONS * IMPRESSIONS
    assert rows[0]["single"] == pytest.approx(1 / 8) and rows[0]["best_of_k"] == pytest.approx(3 / 8)
    assert rows[0]["ratio"] == pytest.approx(3.0) and rows[0]["stated"] == pytest.approx(0.1)
    assert rows[1]["count_single"] == 0 and np.isnan(rows[1]["ratio"])


def test_a_kiosk_transaction_is_decided_call_by_call():
    """Up to three calls, the next only when the one before was not accepted: hand-made per-call scores."""
    from benchmarks.chimeric import transaction_figures

    calls = np.array([[3.5, 0.0, 0.0],   # genuine, accepted at once
                      [1.0, 3.2, 9.0],   # genuine, accepted on the second call (the third is never made)
                      [1.0, 2.0, 2.9],   # genuine, turned away after three calls
                      [0.5, 0.1, 3.0],   # impostor, accepted on the third call
                      [0.5, 0.1, 0.2],   # impostor, turned away
                      [4.0, 0.0, 0.0]])  # impostor, accepted at once
    genuine = np.array([True, True, True, False, False, False])
    f = transaction_figures(calls, genuine, 3.0)
    assert f["genuine"] == {"n": 3, "accepted": 2 / 3, "asked_again": 2 / 3, "mean_calls": 2.0}
    assert f["impostor"] == {"n": 3, "accepted": 2 / 3, "asked_again": 2 / 3, "mean_calls": 7 / 3}
    one = transaction_figures(calls[:, :1], genuine, 3.0)  # a single call: nobody is asked again
    assert one["genuine"]["accepted"] == 1 / 3 and one["genuine"]["asked_again"] == 0.0
    assert one["impostor"]["mean_calls"] == 1.0


def test_a_retry_protocol_states_each_call_as_one_of_its_attempts():
    """A call of a kiosk transaction of N attempts: the finger is the best of its own call's comparisons (less
    log10(enrolled)), the fused score less log10(N); a modality alone, as a transaction, less log10(N) too."""
    from dataclasses import replace

    from benchmarks.chimeric import FusionChoice, Protocol, attempt_scores
    from biometrics.scores import ScoreCalibration

    face = np.array([3.0, 0.1, np.nan])
    one_call, retry = Protocol(3, 2), Protocol(3, 2, retry=True)
    assert (one_call.attempts, retry.attempts) == (1, 2)
    assert np.array_equal(one_call.transaction(face), face, equal_nan=True)
    got = retry.transaction(face)
    assert np.allclose(got[:2], [3.0 - np.log10(2), 0.0]) and np.isnan(got[2])
    assert retry.tag == ", 3 impressions enrolled, up to 2 attempts"
    cal = ScoreCalibration.fit(np.linspace(0, 1, 1000), higher_is_better=True, modality="fingerprint")
    raw = np.array([0.999, np.nan])
    assert np.allclose(one_call.finger_scores(cal, raw)[0], cal.score(0.999) - np.log10(6))  # 3 x 2 in one call
    assert np.allclose(retry.finger_scores(cal, raw)[0], cal.score(0.999) - np.log10(3))  # 3 x 1 a call
    assert np.isnan(retry.finger_scores(cal, raw)[1])
    choice = FusionChoice("product", "", None, (None, None), "", {}, {}, {})
    cols = np.array([[3.0, 4.0], [0.0, 0.0]])
    alone = choice.fused(cols)
    assert np.allclose(replace(choice, attempts=2).fused(cols), np.maximum(0.0, alone - np.log10(2)))
    finger = np.array([[4.0, 1.0], [0.0, 5.0]])
    same = attempt_scores(choice, np.array([3.0, 2.0]), finger)  # one face score for every call
    own = attempt_scores(choice, np.array([[3.0, 0.0], [2.0, 2.0]]), finger)  # a face captured per call
    assert np.allclose(same[:, 0], own[:, 0]) and np.allclose(same[1], own[1])
    assert own[0, 1] < same[0, 1]  # the second call's new face scored 0 there
    assert np.allclose(same, [[choice.fused(np.array([[f, g]]))[0] for g in row] for f, row in zip([3.0, 2.0], finger,
                                                                                                   strict=True)])



def _clustered_faces(rng: np.random.Generator, identities: int, images: int, spread: float, centres: float):
    """A FaceSet of ``identities`` x ``images`` random templates, each identity's around its own centre (no real
    data), with its image names (identity per image) and templates."""
    from benchmarks.chimeric import FaceSet

    names = [f"id{i:02d}" for i in range(identities) for _ in range(images)]
    templates = rng.standard_normal((len(names), 128)) * spread
    templates += np.repeat(rng.standard_normal((identities, 128)) * centres, images, axis=0)
    faces = FaceSet(Path("."), [f"{n}_{k}.jpg" for k, n in enumerate(names)], np.array(names), templates,
                    np.ones(len(names), bool), np.full(len(names), 50.0), np.zeros(len(names)))
    return faces, names, templates


def test_frame_scores_can_give_the_second_frame_alone_without_changing_the_rules():
    """``second=True`` adds the second probe frame on its own (uncorrected, like the first) and changes
    nothing else: same comparisons, same rule scores."""
    from benchmarks.frames import FRAME_RULES, frame_scores
    from biometrics.scores import ScoreCalibration

    rng = np.random.default_rng(3)
    faces, names, templates = _clustered_faces(rng, 12, 4, 0.05, 0.1)
    cal = ScoreCalibration.fit(rng.uniform(0.3, 1.2, 1000), higher_is_better=False, modality="face")
    plain, comps = frame_scores(faces, sorted(set(names)), 2, 3, cal)
    both, comps2 = frame_scores(faces, sorted(set(names)), 2, 3, cal, second=True)
    assert [c.name for c in plain] == list(FRAME_RULES) and [c.name for c in both] == [*FRAME_RULES, "second"]
    assert np.array_equal(comps.genuine, comps2.genuine) and np.array_equal(comps.subject_b, comps2.subject_b)
    for a, b in zip(plain, both, strict=False):
        assert np.array_equal(a.scores, b.scores)
    single, second = both[0].scores, both[-1].scores
    assert not np.array_equal(single, second)  # another photograph of the traveller, another score
    assert set(np.round(second, 9)) <= set(np.round(cal.score(np.linalg.norm(
        templates[:, None, :] - templates[None, :, :], axis=2).ravel()), 9))  # a single-frame score, uncorrected


def _small_comparisons():
    """Chimeric comparisons of 12 identities with 3 images each over 4 fingers (no real data)."""
    from benchmarks.chimeric import FaceSet, chimeric_comparisons

    names = [f"id{i:02d}" for i in range(12) for _ in range(3)]
    faces = FaceSet(Path("."), [f"{n}_{k}.jpg" for k, n in enumerate(names)], np.array(names),
                    np.zeros((len(names), 128)), np.ones(len(names), bool), np.full(len(names), 50.0),
                    np.zeros(len(names)))
    return chimeric_comparisons(faces, sorted(set(names)), [("DB2_B", f"10{i}") for i in range(4)], max_genuine=3)


def test_the_fused_report_without_bootstrap_says_the_interval_was_not_computed():
    """``--bootstrap 0``: a curve with errors has no interval; the report says so instead of a TypeError."""
    from benchmarks.chimeric import Curve, _configuration_report, summarise_curves

    c = _small_comparisons()
    rng = np.random.default_rng(0)
    scores = np.where(c.genuine, rng.uniform(1, 5, len(c.genuine)), rng.uniform(0, 4, len(c.genuine)))
    sections = summarise_curves([Curve("fused", scores)], c, 3.0, replicates=0)
    e = sections[0]["fnmr_at_fmr"][m.rate_key(1e-4)]
    assert e["errors"] > 0 and e["interval"] is None
    floors = {"face": None, "finger": None, "why": "none", "candidates": []}
    config = {"enrolled_impressions": 1, "test": sections, "test_other_rules": [], "test_attacks": {},
              "target": {"fused_fnmr": e["fnmr"], "fused_interval": e["interval"], "met": False},
              "dev": {"contradiction_floors": floors, "fnmr_at_fmr_by_rule": {}, "chosen_rule": "product",
                      "why": "", "calibration_checks": {}},
              "test_by_finger_set": {}, "test_two_face_frames": sections}
    text = "\n".join(_configuration_report(config))
    assert e["interval_kind"].startswith("not computed")
    assert "Target fused FNMR <= 1% at FMR 0.01%" in text and "[interval not computed]" in text


def test_a_modality_that_failed_to_acquire_is_left_out_of_the_fusion_as_the_service_does():
    """A failed face (or finger) is dropped and the other modality fused alone, row by row as the service's
    ``fuse_modalities`` does; never scored 0, which the likelihood ratio reads as strong evidence against."""
    from benchmarks.chimeric import FusionChoice, _fused_columns
    from biometrics.fingerprint.fusion import CONTRADICTION_FLOORS, fuse_modalities, shipped_fusion

    face = np.array([np.nan, 3.0, np.nan, 2.0, 0.5])
    finger = np.array([4.0, np.nan, np.nan, 5.0, 6.0])
    cols = _fused_columns({"face": face, "zfm": finger}, "zfm")
    floors = (CONTRADICTION_FLOORS["face"], CONTRADICTION_FLOORS["fingerprint"])
    got = FusionChoice("likelihood ratio", "", shipped_fusion(), floors, "", {}, {}, {}).fused(cols)
    service = [fuse_modalities([(name, s) for name, s in (("face", f), ("fingerprint", g)) if np.isfinite(s)])
               for f, g in zip(face, finger, strict=True)]
    assert np.allclose(np.delete(got, 2), np.delete(service, 2))
    assert got[0] == 4.0 and got[1] == 3.0
    assert np.isnan(got[2]), "neither modality acquired: a failure to acquire, never a match"
    for rule in ("product", "max"):
        alone = FusionChoice(rule, "", None, (None, None), "", {}, {}, {}).fused(cols)
        assert alone[0] == 4.0 and alone[1] == 3.0 and np.isnan(alone[2])


def test_the_likelihood_ratio_is_fitted_on_the_genuine_comparisons_where_both_modalities_were_acquired():
    """choose_fusion's densities leave out the rows where a modality failed (no genuine mass at s = 0)."""
    from benchmarks.chimeric import FaceSet, chimeric_comparisons, choose_fusion
    from biometrics.fingerprint.fusion import LikelihoodRatioFusion

    names = [f"id{i:02d}" for i in range(60) for _ in range(3)]
    faces = FaceSet(Path("."), [f"{n}_{k}.jpg" for k, n in enumerate(names)], np.array(names),
                    np.zeros((len(names), 128)), np.ones(len(names), bool), np.full(len(names), 50.0),
                    np.zeros(len(names)))
    dev = chimeric_comparisons(faces, sorted(set(names)), [("DB1_B", f"10{i}") for i in range(6)], max_genuine=3)
    rng = np.random.default_rng(5)
    g, n = dev.genuine, len(dev.genuine)
    face = np.where(g, rng.uniform(2, 8, n), rng.exponential(0.4, n))
    finger = np.where(g, rng.uniform(3, 10, n), rng.exponential(0.4, n))
    face[np.flatnonzero(g)[::4]] = np.nan  # a quarter of the genuine faces failed to acquire
    finger[np.flatnonzero(g)[1::7]] = np.nan
    choice = choose_fusion(dev, {"face": face, "zfm": finger}, np.column_stack([face, finger])[~g][:20], 3.0)
    both = g & np.isfinite(face) & np.isfinite(finger)
    assert choice.lr == LikelihoodRatioFusion.fit([face[both], finger[both]])


def test_the_shipped_configuration_rows_score_as_the_service_does():
    """Beside its own rows (a face calibration refitted on dev), the fused benchmark scores the same test
    comparisons as the service does: the shipped face and fingerprint calibrations, the service's fusion and
    face floor (``fuse_modalities``), whatever calibration the run itself was given."""
    import argparse

    from benchmarks.chimeric import (
        IMPRESSIONS,
        FingerScores,
        Protocol,
        _Run,
        chimeric_comparisons,
        enrolled_finger_raw,
        face_distances,
        finger_raw_of,
        shipped_configuration,
    )
    from biometrics.fingerprint.fusion import best_of_k, fuse_modalities, shipped_fusion
    from biometrics.scores import ScoreCalibration

    rng = np.random.default_rng(7)
    faces, names, _ = _clustered_faces(rng, 16, 3, 0.04, 0.05)
    fingers = [("DB2_B", f"10{i}") for i in range(4)]
    test = chimeric_comparisons(faces, sorted(set(names)), fingers, max_genuine=3)
    raw = rng.uniform(0.0, 1.0, (4, IMPRESSIONS, 4, IMPRESSIONS))
    scores = {("DB2_B", v): FingerScores("DB2_B", v, [f[1] for f in fingers], raw, []) for v in ("whole", "zfm")}
    own = ScoreCalibration.fit(rng.uniform(0, 1, 1000), higher_is_better=True, modality="fingerprint")
    run = _Run(argparse.Namespace(bootstrap=0), faces, scores, None, {"whole": own, "zfm": own}, test, test,
               sorted(set(names)), 3.0, ([], test))
    face_curve, fused_curve = shipped_configuration(run, Protocol(), shipped_fusion())
    face = ScoreCalibration.for_modality("face").score(face_distances(faces, test.image_a, test.image_b))
    zfm = {"DB2_B": scores[("DB2_B", "zfm")]}
    finger = ScoreCalibration.for_modality("fingerprint").score(finger_raw_of(test, zfm))
    assert np.allclose(face_curve.scores, face)
    service = [fuse_modalities([("face", f), ("fingerprint", g)]) for f, g in zip(face, finger, strict=True)]
    assert np.allclose(fused_curve.scores, service)
    assert "shipped" in fused_curve.name and "shipped" in face_curve.name
    retry = Protocol(3, 2, retry=True)
    face_tx, fused_tx = shipped_configuration(run, retry, shipped_fusion())
    assert np.allclose(face_tx.scores, best_of_k(face, 2))  # a transaction of two attempts, as its own rows
    best = best_of_k(ScoreCalibration.for_modality("fingerprint").score(
        enrolled_finger_raw(test, zfm, 3, 2)), 3)  # its best placement, of 3
    service_tx = [fuse_modalities([("face", f), ("fingerprint", g)]) for f, g in zip(face, best, strict=True)]
    assert np.allclose(fused_tx.scores, best_of_k(np.array(service_tx), 2))  # each call stated as one of two


def test_the_service_rule_is_scored_beside_a_dev_choice_that_differs_from_it():
    """The dev choice may settle for the product rule (a tie); the service fuses with the likelihood ratio and
    its floors all the same, so the benchmark scores that rule too, on the densities fitted on dev."""
    from benchmarks.chimeric import FusionChoice, service_floors, service_rule
    from biometrics.fingerprint.fusion import CONTRADICTION_FLOORS, shipped_fusion

    lr = shipped_fusion()
    product = FusionChoice("product", "tie", lr, (1.0, None), "", {}, {}, {}, attempts=2)
    got = service_rule(product)
    assert got is not None and (got.rule, got.floors, got.lr, got.attempts) == ("likelihood ratio", service_floors(),
                                                                                lr, 2)
    assert service_floors() == (CONTRADICTION_FLOORS["face"], CONTRADICTION_FLOORS["fingerprint"])
    assert service_rule(FusionChoice("likelihood ratio", "", lr, service_floors(), "", {}, {}, {})) is None
    assert service_rule(FusionChoice("likelihood ratio", "", lr, (2.0, None), "", {}, {}, {})) is not None


def test_exhaustive_comparisons_take_the_pipelines_template_size_with_a_failed_image() -> None:
    """A review: a failed image's stand-in was 128 zeros whatever the pipeline's size, so a pipeline of another
    size with one failure could not be stacked."""
    from benchmarks.accuracy import Extracted, PipelineRun, exhaustive_comparisons

    images = ["a/a_0001.jpg", "a/a_0002.jpg", "b/b_0001.jpg"]
    extracted = {i: Extracted(template=np.full(64, float(k))) for k, i in enumerate(images)}
    extracted["b/b_0001.jpg"] = Extracted(error="no face")
    sim, same, _, _ = exhaustive_comparisons(PipelineRun("p", extracted, np.array([]), "", 0.0, "", 0.0), images,
                                             np.negative)
    assert list(same) == [True, False, False]
    assert sim[0] == pytest.approx(-8.0) and np.isnan(sim[1:]).all()
