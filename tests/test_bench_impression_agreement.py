"""The impression-agreement benchmark's figures, on hand-made pair scores: each rule counted as the module says."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image

import biometrics.fingerprint as fingerprint
from benchmarks.impression_agreement import main, pair_scores, rule_rates
from biometrics.errors import PoorQuality
from biometrics.fingerprint import ENROL_MIN_QUALITY
from biometrics.fingerprint.extraction import MIN_QUALITY
from biometrics.scores import ScoreCalibration


def test_the_rules_are_counted_on_every_three_and_every_two_plus_one_other() -> None:
    names = [f"{finger}_{i}" for finger in (101, 102) for i in (1, 2, 3)]
    scores = {(a, b): (12.0 if a[:3] == b[:3] else 0.1) for a, b in itertools.combinations(names, 2)}
    scores[("101_1", "101_3")] = 0.5  # 101_1 and 101_3 meet through 101_2 only
    scores[("101_2", "102_1")] = 2.5  # one different-finger pair over the agreement score
    f = rule_rates(scores, 2.0)
    assert (f["genuine_pairs"], f["impostor_pairs"], f["three"]) == (6, 9, 2)
    assert f["fnmr_pair"] == pytest.approx(1 / 6) and f["fmr_pair"] == pytest.approx(1 / 9)
    assert f["three_refused"] == 0.0  # 101's three are joined through 101_2
    assert f["three_refused_every_pair"] == pytest.approx(1 / 2)  # but not every pair of them matches
    # 2 of a finger + 1 of the other: 3 pairs x 3 others, both ways = 18; joined when 101_2 and 102_1 both in it
    # and the two of one finger match each other (not 101_1 with 101_3): 101_2 + (101_1 or 101_3) + 102_1 and
    # 102_1 + (102_2 or 102_3) + 101_2
    assert f["mixed"] == 18 and f["mixed_passed"] == pytest.approx(4 / 18)
    assert f["mixed_passed_every_pair"] == 0.0


def test_an_image_enrolment_refuses_is_reported_apart_and_not_counted_as_a_disagreement(
        tmp_path, monkeypatch, capsys) -> None:
    """Stub extraction on hand-made images: 101_4 is refused at any quality (as DB1_B's ZFM cut of 101_5 is),
    102_4 only at the enrolment's (quality 25: over MIN_QUALITY, under ENROL_MIN_QUALITY). Neither reaches the
    agreement check, so neither is in a pair or a three; the command names both after its table."""
    names = [f"{finger}_{i}" for finger in (101, 102) for i in (1, 2, 3, 4)]
    folder = tmp_path / "DB1_B"
    folder.mkdir()
    for level, name in enumerate(names):  # one grey level an image (the ZFM cut keeps 16), its name's
        Image.fromarray(np.full((300, 300), level * 17, dtype=np.uint8)).save(folder / f"{name}.png")
    quality = {"101_4": 5.0, "102_4": 25.0}
    calls = []

    def extract(grey, *, dpi=500, min_quality=MIN_QUALITY, check_ridges=False):
        calls.append((min_quality, check_ridges))
        name = names[int(grey[0, 0]) // 17]
        if quality.get(name, 80.0) < min_quality:
            raise PoorQuality(f"{name}: quality {quality[name]:g}")
        return name

    class Calibration:
        @staticmethod
        def score(raw: float) -> float:
            return 12.0 * raw

    monkeypatch.setattr(fingerprint, "extract_fingerprint", extract)
    monkeypatch.setattr(fingerprint, "compare_fingerprints", lambda a, b: float(a[:3] == b[:3]))
    monkeypatch.setattr(ScoreCalibration, "for_modality", staticmethod(lambda modality: Calibration()))

    assert main(["--data", str(tmp_path), "--sets", "DB1_B", "--json", str(tmp_path / "agree.json")]) == 0
    out = capsys.readouterr().out
    assert "| DB1_B | 0.00% of 6 | 0.00% of 9 | 0.00% / 0.00% of 2 |" in out
    assert "DB1_B 2 of 8; 101_4 (PoorQuality: 101_4: quality 5); 102_4 (PoorQuality: 102_4: quality 25)" in out
    written = json.loads((tmp_path / "agree.json").read_text())["sets"]["DB1_B"]
    assert sorted(written["refused"]) == ["101_4", "102_4"] and written["genuine_pairs"] == 6

    scores, refused = pair_scores(folder, 500)
    assert set(calls) == {(ENROL_MIN_QUALITY, True)}  # as CheckpointService extracts an enrolment's fingers
    assert sorted(refused) == ["101_4", "102_4"] and "PoorQuality" in refused["102_4"]
    assert not {n for pair in scores for n in pair} & set(refused)  # in no pair
    f = rule_rates(scores, 2.0)
    assert (f["genuine_pairs"], f["impostor_pairs"], f["three"], f["mixed"]) == (6, 9, 2, 18)
    assert f["fnmr_pair"] == 0.0 and f["three_refused"] == 0.0 and f["three_refused_every_pair"] == 0.0
