"""The hybrid comparison on hand-made ridge maps: the stored ridge features (``ridgemap.py``), the alignment
chosen by the flow, the ridge pattern's correlation in that alignment and the fusion with the MCC score."""

from __future__ import annotations

import numpy as np
import pytest

from biometrics.fingerprint import hybrid, matching
from biometrics.fingerprint.ridgemap import RidgeMap, ridge_map

H, W = 240, 260
PERIOD = 9.0


def circles(cx: float, cy: float, *, phi: float = 0.0, tx: float = 0.0, ty: float = 0.0, period: float = PERIOD,
            breaks: float = 0.0) -> RidgeMap:
    """Ridge map of concentric ridges about (cx, cy) in the frame of a capture B = R(phi) A + t (so the same
    finger seen in another placement), optionally broken (``breaks``: share of the image lifted to valley in
    blotches, as a dry finger)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    # the point of A shown at (x, y) of this capture
    c, s = np.cos(phi), np.sin(phi)
    xa = c * (x - tx) + s * (y - ty)
    ya = -s * (x - tx) + c * (y - ty)
    r = np.hypot(xa - cx, ya - cy)
    enhanced = np.cos(2 * np.pi * r / period)
    if breaks:
        rng = np.random.default_rng(7)
        noise = rng.normal(size=(H // 8 + 1, W // 8 + 1))
        blotch = np.kron(noise, np.ones((8, 8)))[:H, :W]
        enhanced = np.where(blotch > np.quantile(blotch, 1 - breaks), -1.0, enhanced)
    flow = np.mod(np.arctan2(ya - cy, xa - cx) + np.pi / 2 + phi, np.pi)
    mask = np.zeros((H, W), dtype=bool)
    mask[20:H - 20, 20:W - 20] = True
    return ridge_map(enhanced.astype(np.float32), flow.astype(np.float32), mask)


def test_the_ridge_map_survives_its_bytes():
    m = circles(120, 110)
    back = RidgeMap.from_bytes(m.to_bytes())
    for name in ("flow", "coherence", "flow_mask", "mask", "ridges"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    assert len(m.to_bytes()) < H * W / 8  # compressed: under one bit a pixel
    with pytest.raises(ValueError):
        RidgeMap.from_bytes(m.to_bytes()[:4] + __import__("zlib").compress(b"short"))


def test_the_same_pattern_agrees_in_its_own_alignment_only():
    a = circles(120, 110)
    b = circles(120, 110, phi=0.3, tx=25.0, ty=-15.0)  # the same finger placed otherwise
    right = (0.3, 25.0, -15.0)
    agreement, overlap = hybrid.flow_agreement(a, b, *right)
    assert agreement > 0.95 and overlap > 0.6
    assert hybrid.pattern_correlation(a, b, *right) > 0.8
    wrong = (0.3, 0.0, 0.0)  # the rotation right, the placement 29 px off
    assert hybrid.flow_agreement(a, b, *wrong)[0] < agreement - 0.2
    assert hybrid.pattern_correlation(a, b, *wrong) < 0.4
    # among candidate alignments the one whose flow agrees is kept
    assert hybrid.best_alignment(a, b, [wrong, right]) == right
    assert hybrid.best_alignment(a, b, []) is None


def test_broken_ridges_keep_their_pattern_another_finger_does_not():
    a = circles(120, 110)
    dry = circles(120, 110, phi=0.3, tx=25.0, ty=-15.0, breaks=0.25)
    other = circles(60, 170, phi=0.3, tx=25.0, ty=-15.0, period=11.0)
    right = (0.3, 25.0, -15.0)
    broken = hybrid.pattern_correlation(a, dry, *right)
    assert broken > 0.55
    assert hybrid.pattern_correlation(a, other, *right) < broken - 0.3


def test_the_ridge_score_weighs_in_above_its_floor_only():
    assert matching.fuse(0.02, matching.HYBRID_FLOOR - 0.1) == 0.02
    assert matching.fuse(0.02, matching.HYBRID_FLOOR + 0.4) == pytest.approx(0.02 + matching.HYBRID_WEIGHT * 0.4)
    assert matching.fuse(0.999, 1.0) == 1.0  # still a similarity in [0, 1]


def test_a_template_keeps_its_ridge_map_and_version_1_is_refused():
    from pathlib import Path

    from PIL import Image

    import biometrics.fingerprint as fp
    from biometrics.fingerprint.template import VERSION, TemplateFormatError

    image = np.array(Image.open(Path(__file__).parent / "data" / "fingerprints" / "DB1_B_101_1.png").convert("L"))
    t = fp.extract_fingerprint(image)
    assert t.ridge_map is not None and t.ridge_map.shape == image.shape
    data = t.to_bytes()
    back = fp.FingerprintTemplate.from_bytes(data)
    np.testing.assert_array_equal(back.ridge_map.ridges, t.ridge_map.ridges)
    assert fp.compare_fingerprints(back, back) == pytest.approx(fp.compare_fingerprints(t, t))
    assert VERSION == 2
    with pytest.raises(TemplateFormatError, match="version 1"):
        fp.FingerprintTemplate.from_bytes(data[:4] + bytes([1]) + data[5:])
