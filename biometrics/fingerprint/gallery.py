"""The service's fingerprint gallery: enrolled templates by subject and finger, searched 1:N at once.

Storage: every template's cylinders are appended to contiguous buffers (the arrays the compiled kernel
scans), with per template its finger, its subject's code and the version that removed it. A change costs
the size of the change, never the size of the gallery:

- ``add`` appends rows into spare capacity beyond what any published snapshot can see (capacity grows by
  1.5x, so copying is amortised O(1) per template);
- ``remove`` marks the subject's rows removed (a tombstone: the version of the change that removed them,
  written in place; a snapshot of an older version still reads them as present), and once a quarter of
  the rows are dead the buffers are rebuilt without them (amortised over those removals);
- every change publishes a new immutable snapshot (views of the buffers, its version, its row count);
  a search uses the snapshot it started with from start to end and never packs or copies the gallery, so
  it never sees half a change and is never stalled by one. Writers serialise on one lock; searches take
  none (the compiled scan itself is shared by searches in turn, see ``matching.template_scores``).

A search scores every row with the compiled kernel (dead rows too: at most a quarter of them) and reduces
per subject, ignoring rows removed at or before its snapshot's version.

Scores are false-match scores. In a search (1:N: Identify, and an enrolment's duplicate search) every probe is
compared with ALL of a subject's templates, whatever the positions declared: the scanner cannot tell which finger
is on it, so a person enrolling again with fingers under other positions, or a watchlisted traveller presenting
another finger than asked, is still found. In ``compare`` (1:1, Verify: the subject named, the kiosk asking for a
finger) a probe of finger position f is compared with the subject's templates of position f (or of unknown
position 0; a probe of unknown position with all of them): another finger than asked is rejected, never
accepted. Either way the best raw similarity is calibrated, then corrected for the number k of templates it was
the best of (``fusion.best_of_k``, -log10 k; in a search k counts every template of the subject).

Each ENROLLED finger gives a subject at most one score (:func:`per_enrolled_finger`): probes whose best
templates are of the same enrolled finger, or that declare the same position (several placements of one
finger), count as one finger (best of them, k the sum of their comparisons), so one finger sent twice, once
with its position and once as 0, is not fused as two independent fingers; a template enrolled as 0 may be any
of the subject's fingers, so a probe that matched one is one finger with the others. Each such finger gives one
score, to be fused by the caller.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import NamedTuple

import numpy as np

from biometrics.fingerprint.cylinders import N_WORDS
from biometrics.fingerprint.fusion import best_of_k
from biometrics.fingerprint.matching import cylinder_arrays, template_scores
from biometrics.fingerprint.template import FingerprintTemplate
from biometrics.scores import ScoreCalibration

Probe = tuple[int, FingerprintTemplate]  # (ISO finger position, template)

PRESENT = np.iinfo(np.int64).max  # ``removed_at`` of a template not removed
GROWTH = 1.5  # capacity factor when the buffers are full
DEAD_FRACTION = 0.25  # rebuild the buffers without removed rows once this share of the rows is dead
MIN_TEMPLATES = 256  # smallest capacity, in templates
MIN_CYLINDERS = 8192  # smallest capacity, in cylinders


class _Snapshot(NamedTuple):
    """The gallery as of one change: templates ``[0, n)`` of the buffers, read-only for searches."""

    version: int
    n: int
    live: int  # templates not removed
    x: np.ndarray  # (cylinders,) float64: cylinder geometry of templates [0, n)
    y: np.ndarray
    angle: np.ndarray
    bits: np.ndarray  # (cylinders, N_WORDS) uint64
    valid: np.ndarray
    offsets: np.ndarray  # (n + 1,) int64: template t owns cylinders offsets[t]:offsets[t + 1]
    fingers: np.ndarray  # (n,) int64 ISO finger positions
    owners: np.ndarray  # (n,) int64 subject codes
    removed_at: np.ndarray  # (n,) int64; a view written in place with versions later than this one
    names: list[str]  # subject code -> subject id; append-only, codes below n_codes belong to this snapshot
    n_codes: int


@dataclass
class _Subject:
    code: int
    rows: list[int] = field(default_factory=list)
    entries: list[Probe] = field(default_factory=list)


def matched_per_probe(raw: Sequence[np.ndarray], fingers: np.ndarray, owners: np.ndarray, alive: np.ndarray,
                      n_subjects: int, probes: Sequence[Probe], *, by_position: bool
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best raw score, templates compared, enrolled finger of the best template): three (probes, subject codes)
    arrays. With ``by_position`` (1:1, the subject named) a probe of position f is compared with the rows of
    position f or 0, one of position 0 with every row; without (1:N) every probe with every row, whatever the
    positions (the scanner cannot tell which finger is on it: a finger declared under another position must still
    find its owner), the count then holding every row so that ``best_of_k`` corrects for all of them. A subject
    with no row compared has count 0 (best -inf, finger 0). Of rows whose raw scores tie, the best is one of
    position 0, else of the lowest position (never the rows' order)."""
    best = np.full((len(probes), n_subjects), -np.inf)
    count = np.zeros((len(probes), n_subjects), dtype=np.int64)
    matched = np.zeros((len(probes), n_subjects), dtype=np.int64)
    for p, ((position, _), r) in enumerate(zip(probes, raw, strict=True)):
        eligible = alive if position == 0 or not by_position else alive & ((fingers == position) | (fingers == 0))
        rows = np.flatnonzero(eligible)
        if not len(rows):
            continue
        o, s = owners[rows], r[rows]
        # by subject, then by score, then by finger falling (0, unknown, highest): each subject's best row last, a
        # tie of raw scores going to position 0, then the lowest position, whatever the rows' order (a station loads
        # them in its own), so every station groups the probes alike (per_enrolled_finger) and 0 joins the most
        order = np.lexsort((-fingers[rows], s, o))
        sorted_owners = o[order]
        last = order[np.r_[sorted_owners[1:] != sorted_owners[:-1], True]]
        best[p, o[last]] = s[last]
        matched[p, o[last]] = fingers[rows[last]]
        count[p] = np.bincount(o, minlength=n_subjects)
    return best, count, matched


def per_enrolled_finger(best: np.ndarray, count: np.ndarray, matched: np.ndarray, positions: Sequence[int]
                        ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The probes of a search grouped per subject so that each enrolled finger gives at most one score:
    [(finger, best raw score, templates compared)], three arrays over subject codes per group (count 0: the
    group does not reach that subject).

    Two probes that reached a subject are one finger when their best templates are of the same enrolled finger
    (one finger sent twice, once with its position and once as unknown, 0, the proto's default), or when they
    declare the same position (several placements of one finger, docs/benchmarks.md), and so on transitively: a
    group scores the best of its probes, over every template they were compared with (``best_of_k`` of the sum
    of the counts). A template enrolled without a position (0) may be any of the subject's fingers, so a probe
    whose best template is one is one finger with every other probe of that subject (the same finger enrolled
    under its position and again as 0 is not counted twice; a subject with such templates may get one score
    for two fingers, never two for one). The finger of a group is the enrolled finger of its best comparison,
    or that probe's declared position when it matched a template of unknown position. ``best``, ``count``,
    ``matched``: :func:`matched_per_probe`'s arrays."""
    n_probes = len(positions)
    present = count > 0
    label = np.repeat(np.arange(n_probes)[:, None], best.shape[1], axis=1)
    edges = []
    for p in range(n_probes):
        for q in range(p + 1, n_probes):
            # a template of unknown position may be any of the subject's fingers, the declared ones too
            same = (matched[p] == matched[q]) | (matched[p] == 0) | (matched[q] == 0)
            if positions[p] != 0 and positions[p] == positions[q]:
                same = np.ones_like(same)
            edge = present[p] & present[q] & same
            if edge.any():
                edges.append((p, q, edge))
    changed = bool(edges)
    while changed:  # each probe takes the lowest probe index of its group (labels only fall: this ends)
        changed = False
        for p, q, edge in edges:
            apart = edge & (label[p] != label[q])
            if apart.any():
                low = np.minimum(label[p], label[q])
                label[p, apart] = label[q, apart] = low[apart]
                changed = True
    groups = []
    columns = np.arange(best.shape[1])
    declared = np.asarray(positions, dtype=np.int64)
    for g in range(n_probes):
        member = (label == g) & present
        if not member[g].any():
            continue
        scores = np.where(member, best, -np.inf)
        top = np.argmax(scores, axis=0)
        finger = matched[top, columns]
        finger = np.where(finger == 0, declared[top], finger)
        groups.append((finger, scores[top, columns], np.where(member, count, 0).sum(axis=0)))
    return groups


def _checked(entries: Sequence[Probe]) -> list[tuple[int, FingerprintTemplate, tuple[np.ndarray, ...]]]:
    """(finger, template, its cylinder arrays) of each entry; TypeError/ValueError for anything else."""
    out = []
    for finger, template in entries:
        if not isinstance(template, FingerprintTemplate):
            raise TypeError("a fingerprint gallery entry is (finger position, FingerprintTemplate)")
        arrays = cylinder_arrays(template)
        if len(arrays[0]) and (arrays[3].shape != (len(arrays[0]), N_WORDS) or arrays[4].shape != arrays[3].shape):
            raise ValueError("the fingerprint template's cylinders do not have this software's geometry")
        out.append((int(finger), template, arrays))
    return out


class FingerprintGallery:
    """Thread-safe map subject -> [(finger, template)], searched 1:N over append-only packed buffers."""

    def __init__(self, calibration: ScoreCalibration) -> None:
        self.calibration = calibration
        self._lock = threading.Lock()
        self._subjects: dict[str, _Subject] = {}
        self._names: list[str] = []
        self._n = 0  # templates written (live and dead)
        self._n_cylinders = 0
        self._dead = 0
        self._version = 0
        self._allocate(MIN_TEMPLATES, MIN_CYLINDERS)
        self._publish()

    # -- buffers ------------------------------------------------------------------------------------
    def _allocate(self, templates: int, cylinders: int) -> None:
        """Fresh buffers of the given capacities holding the current rows."""
        n, nc = self._n, self._n_cylinders
        x, y, angle = (np.empty(cylinders, dtype=np.float64) for _ in range(3))
        bits, valid = (np.empty((cylinders, N_WORDS), dtype=np.uint64) for _ in range(2))
        offsets = np.zeros(templates + 1, dtype=np.int64)
        fingers, owners, removed_at = (np.empty(templates, dtype=np.int64) for _ in range(3))
        if n:
            for new, old in ((x, self._x), (y, self._y), (angle, self._angle), (bits, self._bits),
                             (valid, self._valid)):
                new[:nc] = old[:nc]
            offsets[: n + 1] = self._offsets[: n + 1]
            for new, old in ((fingers, self._fingers), (owners, self._owners), (removed_at, self._removed_at)):
                new[:n] = old[:n]
        self._x, self._y, self._angle, self._bits, self._valid = x, y, angle, bits, valid
        self._offsets, self._fingers, self._owners, self._removed_at = offsets, fingers, owners, removed_at

    def _reserve(self, templates: int, cylinders: int) -> None:
        """Room for ``templates`` more templates holding ``cylinders`` more cylinders (amortised growth)."""
        t_cap, c_cap = len(self._fingers), len(self._x)
        need_t, need_c = self._n + templates, self._n_cylinders + cylinders
        if need_t > t_cap or need_c > c_cap:
            self._allocate(max(need_t, int(t_cap * GROWTH)) if need_t > t_cap else t_cap,
                           max(need_c, int(c_cap * GROWTH)) if need_c > c_cap else c_cap)

    def _publish(self) -> None:
        n, nc = self._n, self._n_cylinders
        self._version += 1
        self._snapshot = _Snapshot(
            version=self._version, n=n, live=n - self._dead,
            x=self._x[:nc], y=self._y[:nc], angle=self._angle[:nc], bits=self._bits[:nc], valid=self._valid[:nc],
            offsets=self._offsets[: n + 1], fingers=self._fingers[:n], owners=self._owners[:n],
            removed_at=self._removed_at[:n], names=self._names, n_codes=len(self._names))

    def _compact(self) -> None:
        """Rebuild the buffers without removed rows, subject codes renumbered in the same order."""
        n = self._n
        keep = self._removed_at[:n] == PRESENT
        counts = np.diff(self._offsets[: n + 1])
        keep_cylinders = np.repeat(keep, counts)
        live, live_cylinders = int(keep.sum()), int(counts[keep].sum())
        old_codes = sorted(subject.code for subject in self._subjects.values())
        code_map = np.full(len(self._names), -1, dtype=np.int64)
        code_map[old_codes] = np.arange(len(old_codes))
        new_row = np.cumsum(keep) - 1
        t_cap = max(int(live * GROWTH), MIN_TEMPLATES)
        c_cap = max(int(live_cylinders * GROWTH), MIN_CYLINDERS)
        x, y, angle = (np.empty(c_cap, dtype=np.float64) for _ in range(3))
        bits, valid = (np.empty((c_cap, N_WORDS), dtype=np.uint64) for _ in range(2))
        for new, old in ((x, self._x), (y, self._y), (angle, self._angle), (bits, self._bits), (valid, self._valid)):
            np.compress(keep_cylinders, old[: self._n_cylinders], axis=0, out=new[:live_cylinders])
        offsets = np.zeros(t_cap + 1, dtype=np.int64)
        offsets[1 : live + 1] = np.cumsum(counts[keep])
        fingers, owners, removed_at = (np.empty(t_cap, dtype=np.int64) for _ in range(3))
        fingers[:live] = self._fingers[:n][keep]
        owners[:live] = code_map[self._owners[:n][keep]]
        removed_at[:live] = PRESENT
        self._names = [self._names[c] for c in old_codes]  # a new list: older snapshots keep theirs
        for subject in self._subjects.values():
            subject.code = int(code_map[subject.code])
            subject.rows = new_row[subject.rows].tolist()
        self._x, self._y, self._angle, self._bits, self._valid = x, y, angle, bits, valid
        self._offsets, self._fingers, self._owners, self._removed_at = offsets, fingers, owners, removed_at
        self._n, self._n_cylinders, self._dead = live, live_cylinders, 0

    # -- container protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._snapshot.live

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._subjects

    @property
    def nbytes(self) -> int:
        """Bytes of the packed buffers (allocated capacity: up to 1.5x what the templates need)."""
        with self._lock:
            buffers = (self._x, self._y, self._angle, self._bits, self._valid, self._offsets, self._fingers,
                       self._owners, self._removed_at)
            return sum(b.nbytes for b in buffers)

    # -- writes -------------------------------------------------------------------------------------
    def add(self, subject_id: str, entries: Sequence[Probe]) -> None:
        """Add templates of a subject (visible to searches together, in one change)."""
        self.add_many([(subject_id, entries)])

    def add_many(self, subjects: Iterable[tuple[str, Sequence[Probe]]]) -> None:
        """``add(subject_id, entries)`` for each pair in order, published as one change (bulk loading)."""
        batch = [(subject_id, _checked(entries)) for subject_id, entries in subjects]
        batch = [(subject_id, checked) for subject_id, checked in batch if checked]
        if not batch:
            return
        parts = [arrays for _, checked in batch for _, _, arrays in checked]
        cylinders = [p for p in parts if len(p[0])]
        ends = list(accumulate(len(p[0]) for p in parts))
        m, c = len(parts), ends[-1]
        fingers = [finger for _, checked in batch for finger, _, _ in checked]
        with self._lock:
            self._reserve(m, c)
            n, nc = self._n, self._n_cylinders
            if cylinders:
                for i, buffer in enumerate((self._x, self._y, self._angle, self._bits, self._valid)):
                    np.concatenate([p[i] for p in cylinders], out=buffer[nc : nc + c])
            self._offsets[n + 1 : n + m + 1] = ends
            self._offsets[n + 1 : n + m + 1] += nc
            self._fingers[n : n + m] = fingers
            self._removed_at[n : n + m] = PRESENT
            names = len(self._names)
            codes: dict[str, int] = {}
            owners = []
            for subject_id, checked in batch:
                subject = self._subjects.get(subject_id)
                code = subject.code if subject is not None else codes.setdefault(subject_id, names + len(codes))
                owners += [code] * len(checked)
            self._owners[n : n + m] = owners
            # Only now the bookkeeping: a failure above leaves rows no snapshot can see.
            self._names.extend(codes)
            row = n
            for subject_id, checked in batch:
                subject = self._subjects.get(subject_id)
                if subject is None:
                    subject = self._subjects[subject_id] = _Subject(codes[subject_id])
                subject.rows.extend(range(row, row + len(checked)))
                subject.entries.extend((finger, template) for finger, template, _ in checked)
                row += len(checked)
            self._n, self._n_cylinders = n + m, nc + c
            self._publish()

    def remove(self, subject_id: str) -> None:
        """Forget a subject's templates (unknown subjects are ignored)."""
        with self._lock:
            subject = self._subjects.pop(subject_id, None)
            if subject is None:
                return
            # Tombstones: searches on older snapshots read these rows as present (their version is lower).
            self._removed_at[subject.rows] = self._version + 1
            self._dead += len(subject.rows)
            if self._dead > DEAD_FRACTION * self._n:
                self._compact()
            self._publish()

    # -- reads --------------------------------------------------------------------------------------
    def entries_of(self, subject_id: str) -> list[Probe]:
        """The (finger, template) pairs held for a subject, as added ([] if unknown)."""
        with self._lock:
            subject = self._subjects.get(subject_id)
            return list(subject.entries) if subject is not None else []

    def search(self, probes: Sequence[Probe]) -> dict[str, list[tuple[int, float]]]:
        """False-match scores of every subject with a template: subject -> [(finger, score)], one per enrolled
        finger the probes reached (:func:`per_enrolled_finger`). Every probe is compared with every template,
        whatever its declared position (1:N; see the module's docstring)."""
        snap = self._snapshot
        if not probes or not snap.live:
            return {}
        raw = [template_scores(t, snap.x, snap.y, snap.angle, snap.bits, snap.valid, snap.offsets)
               for _, t in probes]
        alive = snap.removed_at > snap.version
        best, count, matched = matched_per_probe(raw, snap.fingers, snap.owners, alive, snap.n_codes, probes,
                                                 by_position=False)
        out: dict[str, list[tuple[int, float]]] = {}
        for finger, best_raw, compared in per_enrolled_finger(best, count, matched, [f for f, _ in probes]):
            codes = np.flatnonzero(compared > 0)
            if not len(codes):
                continue
            calibrated = self.calibration.score(np.where(np.isfinite(best_raw[codes]), best_raw[codes], 0.0))
            counts = compared[codes]
            # best_of_k of each subject's score, one array: log10 of each count taken as best_of_k takes it
            logs = np.array([math.log10(max(1, c)) for c in range(int(counts.max()) + 1)])
            corrected = np.maximum(0.0, np.asarray(calibrated, dtype=np.float64) - logs[counts]).tolist()
            for code, position, score in zip(codes.tolist(), finger[codes].tolist(), corrected, strict=True):
                out.setdefault(snap.names[code], []).append((position, score))
        return out

    def compare(self, subject_id: str, probes: Sequence[Probe]) -> list[tuple[int, float]]:
        """False-match scores of one subject (1:1): [(finger, score)], one per enrolled finger the probes reached
        (:func:`per_enrolled_finger`); a probe reaches the templates of its declared position (and of 0)."""
        from biometrics.fingerprint.matching import compare

        with self._lock:
            subject = self._subjects.get(subject_id)
            entries = list(subject.entries) if subject is not None else []
        if not entries or not probes:
            return []
        fingers = np.asarray([f for f, _ in entries], dtype=np.int64)
        raw = [np.array([compare(t, ref) for _, ref in entries]) for _, t in probes]
        best, count, matched = matched_per_probe(raw, fingers, np.zeros(len(entries), dtype=np.int64),
                                                 np.ones(len(entries), dtype=bool), 1, probes, by_position=True)
        return [(int(finger[0]), best_of_k(float(self.calibration.score(float(best_raw[0]))), int(compared[0])))
                for finger, best_raw, compared in per_enrolled_finger(best, count, matched, [f for f, _ in probes])
                if compared[0] > 0]
