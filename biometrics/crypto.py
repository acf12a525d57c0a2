"""Encryption at rest: AES-256-GCM sealing bound to the row, and pseudonymous subject references.

A key ring file (JSON, mode 0600, outside the database) holds the data keys by id, which one seals new
data, and the key for pseudonyms. Each sealed blob names the key that sealed it, so keys can be rotated
while old rows still open. The associated data binds a blob to its row: a blob copied into another row
does not open.

Where the ring comes from (:meth:`KeyRing.load_or_create`), first found wins:

1. ``CHECKPOINT_KEYRING``: the ring's JSON itself (as :meth:`KeyRing.to_json` writes it);
2. ``CHECKPOINT_MASTER_KEY``: a base64 256-bit master key, from which the data key and the pseudonym key
   are derived (HKDF-SHA256); rotate by moving to a key file or ``CHECKPOINT_KEYRING``;
3. the key file (default ``KEY_DIR/keyring.json``, in the key directory of :mod:`biometrics.keydir`, never
   inside the data directory), created 0600 on a first start.

A ring read from a file follows the file: before sealing, and when a blob names a key it does not hold,
it re-reads the file if it changed (``checkpoint-keys rotate`` writes a new active key there while the
server runs). The pseudonym key never changes: rows are keyed by pseudonym.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from biometrics.datadir import atomic_write
from biometrics.keydir import make_key_private

log = logging.getLogger(__name__)

_BLOB_VERSION = 1
_NONCE_BYTES = 12
ENV_KEYRING = "CHECKPOINT_KEYRING"
ENV_MASTER_KEY = "CHECKPOINT_MASTER_KEY"


def _derive(master: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"checkpoint {purpose} v1".encode()).derive(
        master)


class SealError(Exception):
    """A sealed blob does not open: wrong key, wrong row, or altered bytes."""


@dataclass
class KeyRing:
    """Data keys by id, the active one, and the pseudonym key."""

    keys: dict[str, bytes]
    active: str
    pseudonym_key: bytes
    path: Path | None = field(default=None, compare=False, repr=False)
    _stamp: tuple[int, int, int] | None = field(default=None, compare=False, repr=False)
    _reload_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    _ciphers: dict[bytes, AESGCM] = field(default_factory=dict, compare=False, repr=False)

    def _cipher(self, key: bytes) -> AESGCM:
        """The AES-GCM object of a key, made once (loading a million rows opens two million blobs)."""
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = AESGCM(key)
        return cipher

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
        """Write the ring atomically with mode 0600, durably (the directory fsync-ed too: a rotation's re-sealed
        rows must never outlive the ring that opens them)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.to_json().encode())

    @classmethod
    def from_master_key(cls, encoded: str) -> KeyRing:
        """A ring derived from a base64 256-bit master key (one data key, one pseudonym key)."""
        master = base64.b64decode(encoded, validate=True)
        if len(master) != 32:
            raise ValueError(f"{ENV_MASTER_KEY} must be 32 bytes, base64-encoded")
        data_key = _derive(master, "data key")
        key_id = "m" + hashlib.sha256(data_key).hexdigest()[:7]
        return cls(keys={key_id: data_key}, active=key_id, pseudonym_key=_derive(master, "pseudonym key"))

    @classmethod
    def from_environment(cls) -> KeyRing | None:
        """The ring named by ``CHECKPOINT_KEYRING`` or ``CHECKPOINT_MASTER_KEY``, if either is set."""
        if os.environ.get(ENV_KEYRING):
            log.info("key ring from %s", ENV_KEYRING)
            return cls.from_json(os.environ[ENV_KEYRING])
        if os.environ.get(ENV_MASTER_KEY):
            log.info("key ring derived from %s", ENV_MASTER_KEY)
            return cls.from_master_key(os.environ[ENV_MASTER_KEY])
        return None

    @staticmethod
    def _file_stamp(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """The ring in the file ``path``, following later changes to the file; a file open to other users is
        tightened to 0600 with a warning, or refused (:func:`biometrics.keydir.make_key_private`)."""
        make_key_private(path)
        stamp = cls._file_stamp(path)
        ring = cls.from_json(path.read_text())
        ring.path, ring._stamp = path, stamp
        return ring

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """The ring from the environment, else the file ``path``, else a new one created there (and said so)."""
        ring = cls.from_environment()
        if ring is not None:
            if path.exists():
                log.warning("key ring from the environment; the key file %s is ignored", path)
            return ring
        if path.exists():
            return cls.load(path)
        ring = cls.generate()
        ring.save(path)
        log.warning("no key configured: created a new key ring at %s (mode 0600); back it up, "
                    "without it the stored templates cannot be read", path)
        return cls.load(path)

    def refresh(self) -> bool:
        """Re-read the key file if it changed since it was read; True when the ring changed."""
        if self.path is None:
            return False
        stamp = self._file_stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return False
        with self._reload_lock:
            if stamp == self._stamp:
                return False
            try:
                fresh = KeyRing.from_json(self.path.read_text())
            except (OSError, ValueError, KeyError) as exc:
                log.error("key file %s changed but cannot be read (%s); keeping the ring in memory", self.path, exc)
                return False
            if fresh.pseudonym_key != self.pseudonym_key:
                log.error("key file %s changed its pseudonym key; refused (rows are keyed by pseudonym)", self.path)
                self._stamp = stamp
                return False
            missing = set(self.keys) - set(fresh.keys)
            # Union first, then the active key, then the pruning: a concurrent seal never misses its key.
            self.keys = {**self.keys, **fresh.keys}
            self.active = fresh.active
            self.keys = {**fresh.keys}
            self._stamp = stamp
            log.info("key ring reloaded from %s: active key %s, %d key(s)%s", self.path, self.active,
                     len(self.keys), f"; retired {sorted(missing)}" if missing else "")
            return True

    def add_key(self) -> str:
        """Add a fresh 256-bit data key and make it the active one; returns its id."""
        key_id = secrets.token_hex(4)
        while key_id in self.keys:
            key_id = secrets.token_hex(4)
        self.keys = {**self.keys, key_id: AESGCM.generate_key(bit_length=256)}
        self.active = key_id
        return key_id

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` under the active key, bound to ``associated``."""
        self.refresh()
        active = self.active
        key_id = active.encode()
        nonce = secrets.token_bytes(_NONCE_BYTES)
        header = bytes([_BLOB_VERSION, len(key_id)]) + key_id
        return header + nonce + self._cipher(self.keys[active]).encrypt(nonce, plaintext, header + associated)

    def open(self, blob: bytes, associated: bytes) -> bytes:
        """Decrypt a blob sealed by :meth:`seal` with the same ``associated`` data."""
        if len(blob) < 2 or blob[0] != _BLOB_VERSION:
            raise SealError("unknown sealed-blob version")
        id_len = blob[1]
        key_id = blob[2 : 2 + id_len].decode(errors="replace")
        key = self.keys.get(key_id)
        if key is None and self.refresh():
            key = self.keys.get(key_id)
        if key is None:
            raise SealError(f"sealed under key {key_id!r}, which the key ring does not hold")
        header = blob[: 2 + id_len]
        nonce = blob[2 + id_len : 2 + id_len + _NONCE_BYTES]
        try:
            return self._cipher(key).decrypt(nonce, blob[2 + id_len + _NONCE_BYTES :], header + associated)
        except InvalidTag as exc:
            raise SealError("sealed blob does not open: altered, or moved from another row") from exc

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        """The id of the key that sealed ``blob``."""
        return blob[2 : 2 + blob[1]].decode(errors="replace")

    def pseudonym(self, subject_id: str) -> str:
        """A stable pseudonymous reference for ``subject_id`` (HMAC-SHA256, hex)."""
        return hmac.new(self.pseudonym_key, subject_id.encode(), hashlib.sha256).hexdigest()
