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


def unpack_face_templates(packed: list[bytes]) -> np.ndarray:
    """(N, 128) float32 of many templates packed by :func:`pack_face_template`, in one pass (a cold start)."""
    if not packed:
        return np.zeros((0, TEMPLATE_DIM), dtype=np.float32)
    width = 2 + 4 * TEMPLATE_DIM
    raw = np.frombuffer(b"".join(packed), dtype=np.uint8)
    if raw.size != width * len(packed):
        raise ValueError("not version-1 face templates (a template has the wrong length)")
    rows = raw.reshape(len(packed), width)
    if not (rows[:, :2] == np.frombuffer(_FACE_V1, dtype=np.uint8)).all():
        raise ValueError("not version-1 face templates (a template has another version tag)")
    return np.ascontiguousarray(rows[:, 2:]).view("<f4").astype(np.float32, copy=False)
