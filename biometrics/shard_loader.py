"""What a replica of the sharded gallery loads: its shard's face templates, read from the register.

A :class:`RegisterShardLoader` is the ``loader`` a station gives :class:`biometrics.sharded.ShardedGallery`: it is
pickled to every replica (it holds the register's URL and where the key ring is, never a key), and each replica
calls it at its start and at every restart. It reads the register as a station does at a cold start, then
catches up on the change log:

1. opens the register **read-only** (every connection ``default_transaction_read_only``; no migration, no
   write: the key ring is only checked against the id the register records) with the station's key ring;
2. pages the whole register in one consistent snapshot (:meth:`biometrics.storage.SealedStore.gallery_pages`,
   which also gives the change-log sequence it reflects) and keeps the face templates of the subjects whose
   :func:`biometrics.sharded.shard_of` is this shard;
3. reads the change log after that sequence to its end: a subject erased or withdrawn since is left out, one
   enrolled since is read as the register holds it now.

Writes the station sends while a replica loads wait in the replica's queue and are applied after, in order, and
are idempotent (an ``add`` of what the replica holds adds nothing), so the result is the register as of the end
of step 3 plus every later change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biometrics.sharded import shard_of
from biometrics.storage import CHANGE_ENROLLED, CHANGE_ERASED, CHANGE_WITHDRAWN
from biometrics.templates import unpack_face_templates
from biometrics.types import Modality

log = logging.getLogger(__name__)

#: Faces handed to the replica at a time (about 5 MB of float32).
PAGE_TEMPLATES = 10_000


@dataclass(frozen=True)
class RegisterShardLoader:
    """Loads one shard's face templates from the register (a :data:`biometrics.sharded.Loader`).

    ``store_url``: the register (``postgresql://...``). ``key_file``: the station's key ring file, readable at
    the same path on every node of the cluster; None: the ring from the replica's environment
    (``CHECKPOINT_KEYRING`` or ``CHECKPOINT_MASTER_KEY``, e.g. given in the gallery's ``env``).
    """

    store_url: str
    key_file: str | None = None
    page: int = 2000

    def _open(self):  # -> a read-only RegisterStorage
        from biometrics.crypto import KeyRing
        from biometrics.errors import RegisterUnavailable
        from biometrics.register import RegisterStorage

        ring = KeyRing.load(Path(self.key_file)) if self.key_file else KeyRing.from_environment()
        if ring is None:
            raise RegisterUnavailable("The gallery shard has no key ring: give a key file readable on every node, "
                                      "or CHECKPOINT_KEYRING in the replicas' environment.")
        register = RegisterStorage(self.store_url, ring, station=f"shard-{os.getpid()}", pool_size=2)
        register.open_read_only()
        return register

    def __call__(self, shard: int, shards: int) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        register = self._open()
        try:
            yield from self._pages(register, shard, shards)
        finally:
            register.close()

    def _pages(self, register, shard: int, shards: int) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        ids: list[str] = []
        packed: list[bytes] = []
        head, later, skip = 0, None, set()
        for page_head, entries in register.gallery_pages(self.page):
            if later is None:  # the snapshot is taken (at the first page): the log after it, to its end now
                head, later = page_head, _changes_after(register, page_head)
                skip = {c.ref for c in later}
            for ref, subject_id, _watchlist, templates in entries:
                if ref in skip or shard_of(subject_id, shards) != shard:
                    continue
                for modality, _finger, data in templates:
                    if modality == Modality.FACE:
                        ids.append(subject_id)
                        packed.append(data)
            if len(ids) >= PAGE_TEMPLATES:
                yield ids, unpack_face_templates(packed)
                ids, packed = [], []
        if later is None:  # no subject in the snapshot: no page, so the log was not read yet
            later = _changes_after(register, 0)
        # Subjects changed after the snapshot, as the register holds them now (erased ones are gone).
        enrolled = sorted({c.ref for c in later if c.kind == CHANGE_ENROLLED})
        for record, stored in register.load_subjects(enrolled).values():
            if shard_of(record.subject_id, shards) == shard:
                for t in stored:
                    if t.modality == Modality.FACE:
                        ids.append(record.subject_id)
                        packed.append(t.data)
        if ids:
            yield ids, unpack_face_templates(packed)
        log.info("shard %d/%d loaded from the register at change %d, %d later change(s) applied", shard, shards,
                 head, len(later))


def _changes_after(register, seq: int) -> list:
    """Every change after ``seq`` to the log's end (enrolments, erasures, withdrawals)."""
    out: list = []
    while True:
        page = register.changes_since(seq, 10_000)
        if not page:
            return [c for c in out if c.kind in (CHANGE_ENROLLED, CHANGE_ERASED, CHANGE_WITHDRAWN)]
        out += page
        seq = page[-1].seq



def ray_address(gallery: str) -> str | None:
    """The Ray address of a ``--gallery`` value: ``memory`` -> None (the station's own index); ``ray://HOST:PORT``
    (Ray Client) as is; ``ray:HOST:PORT`` (the head's GCS, from a node of the cluster) -> ``HOST:PORT``."""
    if gallery == "memory":
        return None
    if gallery.startswith("ray://") and len(gallery) > len("ray://"):
        return gallery
    if gallery.startswith("ray:") and ":" in gallery[4:]:
        return gallery[4:]
    raise ValueError(f"--gallery {gallery!r}: give memory, ray://HEAD:PORT (Ray Client) or ray:HEAD:PORT (the head's "
                     "GCS address)")


def face_index_for(gallery: str, *, kind: str = "exact", store_url: str | None = None,
                   key_file: Path | None = None, shards: int = 3, **options: object) -> object:
    """The face index a station is configured with: ``kind`` ``exact`` (``TemplateIndex``) or ``compact`` (the int8
    ``CompactIndex``), in the station's memory (``gallery`` ``memory``) or sharded over the Ray cluster at
    ``gallery`` (a factory: :class:`biometrics.gallery.Gallery` makes it once its snapshot is read), whose replicas
    read ``store_url`` with the key ring in ``key_file`` (or the one in this process's environment, passed to
    them). ``options`` go to :class:`biometrics.sharded.ShardedGallery`."""
    from biometrics.crypto import ENV_KEYRING, ENV_MASTER_KEY
    from biometrics.face import TEMPLATE_DIM

    if kind not in ("exact", "compact"):
        raise ValueError(f"--face-index {kind!r}: exact or compact")
    address = ray_address(gallery)
    if address is None:
        if kind == "compact":
            from biometrics.compact import CompactIndex

            return CompactIndex(TEMPLATE_DIM)
        from biometrics.matcher import TemplateIndex

        return TemplateIndex(TEMPLATE_DIM)
    if not store_url:
        raise ValueError("--gallery ray...: the shards load from a shared register: give --store")
    if shards < 1:
        raise ValueError("--shards must be at least 1")
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    from_env = {name: os.environ[name] for name in (ENV_KEYRING, ENV_MASTER_KEY) if os.environ.get(name)}
    env.update(from_env)  # the station's ring came from its environment: the replicas get the same
    loader = RegisterShardLoader(store_url, None if from_env or key_file is None else str(key_file))

    def make() -> object:
        from biometrics.sharded import ShardedGallery

        return ShardedGallery(TEMPLATE_DIM, loader, shards=shards, address=address,
                              index="int8" if kind == "compact" else "exact", env=env, **options)

    return make
