"""Deterministic degraded copies of fingerprint images: what another sensor, another finger state or
another placement does to a capture, for measuring how an extractor tuned on one set generalises.

Every degradation is a pure function of the image and a seed (``seed_for(set, name, kind)``, a CRC of the
names, so the same image gets the same copy in every process and run). Ridges are dark on a bright
background, as in every FVC2002 set. Degradations (``DEGRADATIONS``):

- ``contrast``: grey values compressed to ``CONTRAST`` of their spread about the image's mean (a weak,
  washed-out capture);
- ``blur``: Gaussian blur of sigma ``BLUR_SIGMA`` px (about a quarter of a 500 dpi ridge period; out of
  focus, moving finger);
- ``scale90`` / ``scale110``: resized by 0.9 / 1.1 (the sensor's resolution is not what the caller says);
- ``rotate``: rotated about the centre by an angle drawn uniformly in +-``MAX_ROTATION`` degrees (per
  image, seeded), on a canvas that holds the whole rotated image, the new corners filled with the
  background grey;
- ``dry``: ridges thinned (a 3x3 grey dilation: dark ridges lose a pixel a side) and broken: pixels in
  smooth random blotches covering ``DRY_BREAKS`` of the image lifted to the background grey;
- ``wet``: ridges thickened (a 3x3 grey erosion) and, in smooth random patches covering ``WET_PATCHES``
  of the image, merged (a 5x5 erosion);
- ``thin`` / ``thick`` (not in ``DEGRADATIONS``, the target's table: ``EXTRA_DEGRADATIONS``, added after
  that table was measured): the issue's literal "dry and wet simulated by erosion and dilation", the 3x3 grey
  dilation / erosion alone, without ``dry``'s breaks or ``wet``'s merged patches, to tell what the
  morphology costs from what the breaks and merges cost;
- ``texture``: the image padded by ``TEXTURE_PAD`` px of background, then everything outside the finger
  replaced by a skin-like texture: band-pass noise (blobs and creases of 3 to 20 px, no dominant
  orientation or period) of the finger's mean grey and ``TEXTURE_SPREAD`` of its spread (well above what variance-based
  segmentation calls background), with a soft edge. The
  finger is taken as the dark (ridge) pixels closed over a ridge period and a half, which needs no
  fingerprint segmentation (the thing under test).
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

DEGRADATIONS = ("contrast", "blur", "scale90", "scale110", "rotate", "dry", "wet", "texture")
EXTRA_DEGRADATIONS = ("thin", "thick")
CONTRAST = 0.35
BLUR_SIGMA = 2.0
MAX_ROTATION = 30.0
DRY_BREAKS = 0.25
WET_PATCHES = 0.25
TEXTURE_PAD = 40
TEXTURE_SPREAD = 0.45  # the texture's spread, as a fraction of the finger's grey-level spread
PATCHES = {"dry": (DRY_BREAKS, 2.0), "wet": (WET_PATCHES, 12.0)}  # (share of the image, smoothing sigma px)


def seed_for(set_name: str, image_name: str, kind: str) -> int:
    """Seed of one image's degradation: stable across processes and runs (not Python's salted hash)."""
    return zlib.crc32(f"{set_name}/{image_name}/{kind}".encode())


def background_grey(grey: np.ndarray) -> int:
    """Grey level of the background: the median of the image's outermost rows and columns."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return int(np.median(border))


def _blotches(shape: tuple[int, int], rng: np.random.Generator, fraction: float, sigma: float) -> np.ndarray:
    """Boolean mask of smooth random blotches covering about ``fraction`` of the image."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return noise > np.quantile(noise, 1.0 - fraction)


def _patches(shape: tuple[int, int], kind: str, rng: np.random.Generator) -> np.ndarray:
    """``dry``'s breaks or ``wet``'s merged patches: the first draw of the degradation's generator."""
    share, sigma = PATCHES[kind]
    return _blotches(shape, rng, share, sigma)


def patches(shape: tuple[int, int], kind: str, seed: int) -> np.ndarray:
    """Where ``dry`` breaks the ridges or ``wet`` merges them in ``degrade(grey, kind, seed)`` of an image of
    ``shape`` (beyond the 3x3 operation both apply everywhere)."""
    return _patches(shape, kind, np.random.default_rng(seed))


def _contrast(grey: np.ndarray) -> np.ndarray:
    mean = float(grey.mean())
    return mean + CONTRAST * (grey.astype(np.float32) - mean)


def _rotate(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    h, w = grey.shape
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    nw, nh = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    matrix[0, 2] += (nw - w) / 2.0
    matrix[1, 2] += (nh - h) / 2.0
    return cv2.warpAffine(grey, matrix, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=background_grey(grey))


def _thin(grey: np.ndarray) -> np.ndarray:
    """Dark ridges thinned: a 3x3 grey dilation (they lose a pixel a side)."""
    return cv2.dilate(grey, np.ones((3, 3), np.uint8))


def _thick(grey: np.ndarray) -> np.ndarray:
    """Dark ridges thickened: a 3x3 grey erosion (they gain a pixel a side)."""
    return cv2.erode(grey, np.ones((3, 3), np.uint8))


def _dry(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    thinned = _thin(grey)
    broken = _patches(grey.shape, "dry", rng)
    return np.where(broken, np.maximum(thinned, background_grey(grey)), thinned)


def _wet(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    thick = _thick(grey)
    merged = cv2.erode(grey, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    return np.where(_patches(grey.shape, "wet", rng), merged, thick)


def finger_area(grey: np.ndarray) -> np.ndarray:
    """Rough finger area of a capture for placing a background around it (not a fingerprint segmentation):
    pixels clearly darker than the background, closed and opened over about a ridge period and a half,
    the largest region with its holes filled."""
    from scipy import ndimage

    background = background_grey(grey)
    spread = max(float(np.percentile(np.abs(grey.astype(np.float32) - background), 95)), 1.0)
    dark = (background - grey.astype(np.float32)) > 0.3 * spread
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    area = cv2.morphologyEx(dark.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    area = cv2.morphologyEx(area, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(area, connectivity=4)
    if count < 2:
        return np.zeros(grey.shape, dtype=bool)
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])))


def skin_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-spread isotropic texture: blobs and creases of 3 to 20 px, no dominant period."""
    noise = rng.standard_normal(shape).astype(np.float32)
    fine = cv2.GaussianBlur(noise, (0, 0), 1.5) - cv2.GaussianBlur(noise, (0, 0), 4.0)
    coarse = cv2.GaussianBlur(noise, (0, 0), 4.0) - cv2.GaussianBlur(noise, (0, 0), 10.0)
    texture = fine / max(float(fine.std()), 1e-6) + 0.7 * coarse / max(float(coarse.std()), 1e-6)
    return texture / max(float(texture.std()), 1e-6)


def _texture(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    background = background_grey(grey)
    padded = cv2.copyMakeBorder(grey, TEXTURE_PAD, TEXTURE_PAD, TEXTURE_PAD, TEXTURE_PAD,
                                cv2.BORDER_CONSTANT, value=background)
    finger = finger_area(padded)
    values = padded[finger].astype(np.float32) if finger.any() else padded.astype(np.float32).ravel()
    skin = float(values.mean()) + TEXTURE_SPREAD * float(values.std()) * skin_texture(padded.shape, rng)
    weight = cv2.GaussianBlur(finger.astype(np.float32), (0, 0), 3.0)
    return weight * padded.astype(np.float32) + (1.0 - weight) * skin


def degrade(grey: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """The ``kind`` degradation (one of ``DEGRADATIONS`` or ``EXTRA_DEGRADATIONS``, or ``clean``) of a uint8 grey
    image, as uint8."""
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError("degrade takes a 2-D uint8 grey image")
    rng = np.random.default_rng(seed)
    if kind == "clean":
        out = grey
    elif kind == "contrast":
        out = _contrast(grey)
    elif kind == "blur":
        out = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), BLUR_SIGMA)
    elif kind in ("scale90", "scale110"):
        factor = 0.9 if kind == "scale90" else 1.1
        size = (round(grey.shape[1] * factor), round(grey.shape[0] * factor))
        out = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    elif kind == "rotate":
        out = _rotate(grey, rng)
    elif kind == "dry":
        out = _dry(grey, rng)
    elif kind == "wet":
        out = _wet(grey, rng)
    elif kind == "texture":
        out = _texture(grey, rng)
    elif kind == "thin":
        out = _thin(grey)
    elif kind == "thick":
        out = _thick(grey)
    else:
        raise ValueError(f"unknown degradation {kind!r}; expected one of "
                         f"{', '.join((*DEGRADATIONS, *EXTRA_DEGRADATIONS))}")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
