"""Fingerprint extraction and MCC comparison on real FVC2002 samples (tests/data/fingerprints)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import biometrics.fingerprint as fp
from biometrics.errors import InvalidSample, PoorQuality
from biometrics.fingerprint import similarity
from biometrics.fingerprint.template import TemplateFormatError

DATA = Path(__file__).parent / "data" / "fingerprints"


def load(name: str) -> np.ndarray:
    return np.array(Image.open(DATA / f"{name}.png").convert("L"))


@pytest.fixture(scope="module")
def templates() -> dict[str, fp.FingerprintTemplate]:
    names = ["DB1_B_101_1", "DB1_B_101_2", "DB1_B_101_3", "DB1_B_102_1", "DB1_B_103_1", "DB3_B_101_1"]
    return {n: fp.extract_fingerprint(load(n)) for n in names}


def reference_score(a: fp.FingerprintTemplate, b: fp.FingerprintTemplate) -> float:
    ax, ay, aa = a.cylinder_geometry()
    bx, by, ba = b.cylinder_geometry()
    gamma = similarity.local_similarities(aa, a.bits, a.valid, ba, b.bits, b.valid)
    return similarity.relaxed_score(gamma, ax, ay, aa, bx, by, ba)


def test_extraction_finds_plausible_minutiae(templates):
    for name, t in templates.items():
        h, w = load(name).shape
        assert 12 <= t.minutiae_count <= 100, name
        assert t.cylinder_count >= 8, name
        m = t.minutiae
        assert ((m["x"] >= 0) & (m["x"] < w) & (m["y"] >= 0) & (m["y"] < h)).all()
        assert ((m["angle"] >= 0) & (m["angle"] < 2 * np.pi)).all()
        assert set(np.unique(m["kind"])) == {0, 1}, "both endings and bifurcations"
        assert t.quality >= 40  # good FVC2002 impressions (the score is 0..100 by construction)


def test_same_finger_scores_higher_than_different_fingers(templates):
    genuine = [fp.compare_fingerprints(templates["DB1_B_101_1"], templates[n])
               for n in ("DB1_B_101_2", "DB1_B_101_3")]
    genuine.append(fp.compare_fingerprints(templates["DB1_B_101_2"], templates["DB1_B_101_3"]))
    impostor = [fp.compare_fingerprints(templates[a], templates[b]) for a, b in [
        ("DB1_B_101_1", "DB1_B_102_1"), ("DB1_B_101_1", "DB1_B_103_1"), ("DB1_B_102_1", "DB1_B_103_1"),
        ("DB1_B_101_2", "DB1_B_102_1"), ("DB1_B_101_1", "DB3_B_101_1")]]
    assert min(genuine) > 2 * max(impostor)


def test_calibrated_scores_separate_genuine_from_impostor(templates):
    from biometrics.scores import ScoreCalibration

    calibration = ScoreCalibration.for_modality("fingerprint")
    genuine = calibration.score(fp.compare_fingerprints(templates["DB1_B_101_1"], templates["DB1_B_101_2"]))
    impostor = calibration.score(fp.compare_fingerprints(templates["DB1_B_101_1"], templates["DB1_B_102_1"]))
    assert genuine >= 3.0 > impostor


def test_compiled_matcher_agrees_with_numpy_reference(templates):
    names = list(templates)
    for a in names[:3]:
        for b in names:
            expected = reference_score(templates[a], templates[b])
            assert fp.compare_fingerprints(templates[a], templates[b]) == pytest.approx(expected, abs=1e-6)


def test_gallery_matches_one_to_one_and_takes_best_impression(templates):
    probe = templates["DB1_B_101_1"]
    refs = [templates[n] for n in ("DB1_B_101_2", "DB1_B_102_1", "DB1_B_103_1", "DB3_B_101_1")]
    scores = fp.compare_fingerprint_gallery(probe, refs)
    assert scores.shape == (4,)
    np.testing.assert_allclose(scores, [fp.compare_fingerprints(probe, r) for r in refs], atol=1e-12)
    assert int(np.argmax(scores)) == 0
    multi = [templates["DB1_B_102_1"], templates["DB1_B_101_3"], templates["DB1_B_101_2"]]
    best = max(fp.compare_fingerprints(probe, t) for t in multi)
    assert fp.compare_fingerprints(probe, multi) == pytest.approx(best)
    assert fp.compare_fingerprint_gallery(probe, [multi, [templates["DB1_B_103_1"]]])[0] == pytest.approx(best)
    packed = fp.PackedGallery(refs)
    np.testing.assert_allclose(packed.scores(probe), scores)
    assert fp.compare_fingerprint_gallery(probe, []).shape == (0,)


def test_serialisation_round_trip(templates):
    t = templates["DB1_B_101_1"]
    data = t.to_bytes()
    back = fp.FingerprintTemplate.from_bytes(data)
    assert back.to_bytes() == data
    assert back.minutiae_count == t.minutiae_count
    assert back.quality == round(t.quality)
    np.testing.assert_array_equal(back.bits, t.bits)
    np.testing.assert_array_equal(back.valid, t.valid)
    other = templates["DB1_B_101_2"]
    assert fp.compare_fingerprints(back, other) == fp.compare_fingerprints(t, other)


def test_serialisation_refuses_unknown_versions_and_garbage(templates):
    data = bytearray(templates["DB1_B_101_1"].to_bytes())
    data[4] = 99
    with pytest.raises(TemplateFormatError, match="version 99"):
        fp.FingerprintTemplate.from_bytes(bytes(data))
    with pytest.raises(TemplateFormatError):
        fp.FingerprintTemplate.from_bytes(templates["DB1_B_101_1"].to_bytes()[:-3])
    with pytest.raises(TemplateFormatError):
        fp.FingerprintTemplate.from_bytes(b"not a template at all")
    assert issubclass(TemplateFormatError, InvalidSample)


def test_blank_and_noise_images_are_refused_as_poor_quality():
    rng = np.random.default_rng(5)
    for grey in (np.full((288, 256), 255, np.uint8), np.zeros((288, 256), np.uint8),
                 rng.integers(0, 256, (288, 256), dtype=np.uint8)):
        with pytest.raises(PoorQuality) as info:
            fp.extract_fingerprint(grey)
        assert str(info.value)
        assert fp.fingerprint_quality(grey) < fp.MIN_QUALITY


def test_garbage_input_is_invalid_sample():
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((300, 300, 7)), "image", np.full((200, 200), np.nan)):
        with pytest.raises(InvalidSample):
            fp.extract_fingerprint(bad)
    with pytest.raises(InvalidSample):
        fp.extract_fingerprint(load("DB1_B_101_1"), dpi=5)


def partial_touch(grey: np.ndarray, side: int = 90) -> np.ndarray:
    """A ZFM-sized capture where only a small patch of the finger touched the sensor."""
    canvas = np.full((288, 256), 255, np.uint8)
    h, w = grey.shape
    patch = grey[h // 2 - side // 2:h // 2 + side // 2, w // 2 - side // 2:w // 2 + side // 2]
    canvas[144 - side // 2:144 + side // 2, 128 - side // 2:128 + side // 2] = patch
    return canvas


def test_quality_ranks_a_full_print_above_a_partial_touch():
    grey = load("DB1_B_101_1")
    good = fp.fingerprint_quality(grey)
    assert fp.fingerprint_quality(partial_touch(grey)) < fp.ENROL_MIN_QUALITY <= good


def test_enrolment_threshold_refuses_a_partial_touch():
    grey = load("DB1_B_101_1")
    with pytest.raises(PoorQuality, match="quality"):
        fp.extract_fingerprint(partial_touch(grey), min_quality=fp.ENROL_MIN_QUALITY)
    assert fp.extract_fingerprint(grey, min_quality=fp.ENROL_MIN_QUALITY).quality >= fp.ENROL_MIN_QUALITY


def test_rotated_and_shifted_impression_still_matches(templates):
    grey = load("DB1_B_101_2")
    h, w = grey.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 30, 1.0)
    matrix[:, 2] += (25, -15)
    moved = cv2.warpAffine(grey, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)
    probe = fp.extract_fingerprint(moved)
    straight = fp.compare_fingerprints(templates["DB1_B_101_1"], templates["DB1_B_101_2"])
    rotated = fp.compare_fingerprints(templates["DB1_B_101_1"], probe)
    impostors = [fp.compare_fingerprints(probe, templates[n]) for n in ("DB1_B_102_1", "DB1_B_103_1")]
    from biometrics.scores import ScoreCalibration

    calibration = ScoreCalibration.for_modality("fingerprint")
    assert rotated > 0.6 * straight
    assert rotated > 2 * max(impostors)
    # the moved image still matches its own source and the other impression at FMR <= 1/1000
    assert calibration.score(fp.compare_fingerprints(probe, templates["DB1_B_101_2"])) >= 3.0
    assert calibration.score(rotated) >= 3.0


def test_finger_positions_follow_iso_19794_2():
    assert fp.FingerPosition.parse(1) is fp.FingerPosition.RIGHT_THUMB
    assert fp.FingerPosition.parse(10) is fp.FingerPosition.LEFT_LITTLE
    assert fp.FingerPosition.parse(0) is fp.FingerPosition.UNKNOWN
    with pytest.raises(InvalidSample):
        fp.FingerPosition.parse(11)


def test_local_pairs_are_one_to_one_best_first():
    # minutia 0 of A resembles every minutia of B best; it may be paired once only
    gamma = np.array([[0.9, 0.8, 0.7],
                      [0.5, 0.0, 0.1],
                      [0.2, 0.6, 0.0]])
    top = similarity.one_to_one_pairs(gamma, 3)
    pairs = [divmod(int(k), 3) for k in top]
    assert pairs == [(0, 0), (2, 1), (1, 2)]
    assert [divmod(int(k), 3) for k in similarity.one_to_one_pairs(gamma, 2)] == [(0, 0), (2, 1)]


def bridged_ridges() -> np.ndarray:
    """Skeleton of two parallel horizontal ridges one period (9 px) apart, joined by a short vertical bridge."""
    skel = np.zeros((100, 160), dtype=bool)
    skel[40, :] = skel[49, :] = True
    skel[41:49, 80] = True
    return skel


def test_a_bridge_across_the_ridge_flow_gives_no_minutiae(monkeypatch):
    from biometrics.fingerprint import minutiae

    skel = bridged_ridges()
    mask = np.ones(skel.shape, dtype=bool)
    theta = np.zeros(skel.shape, dtype=np.float32)  # ridges run along x
    coherence = np.ones(skel.shape, dtype=np.float32)
    assert len(minutiae.extract_minutiae(skel, mask, theta, coherence, 9.0)) == 0
    monkeypatch.setattr(minutiae, "BRIDGE_PERIODS", 0.0)
    found = minutiae.extract_minutiae(skel, mask, theta, coherence, 9.0)
    assert len(found) == 2 and (found["kind"] == minutiae.BIFURCATION).all()
