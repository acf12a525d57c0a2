"""Segmentation, adaptive contrast normalisation and ridge frequency on hand-made images whose truth is
known: a ridge pattern of known period inside an ellipse, on a skin-like texture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from biometrics.fingerprint.frequency import period_field, ridge_period
from biometrics.fingerprint.image import local_normalise, normalise
from biometrics.fingerprint.orientation import orientation_field
from biometrics.fingerprint.pipeline import analyse
from biometrics.fingerprint.segmentation import foreground_mask

H, W = 320, 300


def finger_ellipse(h: int = H, w: int = W) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return ((x - w / 2) / (0.3 * w)) ** 2 + ((y - h / 2) / (0.36 * h)) ** 2 < 1


def ridge_pattern(period: float, h: int = H, w: int = W) -> np.ndarray:
    """A loop-like ridge pattern: rings about a point above the image, so the orientation varies slowly."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    radius = np.hypot(x - w / 2, y + 0.6 * h)
    return np.cos(2 * np.pi * radius / period)


def skin_texture(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """Isotropic band-pass noise (blobs of 3 to 10 px): texture with no single orientation, unit spread."""
    noise = np.random.default_rng(seed).standard_normal((h, w)).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 1.5) - cv2.GaussianBlur(noise, (0, 0), 5.0)
    return texture / texture.std()


def textured_capture(seed: int = 0, period: float = 9.0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, true ridge area): ridges of amplitude 60 grey levels in the ellipse, skin texture of
    spread 40 outside it (a variance threshold cannot tell them apart)."""
    inside = finger_ellipse()
    image = np.where(inside, 128 + 60 * ridge_pattern(period), 140 + 40 * skin_texture(seed))
    return np.clip(image, 0, 255).astype(np.uint8), inside


def on_flat_background(ridges: np.ndarray) -> np.ndarray:
    """float32 image: ``ridges`` (unit amplitude) at 60 grey levels about 128 inside the finger ellipse, a flat
    230 outside it (a background that contrast alone separates)."""
    return np.where(finger_ellipse(), 128 + 60 * ridges, 230).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mask_covers_the_ridges_and_leaves_out_the_skin_texture(seed):
    image, truth = textured_capture(seed)
    mask = analyse(image.astype(np.float32)).mask
    # segmentation by grey-level variance alone (before this change) took the whole image: IoU 0.34;
    # what remains outside is a halo of about a block around the ridges (the coherence is smoothed)
    assert iou(mask, truth) > 0.75
    assert mask[~truth].mean() < 0.2  # little texture taken as finger
    assert mask[truth].mean() > 0.95  # and the ridge area kept


def test_a_print_on_a_flat_background_is_segmented_as_before():
    inside = finger_ellipse()
    image = on_flat_background(ridge_pattern(9.0))
    mask = analyse(image).mask
    assert iou(mask, foreground_mask(normalise(image))) > 0.95  # contrast alone, the rule before
    assert iou(mask, inside) > 0.8


def test_local_normalisation_evens_out_contrast_but_does_not_raise_flat_noise():
    rng = np.random.default_rng(4)
    ridges = ridge_pattern(9.0)
    amplitude = np.where(np.arange(W)[None, :] < W // 2, 16.0, 80.0)  # a faint left half, a strong right half
    image = 128 + amplitude * ridges
    image[:60] = 128 + rng.normal(0, 1.0, (60, W))  # a flat strip with sensor noise
    out = local_normalise(normalise(image.astype(np.float32)))
    left = out[100:300, 30:W // 2 - 30].std()
    right = out[100:300, W // 2 + 30:W - 30].std()
    assert left == pytest.approx(right, rel=0.2)  # globally normalised, they differ five times
    assert out[10:50].std() < 0.3 * right  # noise stays well under ridge contrast


@pytest.mark.parametrize("period", [6.0, 9.0, 12.0])
def test_ridge_period_is_measured_from_the_image(period):
    inside = finger_ellipse()
    norm = normalise(on_flat_background(ridge_pattern(period)))
    theta, _ = orientation_field(norm)
    assert ridge_period(norm, theta, inside) == pytest.approx(period, abs=0.5)
    field = period_field(norm, theta, inside, ridge_period(norm, theta, inside))
    assert np.median(field[inside]) == pytest.approx(period, abs=0.5)


def test_the_period_field_follows_a_period_that_changes_across_the_print():
    inside = finger_ellipse()
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    # period 7 px on the left growing to 11 px on the right: phase is the integral of 1 / period along x
    period = 7.0 + 4.0 * x / W
    phase = 2 * np.pi * (W / 4.0) * np.log(period / 7.0)
    norm = normalise(on_flat_background(np.cos(phase + 0.0 * y)))
    theta, _ = orientation_field(norm)
    field = period_field(norm, theta, inside, ridge_period(norm, theta, inside))
    rows = slice(H // 2 - 30, H // 2 + 30)
    assert np.median(field[rows, 80:100]) == pytest.approx(8.2, abs=0.8)
    assert np.median(field[rows, 200:220]) == pytest.approx(10.1, abs=0.8)
