"""Dry and wet captures, told by the width of their ridges, and their compensation.

A dry finger leaves thin ridges broken into dashes; a wet one thick ridges merged where the valleys fill.
Both are read from the width of the dark and bright strokes of the locally normalised image (dark where it
is under zero) inside the foreground: a stroke's mean width is its area over the length of its skeleton.
``ridge_width`` is the dark strokes' width in units of the image's ridge period; ``duty_cycle`` is the dark
strokes' width over the dark plus the bright strokes' (no period needed).

- dry: ``ridge_width`` under ``DRY_WIDTH``. The ridges' breaks are bridged by a grey erosion (dark ridges
  spread) along the local ridge orientation, a line of ``BRIDGE_LENGTH`` ridge periods, so a gap shorter than
  that closes while the valleys beside the ridge stay open;
- wet: ``duty_cycle`` over ``WET_DUTY``. The ridges are thinned by a 3x3 grey dilation (one pixel a side).

Thresholds chosen on FVC2002 DB1_B alone (``docs/fingerprint.md``). ``ridge_width``: clean images 0.422 to
0.567, their ZFM cuts (every placement of the ``shifted`` protocol) 0.398 to 0.581, blurred (after
``sharpness``) 0.487 to 0.661, dry copies 0.209 to 0.404 (77 of 80 under ``DRY_WIDTH``). ``duty_cycle``:
clean 0.426 to 0.566, ZFM cuts 0.422 to 0.580, blurred 0.486 to 0.558, wet copies 0.588 to 0.662 (all over
``WET_DUTY``). No clean image or ZFM cut of DB1_B is changed. The margins are narrow (0.008 and 0.005): prints
of another sensor near them may or may not be compensated.
"""

from __future__ import annotations

import cv2
import numpy as np

from biometrics.fingerprint.skeleton import thin

DRY_WIDTH = 0.39  # ridge width (ridge periods) under which a capture is treated as dry (chosen on DB1_B)
WET_DUTY = 0.583  # duty cycle over which a capture is treated as wet (chosen on DB1_B)
BRIDGE_LENGTH = 0.5  # length of the line that bridges a dry print's breaks, in ridge periods
ORIENTATIONS = 16
COMPENSATE = True  # off: no capture is compensated (the extractor before this module)


def stroke_widths(local: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean width of the dark strokes, of the bright strokes) in px, inside ``mask``; 0 where none."""
    widths = []
    for strokes in ((local < 0) & mask, (local >= 0) & mask):
        length = int(thin(strokes).sum())
        widths.append(float(strokes.sum()) / length if length else 0.0)
    return widths[0], widths[1]


def condition(local: np.ndarray, mask: np.ndarray, period: float) -> str | None:
    """``"dry"``, ``"wet"`` or None (neither) for a locally normalised image (see the module)."""
    dark, bright = stroke_widths(local, mask)
    if dark <= 0 or bright <= 0 or period <= 0:
        return None
    if dark / period < DRY_WIDTH:
        return "dry"
    if dark / (dark + bright) > WET_DUTY:
        return "wet"
    return None


def line_element(theta: float, length: float) -> np.ndarray:
    """Structuring element: a one-pixel line of about ``length`` px (odd) at angle ``theta``."""
    size = max(3, int(length) | 1)
    element = np.zeros((size, size), np.uint8)
    centre = size // 2
    t = np.linspace(-centre, centre, 4 * size)
    element[np.rint(centre + t * np.sin(theta)).astype(int), np.rint(centre + t * np.cos(theta)).astype(int)] = 1
    return element


def bridge_breaks(image: np.ndarray, theta: np.ndarray, period: float) -> np.ndarray:
    """Grey erosion of ``image`` (dark ridges) along each pixel's ridge orientation ``theta``, over a line of
    ``BRIDGE_LENGTH`` ridge periods (the nearest of ``ORIENTATIONS`` lines)."""
    index = np.round(theta / np.pi * ORIENTATIONS).astype(np.int64) % ORIENTATIONS
    out = image.copy()
    for k in range(ORIENTATIONS):
        sel = index == k
        if sel.any():
            out[sel] = cv2.erode(image, line_element(k * np.pi / ORIENTATIONS, BRIDGE_LENGTH * period))[sel]
    return out


def thin_ridges(image: np.ndarray) -> np.ndarray:
    """3x3 grey dilation: dark ridges lose a pixel a side, merged ridges part."""
    return cv2.dilate(image, np.ones((3, 3), np.uint8))


def compensate(norm: np.ndarray, local: np.ndarray, theta: np.ndarray, mask: np.ndarray,
               period: float) -> np.ndarray | None:
    """The compensated image of a dry or wet capture (from its globally normalised ``norm``), or None when
    the capture is neither (it is then left as it is)."""
    state = condition(local, mask, period) if COMPENSATE else None
    if state == "dry":
        return bridge_breaks(norm, theta, period)
    if state == "wet":
        return thin_ridges(norm)
    return None
