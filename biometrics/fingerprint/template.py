"""The fingerprint template: minutiae plus their MCC cylinders, with a versioned binary form.

Layout of version 1 (little-endian):
  magic b"CPFP", version u8, NS u8, ND u8, R u8 (cylinder geometry: templates of another geometry
  cannot be compared), width u16, height u16, quality u8, n_minutiae u16, n_cylinders u16,
  n_minutiae x (x u16, y u16, angle u16 [2*pi/65536 units], kind u8, quality u8),
  n_cylinders x minutia index u16,
  n_cylinders x N_WORDS x u64 cylinder bits,
  n_cylinders x ceil(N_CELLS / 8) bytes of cell validity.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from biometrics.errors import InvalidSample
from biometrics.fingerprint.cylinders import N_CELLS, N_WORDS, ND, NS, R, pack_bits, unpack_bits
from biometrics.fingerprint.minutiae import MINUTIA_DTYPE

MAGIC = b"CPFP"
VERSION = 1
_HEADER = struct.Struct("<4sBBBBHHBHH")
_MINUTIA = np.dtype([("x", "<u2"), ("y", "<u2"), ("angle", "<u2"), ("kind", "u1"), ("quality", "u1")])
ANGLE_UNIT = 2.0 * np.pi / 65536.0


class TemplateFormatError(InvalidSample):
    """Bytes that are not a fingerprint template this version of the software can read."""


def quantise_minutiae(minutiae: np.ndarray) -> np.ndarray:
    """Round minutiae to what the binary form keeps (whole pixels, 1/65536 turn), so a template
    compares the same before and after a round trip."""
    out = np.zeros(len(minutiae), dtype=MINUTIA_DTYPE)
    out["x"] = np.clip(np.round(minutiae["x"]), 0, 65535)
    out["y"] = np.clip(np.round(minutiae["y"]), 0, 65535)
    angle = np.mod(np.asarray(minutiae["angle"], dtype=np.float64), 2 * np.pi)
    out["angle"] = (np.round(angle / ANGLE_UNIT) % 65536) * ANGLE_UNIT
    out["kind"] = minutiae["kind"]
    out["quality"] = minutiae["quality"]
    return out


@dataclass(frozen=True, eq=False)
class FingerprintTemplate:
    """Minutiae of one impression and the MCC cylinders of those minutiae that have a valid one.

    ``minutiae``: structured array (x, y, angle, kind, quality) in pixels at 500 dpi, radians, 0 ending /
    1 bifurcation, 0..100. ``cylinder_minutia[i]`` is the minutia of cylinder ``i``; ``bits`` and
    ``valid`` are (n_cylinders, N_WORDS) uint64. ``quality`` is the image quality, 0..100.
    """

    minutiae: np.ndarray
    cylinder_minutia: np.ndarray
    bits: np.ndarray
    valid: np.ndarray
    quality: float
    width: int
    height: int

    @property
    def minutiae_count(self) -> int:
        """Number of minutiae."""
        return len(self.minutiae)

    @property
    def cylinder_count(self) -> int:
        """Number of minutiae with a valid cylinder (those that take part in comparisons)."""
        return len(self.cylinder_minutia)

    def cylinder_geometry(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, angle) float64 of the minutiae that carry a cylinder."""
        m = self.minutiae[self.cylinder_minutia]
        return m["x"].astype(np.float64), m["y"].astype(np.float64), m["angle"].astype(np.float64)

    def to_bytes(self) -> bytes:
        """Serialise (see the module docstring for the layout)."""
        header = _HEADER.pack(MAGIC, VERSION, NS, ND, int(R), self.width, self.height,
                              round(self.quality), len(self.minutiae), len(self.cylinder_minutia))
        rec = np.zeros(len(self.minutiae), dtype=_MINUTIA)
        rec["x"] = self.minutiae["x"]
        rec["y"] = self.minutiae["y"]
        rec["angle"] = np.round(self.minutiae["angle"].astype(np.float64) / ANGLE_UNIT).astype(np.int64) % 65536
        rec["kind"] = self.minutiae["kind"]
        rec["quality"] = self.minutiae["quality"]
        cells = unpack_bits(self.valid)[:, ::ND]
        cell_bytes = np.packbits(cells, axis=1, bitorder="little")
        return b"".join([header, rec.tobytes(), self.cylinder_minutia.astype("<u2").tobytes(),
                         self.bits.astype("<u8").tobytes(), cell_bytes.tobytes()])

    @classmethod
    def from_bytes(cls, data: bytes) -> FingerprintTemplate:
        """Parse bytes made by ``to_bytes``; ``TemplateFormatError`` for anything else."""
        data = bytes(data)
        if len(data) < _HEADER.size or data[:4] != MAGIC:
            raise TemplateFormatError("These bytes are not a fingerprint template.")
        if data[4] != VERSION:
            raise TemplateFormatError(
                f"Fingerprint template version {data[4]} is not supported (this software reads version "
                f"{VERSION}); re-enrol the finger.")
        (_, _, ns, nd, r, width, height, quality, n_min, n_cyl) = _HEADER.unpack_from(data)
        if (ns, nd, r) != (NS, ND, int(R)):
            raise TemplateFormatError("The fingerprint template was made with another cylinder geometry.")
        cell_len = (N_CELLS + 7) // 8
        expected = _HEADER.size + n_min * _MINUTIA.itemsize + n_cyl * (2 + 8 * N_WORDS + cell_len)
        if len(data) != expected:
            raise TemplateFormatError("The fingerprint template is truncated or corrupt.")
        off = _HEADER.size
        rec = np.frombuffer(data, dtype=_MINUTIA, count=n_min, offset=off)
        off += n_min * _MINUTIA.itemsize
        index = np.frombuffer(data, dtype="<u2", count=n_cyl, offset=off).astype(np.int64)
        off += 2 * n_cyl
        bits = np.frombuffer(data, dtype="<u8", count=n_cyl * N_WORDS, offset=off).reshape(n_cyl, N_WORDS)
        off += 8 * N_WORDS * n_cyl
        cells = np.frombuffer(data, dtype=np.uint8, count=n_cyl * cell_len, offset=off).reshape(n_cyl, cell_len)
        if n_cyl and index.max() >= n_min:
            raise TemplateFormatError("The fingerprint template is corrupt.")
        minutiae = np.zeros(n_min, dtype=MINUTIA_DTYPE)
        minutiae["x"] = rec["x"]
        minutiae["y"] = rec["y"]
        minutiae["angle"] = rec["angle"].astype(np.float64) * ANGLE_UNIT
        minutiae["kind"] = rec["kind"]
        minutiae["quality"] = rec["quality"]
        cell_bits = np.unpackbits(cells, axis=1, bitorder="little")[:, :N_CELLS].astype(bool)
        valid = pack_bits(np.repeat(cell_bits, ND, axis=1))
        return cls(minutiae, index, bits.astype(np.uint64), valid, float(quality), width, height)
