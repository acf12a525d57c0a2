"""Dry and wet captures (``biometrics.fingerprint.moisture``) on hand-made ridge patterns whose minutiae are
known, and on the real test captures: a clean pattern is left untouched, a dry (thin, broken ridges) or wet
(thick, merged ridges) one is told apart and compensated, which gives back its true minutiae and fewer false
ones."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_fingerprint_sharpness import FORKS, forked_ridges, same_analysis, true_minutiae_found

from benchmarks.degrade import degrade
from biometrics.fingerprint import moisture
from biometrics.fingerprint.image import normalise
from biometrics.fingerprint.pipeline import _fields, analyse

DATA = Path(__file__).parent / "data" / "fingerprints"


def blotches(shape: tuple[int, int], fraction: float, sigma: float, seed: int) -> np.ndarray:
    noise = cv2.GaussianBlur(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return noise > np.quantile(noise, 1.0 - fraction)


def broken_ridges(period: float, seed: int) -> np.ndarray:
    """Thin ridges (a third of the period) with 35% of the pattern in small blotches lifted to valley grey."""
    image = forked_ridges(period, duty=0.5)
    return np.where(blotches(image.shape, 0.35, 2.0, seed), np.maximum(image, 190.0), image).astype(np.float32)


def merged_ridges(period: float, seed: int) -> np.ndarray:
    """Thick ridges (two thirds of the period), merged (a 5x5 erosion) in broad patches over 25%."""
    image = forked_ridges(period, duty=-0.5)
    merged = cv2.erode(image, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return np.where(blotches(image.shape, 0.25, 12.0, seed), merged, image).astype(np.float32)


def condition(image: np.ndarray) -> str | None:
    local, _, _, mask, period = _fields(normalise(image))
    return moisture.condition(local, mask, period)


def uncompensated(image: np.ndarray, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(moisture, "COMPENSATE", False)
        return analyse(image)


@pytest.mark.parametrize("period", [9.0, 12.0])
@pytest.mark.parametrize("duty", [0.3, 0.0, -0.3])
def test_clean_ridges_are_left_untouched(period, duty, monkeypatch):
    image = forked_ridges(period, duty)
    assert condition(image) is None
    assert same_analysis(analyse(image), uncompensated(image, monkeypatch))


@pytest.mark.parametrize("name", ["DB1_B_101_1", "DB1_B_102_1", "DB1_B_103_1", "DB3_B_101_1"])
def test_real_captures_are_neither_dry_nor_wet_until_degraded(name):
    grey = np.array(Image.open(DATA / f"{name}.png").convert("L"))
    assert condition(grey.astype(np.float32)) is None
    assert condition(degrade(grey, "dry", 1).astype(np.float32)) == "dry"
    assert condition(degrade(grey, "wet", 1).astype(np.float32)) == "wet"


@pytest.mark.parametrize(("period", "seed"), [(9.0, 0), (12.0, 1)])
def test_broken_ridges_give_back_their_true_minutiae(period, seed, monkeypatch):
    image = broken_ridges(period, seed)
    assert condition(image) == "dry"
    assert true_minutiae_found(uncompensated(image, monkeypatch).minutiae) < len(FORKS)
    assert true_minutiae_found(analyse(image).minutiae) == len(FORKS)


@pytest.mark.parametrize("period", [9.0, 12.0])
def test_merged_ridges_give_fewer_false_minutiae(period, monkeypatch):
    image = merged_ridges(period, 0)
    assert condition(image) == "wet"
    before, after = uncompensated(image, monkeypatch).minutiae, analyse(image).minutiae
    assert true_minutiae_found(after) == len(FORKS)
    assert len(after) < len(before)


def test_bridging_runs_along_the_ridges_only():
    # vertical ridges (theta = pi/2: running along y) with a gap: the gap closes, the valleys stay open
    image = np.full((40, 40), 200.0, np.float32)
    image[:, 10:13] = 50.0
    image[18:21, 10:13] = 200.0  # a 3 px break in the ridge
    theta = np.full(image.shape, np.pi / 2)
    bridged = moisture.bridge_breaks(image, theta, period=9.0)
    assert bridged[19, 11] == 50.0
    assert bridged[19, 15] == 200.0 and bridged[5, 14] == 200.0
