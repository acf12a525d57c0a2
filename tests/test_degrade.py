"""The degraded copies used to measure how the fingerprint extractor generalises: deterministic, the
stated shapes, and each doing what its name says."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from benchmarks.degrade import (
    BLUR_SIGMA,
    CONTRAST,
    DEGRADATIONS,
    EXTRA_DEGRADATIONS,
    TEXTURE_PAD,
    background_grey,
    degrade,
    patches,
    seed_for,
)


def ridge_image(h: int = 300, w: int = 280, period: float = 9.0) -> np.ndarray:
    """Dark ridges (period ``period``) in an ellipse on a white background, as in an FVC capture."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    inside = ((x - w / 2) / (0.35 * w)) ** 2 + ((y - h / 2) / (0.4 * h)) ** 2 < 1
    ridges = 0.5 + 0.5 * np.cos(2 * np.pi * (x + 0.3 * y) / period)
    return np.where(inside, 255 - 200 * ridges, 250).astype(np.uint8)


@pytest.mark.parametrize("kind", ["clean", *DEGRADATIONS, *EXTRA_DEGRADATIONS])
def test_each_degradation_is_deterministic_and_uint8(kind):
    grey = ridge_image()
    seed = seed_for("DB1_B", "101_1.png", kind)
    a, b = degrade(grey, kind, seed), degrade(grey, kind, seed)
    assert a.dtype == np.uint8 and a.ndim == 2
    assert np.array_equal(a, b)


def test_seeds_are_stable_across_runs_and_differ_between_images():
    # a CRC of the names, not Python's per-process salted hash
    assert seed_for("DB1_B", "101_1.png", "rotate") == zlib.crc32(b"DB1_B/101_1.png/rotate")
    assert seed_for("DB1_B", "101_2.png", "rotate") != seed_for("DB1_B", "101_1.png", "rotate")


@pytest.mark.parametrize("kind", ["rotate", "dry", "wet", "texture"])
def test_random_degradations_depend_on_the_seed(kind):
    grey = ridge_image()
    assert not np.array_equal(degrade(grey, kind, 1), degrade(grey, kind, 2))


def test_shapes():
    grey = ridge_image(300, 280)
    for kind in ("clean", "contrast", "blur", "dry", "wet"):
        assert degrade(grey, kind, 0).shape == (300, 280)
    assert degrade(grey, "scale90", 0).shape == (270, 252)
    assert degrade(grey, "scale110", 0).shape == (330, 308)
    assert degrade(grey, "texture", 0).shape == (300 + 2 * TEXTURE_PAD, 280 + 2 * TEXTURE_PAD)
    rotated = degrade(grey, "rotate", 0)
    assert rotated.shape[0] >= 300 and rotated.shape[1] >= 280  # the canvas holds the whole rotated image


def test_rotation_keeps_the_content_and_fills_corners_with_background():
    grey = ridge_image()
    rotated = degrade(grey, "rotate", seed_for("DB1_B", "101_1.png", "rotate"))
    assert rotated.shape != grey.shape  # a non-zero angle was drawn (grows the canvas)
    assert rotated[0, 0] == background_grey(grey)
    assert abs(int((rotated < 128).sum()) - int((grey < 128).sum())) < 0.05 * (grey < 128).sum()


def test_contrast_and_blur_do_what_they_say():
    grey = ridge_image()
    low = degrade(grey, "contrast", 0)
    assert low.std() == pytest.approx(CONTRAST * grey.std(), rel=0.05)
    blurred = degrade(grey, "blur", 0).astype(np.float64)
    gradient = np.abs(np.diff(grey.astype(np.float64), axis=1)).mean()
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.8 * gradient
    assert BLUR_SIGMA > 0


def test_dry_thins_and_breaks_ridges_wet_thickens_them():
    grey = ridge_image()
    dark = (grey < 128).sum()
    dry = degrade(grey, "dry", 3)
    wet = degrade(grey, "wet", 3)
    assert (dry < 128).sum() < 0.8 * dark  # thinner and broken
    assert (wet < 128).sum() > 1.1 * dark  # thicker, merged in patches


def test_thin_and_thick_are_dry_and_wet_without_their_breaks_and_merged_patches():
    grey = ridge_image()
    seed = seed_for("DB1_B", "101_1.png", "dry")
    thin, thick = degrade(grey, "thin", seed), degrade(grey, "thick", seed)
    assert (thin < 128).sum() < 0.9 * (grey < 128).sum() < (grey < 128).sum() < (thick < 128).sum()
    outside = ~patches(grey.shape, "dry", seed)
    assert np.array_equal(thin[outside], degrade(grey, "dry", seed)[outside])
    assert not np.array_equal(thin, degrade(grey, "dry", seed))  # dry also breaks the ridges
    outside = ~patches(grey.shape, "wet", seed)
    assert np.array_equal(thick[outside], degrade(grey, "wet", seed)[outside])
    assert not np.array_equal(thick, degrade(grey, "wet", seed))  # wet also merges them in patches
    assert set(EXTRA_DEGRADATIONS).isdisjoint(DEGRADATIONS)  # not part of the target's table


def test_texture_is_added_around_the_finger_not_a_flat_grey():
    grey = ridge_image()
    out = degrade(grey, "texture", 5).astype(np.float64)
    frame = out[:TEXTURE_PAD // 2]  # padding: outside the finger everywhere
    assert frame.std() > 15  # textured, where the original background was flat
    centre = out[TEXTURE_PAD + 150 - 20:TEXTURE_PAD + 150 + 20, TEXTURE_PAD + 140 - 20:TEXTURE_PAD + 140 + 20]
    original = grey[130:170, 120:160].astype(np.float64)
    assert np.abs(centre - original).mean() < 2  # the finger itself is left as it was


def test_unknown_degradations_and_non_grey_input_are_refused():
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(ridge_image(), "smudge", 0)
    with pytest.raises(ValueError, match="uint8"):
        degrade(ridge_image().astype(np.float32), "blur", 0)
