"""The ridge-signal measure (``checkpoint-bench fingerprint-signal``) on hand-made ridges of known width:
widths come out as drawn, a 3x3 grey dilation erases 2 px ridges and keeps 5 px ones, a 5x5 erosion closes
narrow valleys and not wide ones, a blur keeps the ridge band and noise does not, and the patches the
measure splits by are the ones ``degrade`` draws."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import fingerprint_signal as fs
from benchmarks.degrade import TEXTURE_PAD, background_grey, degrade, patches, seed_for

PERIOD = 10
DATA = Path(__file__).parent / "data" / "fingerprints"


def stripes(width: int, vertical: bool = True, size: int = 120) -> np.ndarray:
    """Binary dark ridges ``width`` px wide every ``PERIOD`` px (grey 40 on 230), first one at column 0."""
    line = np.where(np.arange(size) % PERIOD < width, 40, 230).astype(np.uint8)
    image = np.tile(line, (size, 1))
    return image if vertical else image.T.copy()


def hand_map(width: int, vertical: bool = True, size: int = 120) -> fs.RidgeMap:
    """The ridge map of ``stripes(width)`` drawn by hand: centre lines of the ridges and of the valleys."""
    columns = np.arange(size)
    ridge = np.isin(columns, np.arange(size) // PERIOD * PERIOD + width // 2)
    valley = np.isin(columns, np.arange(size) // PERIOD * PERIOD + (width + PERIOD) // 2)
    inner = np.zeros((size, size), bool)
    inner[PERIOD:-PERIOD, PERIOD:-PERIOD] = True
    skeleton, valleys = np.tile(ridge, (size, 1)) & inner, np.tile(valley, (size, 1)) & inner
    flow = np.full((size, size), np.pi / 2 if vertical else 0.0, np.float32)
    if not vertical:
        skeleton, valleys = skeleton.T.copy(), valleys.T.copy()
    return fs.RidgeMap(inner, skeleton, valleys, flow, float(PERIOD), np.zeros((size, size), np.float32))


def share(counts: dict[str, int], part: str, whole: str) -> float:
    return counts[part] / counts[whole]


@pytest.mark.parametrize("vertical", [True, False])
@pytest.mark.parametrize("width", [2, 3, 5])
def test_widths_are_the_drawn_ones_in_both_directions(width, vertical):
    image = stripes(width, vertical).astype(np.float32)
    hand = hand_map(width, vertical)
    ridge = fs.widths(image, np.argwhere(hand.skeleton), hand.flow, hand.period, ridge=True)
    valley = fs.widths(image, np.argwhere(hand.valleys), hand.flow, hand.period, ridge=False)
    assert np.all(np.isfinite(ridge)) and np.all(np.isfinite(valley))
    assert np.allclose(ridge, width, atol=0.05)
    assert np.allclose(valley, PERIOD - width, atol=0.05)


def test_a_flat_image_has_no_width():
    flat = np.full((60, 60), 128, np.float32)
    assert np.all(np.isnan(fs.widths(flat, np.array([[30, 30]]), np.zeros((60, 60), np.float32), 10.0)))


@pytest.mark.parametrize("width, expected", [(2, 0.0), (5, 1.0)])
def test_a_3x3_dilation_erases_2px_ridges_and_keeps_5px_ones(width, expected):
    image = stripes(width)
    hand = hand_map(width)
    assert share(fs.survival(hand, image), "ridge_kept", "ridge_total") == 1.0
    counts = fs.survival(hand, cv2.dilate(image, np.ones((3, 3), np.uint8)))
    assert share(counts, "ridge_kept", "ridge_total") == pytest.approx(expected, abs=0.02)
    assert share(counts, "ridge_kept_along", "ridge_total") == pytest.approx(expected, abs=0.02)
    assert share(counts, "valley_lost", "valley_total") == 1.0 - expected  # erased ridges leave a flat image


@pytest.mark.parametrize("ridge_width, expected", [(7, 1.0), (2, 0.0)])
def test_a_5x5_erosion_closes_3px_valleys_and_not_8px_ones(ridge_width, expected):
    image = stripes(ridge_width)
    merged = cv2.erode(image, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    counts = fs.survival(hand_map(ridge_width), merged)
    assert share(counts, "valley_lost", "valley_total") == pytest.approx(expected, abs=0.02)
    assert share(counts, "ridge_kept", "ridge_total") == 1.0 - expected  # closed valleys leave a flat image


def test_survival_is_split_by_region():
    image = stripes(5)
    region = np.zeros(image.shape, bool)
    region[:, :60] = True
    broken = np.where(region, 230, image).astype(np.uint8)
    counts = fs.survival(hand_map(5), broken, region)
    assert share(counts, "ridge_kept_in", "ridge_total_in") == 0.0
    assert share(counts, "ridge_kept", "ridge_total") == pytest.approx(0.5, abs=0.1)
    assert fs._pooled([counts], "ridge_kept", "ridge_total", inside=False) == 1.0


def test_averaging_along_the_ridge_bridges_a_short_break_not_a_long_one():
    image = stripes(5)
    short, long_ = image.copy(), image.copy()
    short[58:62] = 230  # a 4 px gap across every ridge
    long_[40:80] = 230  # a 40 px gap
    hand = hand_map(5)
    rows = np.argwhere(hand.skeleton)[:, 0]
    for broken, bridged in ((short, True), (long_, False)):
        pixel, along = fs._kept_points(broken.astype(np.float32), np.argwhere(hand.skeleton), hand.flow, hand.period)
        gap = (rows >= 59) & (rows <= 60)
        assert not pixel[gap].any()
        assert along[gap].all() == bridged


def sinusoid(size: int = 160, period: float = 9.0) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    return np.cos(2 * np.pi * (x + 0.4 * y) / period)


def test_band_signal_survives_a_blur_not_noise_nor_another_pattern():
    rng = np.random.default_rng(3)
    clean = sinusoid() + 0.3 * rng.standard_normal((160, 160))
    mask = np.zeros(clean.shape, bool)
    mask[20:-20, 20:-20] = True
    blurred = cv2.GaussianBlur(clean.astype(np.float32), (0, 0), 2.0)
    assert fs.band_explained(clean, blurred, mask, 9.0) > 0.99
    noisy = clean + 1.5 * rng.standard_normal(clean.shape)
    assert 0.2 < fs.band_explained(clean, noisy, mask, 9.0) < 0.8
    other = np.cos(2 * np.pi * (np.mgrid[0:160, 0:160][0] - 0.4 * np.mgrid[0:160, 0:160][1]) / 9.0)
    assert fs.band_explained(clean, other, mask, 9.0) < 0.05
    assert fs.snr_db(0.5) == pytest.approx(0.0, abs=1e-6) and fs.snr_db(0.99) == pytest.approx(20.0, abs=0.1)


def test_the_patches_are_those_degrade_draws():
    grey = (np.random.default_rng(0).integers(0, 256, (90, 110))).astype(np.uint8)
    seed = seed_for("DB1_B", "x.png", "dry")
    broken, thinned = patches(grey.shape, "dry", seed), cv2.dilate(grey, np.ones((3, 3), np.uint8))
    expected = np.where(broken, np.maximum(thinned, background_grey(grey)), thinned)
    assert np.array_equal(degrade(grey, "dry", seed), expected)
    seed = seed_for("DB1_B", "x.png", "wet")
    merged = cv2.erode(grey, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    thick = cv2.erode(grey, np.ones((3, 3), np.uint8))
    assert np.array_equal(degrade(grey, "wet", seed), np.where(patches(grey.shape, "wet", seed), merged, thick))
    assert fs.patch_region(grey.shape, "blur", 1, grey.shape) is None
    assert fs.patch_region(grey.shape, "dry", 1, (79, 97)).shape == (79, 97)


def test_the_textured_copy_is_cut_back_to_the_clean_grid():
    grey = np.array(__import__("PIL.Image", fromlist=["Image"]).open(DATA / "DB1_B_101_1.png").convert("L"))
    out = fs.aligned(grey, "texture", seed_for("DB1_B", "101_1.png", "texture"))
    assert out.shape == grey.shape
    full = degrade(grey, "texture", seed_for("DB1_B", "101_1.png", "texture"))
    assert np.array_equal(out, full[TEXTURE_PAD:-TEXTURE_PAD, TEXTURE_PAD:-TEXTURE_PAD])
    with pytest.raises(ValueError):
        fs.aligned(grey, "rotate", 1)


def test_the_benchmark_measures_a_set_and_the_clean_copy_loses_nothing(tmp_path):
    folder = tmp_path / "DB1_B"
    folder.mkdir()
    for name in ("101_1", "102_1"):
        shutil.copy(DATA / f"DB1_B_{name}.png", folder / f"{name}.png")
    width_row, rows = fs.measure(tmp_path, "DB1_B", ["contrast", "dry"], workers=1)
    by = {r["degradation"]: r for r in rows}
    assert list(by) == ["clean", "contrast", "dry"]
    assert 2.0 < width_row["ridge_median"] < 8.0 and 2.0 < width_row["valley_median"] < 8.0
    assert by["clean"]["survival"] > 0.8 and by["clean"]["merged"] < 0.1
    assert by["contrast"]["snr_db"] > 20
    assert by["dry"]["survival_in"] < 0.1 < 0.5 < by["dry"]["survival_out"]  # DB1_B's breaks are white
    assert "survival_in" not in by["contrast"]
    tables = fs.width_table([width_row]) + fs.signal_table(rows, {("DB1_B", "dry"): (7.77, 3.72)})
    assert tables.count("| DB1_B |") == 4 and "7.77 / 3.72" in tables
