"""Subject ids and their template rows in numpy arrays: a gallery index's bookkeeping without a Python object a subject.

A gallery of ten million subjects kept as ``dict[str, object]`` costs about 390 bytes a subject (the id string,
an object and its row list, two dictionary entries): more than half of the float32 template itself. Here each
subject is a *code* (0, 1, 2, ... in order of first appearance) and costs about 50-60 bytes:

- its id, UTF-8, in one byte buffer (``offsets[code]`` to ``offsets[code + 1]``);
- its id's ``hash()`` (int64) and the code in an open-addressing table of int64 slots (linear probing, at most
  half full), so an id is found without a Python dictionary;
- its first row (int32; -1 while it holds none); the few subjects with several rows also have a list in
  ``more`` (a Python dictionary, small: most subjects have one template).

Codes are never reused for another id and never forgotten (a removed subject keeps its code; enrolled again it
gets it back), so the code stored beside a row in an index snapshot always names the same subject. Appends only
write beyond what is published and buffers are copied before they are swapped, so :meth:`name` and
``in`` are safe without the owner's lock; every other method runs under it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

_EMPTY = -1


class SubjectTable:
    """Subject id <-> code, and each subject's rows, for one gallery index (the index holds the lock)."""

    def __init__(self) -> None:
        self._blob = np.empty(0, dtype=np.uint8)
        self._used = 0  # bytes of ``_blob`` in use
        self._offsets = np.zeros(1, dtype=np.int64)
        self._hashes = np.empty(0, dtype=np.int64)
        self._first = np.empty(0, dtype=np.int32)
        self._codes = 0  # codes handed out
        self._more: dict[int, list[int]] = {}  # code -> all its rows, for subjects with more than one
        self._slots = np.full(16, _EMPTY, dtype=np.int64)
        self._live = 0
        self._per_subject: Counter[int] = Counter()  # templates a subject holds -> how many subjects

    # -- reads --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Subjects holding at least one row."""
        return self._live

    def __contains__(self, subject_id: object) -> bool:
        if not isinstance(subject_id, str):
            return False
        code = self.code_of(subject_id)
        return code is not None and self._first[code] >= 0

    @property
    def most_rows(self) -> int:
        """The most rows any subject holds (0 when empty)."""
        return max(self._per_subject, default=0)

    @property
    def nbytes(self) -> int:
        """Bytes of the table's arrays (allocated capacity; the ``more`` lists not counted)."""
        return sum(a.nbytes for a in (self._blob, self._offsets, self._hashes, self._first, self._slots))

    def name(self, code: int) -> str:
        """The subject id of ``code``."""
        offsets = self._offsets
        return self._blob[offsets[code] : offsets[code + 1]].tobytes().decode("utf-8")

    def code_of(self, subject_id: str) -> int | None:
        """The code of ``subject_id`` (held or removed), or None if it was never added."""
        h = hash(subject_id)
        slots = self._slots
        mask = len(slots) - 1
        i = h & mask
        while True:
            code = int(slots[i])
            if code == _EMPTY:
                return None
            if self._hashes[code] == h and self.name(code) == subject_id:
                return code
            i = (i + 1) & mask

    def rows_of(self, subject_id: str) -> list[int]:
        """The rows ``subject_id`` holds, in the order they were added ([] if none)."""
        code = self.code_of(subject_id)
        return [] if code is None else self._rows(code)

    def _rows(self, code: int) -> list[int]:
        more = self._more.get(code)
        if more is not None:
            return list(more)
        first = int(self._first[code])
        return [first] if first >= 0 else []

    # -- writes (under the owner's lock) ------------------------------------------------------------
    def append(self, subject_ids: Sequence[str], start: int) -> np.ndarray:
        """Rows ``start, start + 1, ...`` now belong to ``subject_ids[0], subject_ids[1], ...``; their codes (int32)."""
        m = len(subject_ids)
        hashes = np.fromiter(map(hash, subject_ids), dtype=np.int64, count=m)
        codes = self._find(hashes, subject_ids)
        new = np.flatnonzero(codes == _EMPTY)
        if len(new):
            if len(np.unique(hashes[new])) == len(new):  # distinct ids (distinct hashes): the bulk-load case
                codes[new] = self._register([subject_ids[i] for i in new], hashes[new])
            else:
                first_at: dict[str, int] = {}
                for i in new:
                    first_at.setdefault(subject_ids[i], int(i))
                fresh = np.fromiter(first_at.values(), dtype=np.int64, count=len(first_at))
                codes[fresh] = self._register(list(first_at), hashes[fresh])
                codes[new] = codes[[first_at[subject_ids[i]] for i in new]]
        rows = np.arange(start, start + m, dtype=np.int64)
        if len(np.unique(codes)) == m and (self._first[codes] < 0).all():
            self._first[codes] = rows  # each a subject holding nothing yet: one row each
            self._live += m
            self._per_subject[1] += m
            return codes.astype(np.int32)
        added: dict[int, list[int]] = {}
        for code, row in zip(codes.tolist(), rows.tolist(), strict=True):
            added.setdefault(code, []).append(row)
        for code, new_rows in added.items():
            held = self._rows(code)
            self._count(len(held), len(held) + len(new_rows))
            if not held:
                self._live += 1
            every = held + new_rows
            self._first[code] = every[0]
            if len(every) > 1:
                self._more[code] = every
        return codes.astype(np.int32)

    def remove(self, subject_id: str) -> list[int]:
        """Forget the rows of ``subject_id`` (its code stays); the rows it held ([] if none)."""
        code = self.code_of(subject_id)
        if code is None:
            return []
        rows = self._rows(code)
        if rows:
            self._count(len(rows), 0)
            self._first[code] = -1
            self._more.pop(code, None)
            self._live -= 1
        return rows

    def remap(self, new_row: np.ndarray) -> None:
        """Rows moved (the owner compacted its buffers): row ``r`` of every subject held is now ``new_row[r]``."""
        first = self._first[: self._codes]
        held = first >= 0
        first[held] = new_row[first[held]]
        for code, rows in self._more.items():
            self._more[code] = new_row[rows].tolist()

    def _count(self, before: int, after: int) -> None:
        if before:
            self._per_subject[before] -= 1
            if not self._per_subject[before]:
                del self._per_subject[before]
        if after:
            self._per_subject[after] += 1

    def _find(self, hashes: np.ndarray, subject_ids: Sequence[str]) -> np.ndarray:
        """The code of each id (int64), _EMPTY for ids never added; probes all ids at once."""
        out = np.full(len(hashes), _EMPTY, dtype=np.int64)
        slots = self._slots
        mask = len(slots) - 1
        todo = np.arange(len(hashes))
        pos = hashes & mask
        while len(todo):
            code = slots[pos]
            occupied = code != _EMPTY
            same_hash = np.zeros(len(todo), dtype=bool)
            same_hash[occupied] = self._hashes[code[occupied]] == hashes[todo[occupied]]
            found = np.zeros(len(todo), dtype=bool)
            for j in np.flatnonzero(same_hash):  # ids found (or, very rarely, another id of the same hash)
                if self.name(int(code[j])) == subject_ids[todo[j]]:
                    out[todo[j]] = code[j]
                    found[j] = True
            go_on = occupied & ~found
            todo, pos = todo[go_on], (pos[go_on] + 1) & mask
        return out

    def _register(self, subject_ids: list[str], hashes: np.ndarray) -> np.ndarray:
        """New codes for ids never added (distinct), holding no rows yet."""
        encoded = [s.encode("utf-8") for s in subject_ids]
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        del encoded
        m, c = len(subject_ids), self._codes
        if self._used + len(data) > len(self._blob):
            self._blob = _grown(self._blob, self._used + len(data), self._used)
        if c + m + 1 > len(self._offsets):
            self._offsets = _grown(self._offsets, c + m + 1, c + 1)
        if c + m > len(self._first):
            self._hashes = _grown(self._hashes, c + m, c)
            self._first = _grown(self._first, c + m, c)
        self._blob[self._used : self._used + len(data)] = data
        self._offsets[c + 1 : c + m + 1] = self._used + np.cumsum(lengths)
        self._hashes[c : c + m] = hashes
        self._first[c : c + m] = -1
        self._used += len(data)
        codes = np.arange(c, c + m, dtype=np.int64)
        if 2 * (c + m) > len(self._slots):
            size = len(self._slots)
            while 2 * (c + m) > size:
                size *= 2
            slots = np.full(size, _EMPTY, dtype=np.int64)
            _insert(slots, np.arange(c + m, dtype=np.int64), self._hashes[: c + m])
            self._codes = c + m
            self._slots = slots
        else:
            self._codes = c + m
            _insert(self._slots, codes, hashes)
        return codes


def _grown(array: np.ndarray, needed: int, used: int) -> np.ndarray:
    """A larger copy of ``array`` (1.5x, at least ``needed``) holding its first ``used`` entries."""
    out = np.empty(max(needed, len(array) * 3 // 2 + 16), dtype=array.dtype)
    out[:used] = array[:used]
    return out


def _insert(slots: np.ndarray, codes: np.ndarray, hashes: np.ndarray) -> None:
    """Put ``codes`` (not in ``slots`` yet) in ``slots`` by linear probing from ``hash & mask``, all at once."""
    mask = len(slots) - 1
    pos = hashes & mask
    while len(codes):
        free = np.flatnonzero(slots[pos] == _EMPTY)
        _, first = np.unique(pos[free], return_index=True)  # one code per free slot this round
        won = free[first]
        slots[pos[won]] = codes[won]
        rest = np.ones(len(codes), dtype=bool)
        rest[won] = False
        codes, pos = codes[rest], (pos[rest] + 1) & mask
