"""Versioned serialisation of face templates for storage."""

from __future__ import annotations

import numpy as np

from biometrics.face import TEMPLATE_DIM

_FACE_V1 = b"F\x01"


def pack_face_template(template: np.ndarray) -> bytes:
    """Bytes of a 128-d face template: a 2-byte version tag, then little-endian float32."""
    vector = np.asarray(template, dtype="<f4").reshape(-1)
    if vector.size != TEMPLATE_DIM:
        raise ValueError(f"a face template has {TEMPLATE_DIM} dimensions, not {vector.size}")
    return _FACE_V1 + vector.tobytes()


def unpack_face_template(data: bytes) -> np.ndarray:
    """The float32 (128,) template packed by :func:`pack_face_template`."""
    if data[:2] != _FACE_V1 or len(data) != 2 + 4 * TEMPLATE_DIM:
        raise ValueError("not a version-1 face template")
    return np.frombuffer(data[2:], dtype="<f4").astype(np.float32)
