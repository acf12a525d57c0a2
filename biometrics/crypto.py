"""Encryption at rest: AES-256-GCM sealing bound to the row, and pseudonymous subject references.

A key ring file (JSON, mode 0600, outside the database) holds the data keys by id, which one seals new
data, and the key for pseudonyms. Each sealed blob names the key that sealed it, so keys can be rotated
while old rows still open. The associated data binds a blob to its row: a blob copied into another row
does not open.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

_BLOB_VERSION = 1
_NONCE_BYTES = 12


class SealError(Exception):
    """A sealed blob does not open: wrong key, wrong row, or altered bytes."""


@dataclass
class KeyRing:
    """Data keys by id, the active one, and the pseudonym key."""

    keys: dict[str, bytes]
    active: str
    pseudonym_key: bytes

    @classmethod
    def generate(cls) -> KeyRing:
        """A new ring with one fresh 256-bit data key."""
        key_id = secrets.token_hex(4)
        return cls(keys={key_id: AESGCM.generate_key(bit_length=256)}, active=key_id,
                   pseudonym_key=secrets.token_bytes(32))

    def to_json(self) -> str:
        """The ring as JSON (keys base64)."""
        return json.dumps({
            "version": 1,
            "active": self.active,
            "keys": {k: base64.b64encode(v).decode() for k, v in self.keys.items()},
            "pseudonym_key": base64.b64encode(self.pseudonym_key).decode(),
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        """Parse a ring written by :meth:`to_json`."""
        doc = json.loads(text)
        keys = {k: base64.b64decode(v) for k, v in doc["keys"].items()}
        if doc["active"] not in keys or any(len(k) != 32 for k in keys.values()):
            raise ValueError("key ring: the active key is missing or a key is not 256 bits")
        return cls(keys=keys, active=doc["active"], pseudonym_key=base64.b64decode(doc["pseudonym_key"]))

    def save(self, path: Path) -> None:
        """Write the ring atomically with mode 0600."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """Load the ring at ``path``, or create one there (and say so) on a first start."""
        if path.exists():
            return cls.from_json(path.read_text())
        ring = cls.generate()
        ring.save(path)
        log.warning("no key configured: created a new key ring at %s (mode 0600); back it up, "
                    "without it the stored templates cannot be read", path)
        return ring

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` under the active key, bound to ``associated``."""
        key_id = self.active.encode()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        header = bytes([_BLOB_VERSION, len(key_id)]) + key_id
        return header + nonce + AESGCM(self.keys[self.active]).encrypt(nonce, plaintext, header + associated)

    def open(self, blob: bytes, associated: bytes) -> bytes:
        """Decrypt a blob sealed by :meth:`seal` with the same ``associated`` data."""
        if len(blob) < 2 or blob[0] != _BLOB_VERSION:
            raise SealError("unknown sealed-blob version")
        id_len = blob[1]
        key_id = blob[2 : 2 + id_len].decode(errors="replace")
        key = self.keys.get(key_id)
        if key is None:
            raise SealError(f"sealed under key {key_id!r}, which the key ring does not hold")
        header = blob[: 2 + id_len]
        nonce = blob[2 + id_len : 2 + id_len + _NONCE_BYTES]
        try:
            return AESGCM(key).decrypt(nonce, blob[2 + id_len + _NONCE_BYTES :], header + associated)
        except InvalidTag as exc:
            raise SealError("sealed blob does not open: altered, or moved from another row") from exc

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        """The id of the key that sealed ``blob``."""
        return blob[2 : 2 + blob[1]].decode(errors="replace")

    def pseudonym(self, subject_id: str) -> str:
        """A stable pseudonymous reference for ``subject_id`` (HMAC-SHA256, hex)."""
        return hmac.new(self.pseudonym_key, subject_id.encode(), hashlib.sha256).hexdigest()
