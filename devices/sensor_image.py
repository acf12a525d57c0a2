"""Fit a fingerprint image to a ZFM sensor's window: 256x288 pixels at about 500 dpi, grey."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from devices.zfm_protocol import IMAGE_HEIGHT, IMAGE_WIDTH

SENSOR_DPI = 500.0
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def load_grey(path: Path) -> tuple[np.ndarray, float | None]:
    """Read a PNG or TIFF as grey uint8; return it with its resolution in dpi when the file records one."""
    with Image.open(path) as image:
        dpi = image.info.get("dpi")
        grey = np.asarray(image.convert("L"), dtype=np.uint8)
    resolution = float(dpi[0]) if dpi and float(dpi[0]) > 1 else None
    return grey, resolution


def fit_to_sensor(image: np.ndarray, source_dpi: float = SENSOR_DPI, background: int = 255) -> np.ndarray:
    """Resample ``image`` from ``source_dpi`` to the sensor's 500 dpi, then centre-crop or pad
    (with ``background``, the bright empty platen) to 288 rows x 256 columns."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a grey uint8 image, got {image.dtype} {image.shape}")
    scale = SENSOR_DPI / source_dpi
    if abs(scale - 1.0) > 1e-3:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        image = cv2.resize(image, size, interpolation=interpolation)
    out = np.full((IMAGE_HEIGHT, IMAGE_WIDTH), background, dtype=np.uint8)
    h, w = image.shape
    # Source window (centre crop) and destination offset (centre pad), per axis.
    sy, dy = max(0, (h - IMAGE_HEIGHT) // 2), max(0, (IMAGE_HEIGHT - h) // 2)
    sx, dx = max(0, (w - IMAGE_WIDTH) // 2), max(0, (IMAGE_WIDTH - w) // 2)
    ch, cw = min(h, IMAGE_HEIGHT), min(w, IMAGE_WIDTH)
    out[dy : dy + ch, dx : dx + cw] = image[sy : sy + ch, sx : sx + cw]
    return out


def list_images(folder: Path) -> list[Path]:
    """The PNG and TIFF files of ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
