"""The service's fingerprint gallery: enrolled templates by subject and finger, searched 1:N at once.

Templates are kept grouped by subject in one ``PackedGallery`` (rebuilt after a change, on the next
search); a search scores every template with the compiled kernel and reduces per subject.

Scores are false-match scores. A probe of finger position f is compared with the subject's templates of
position f (or of unknown position 0; a probe of unknown position with all of them); the best raw
similarity is calibrated, then corrected for the number k of templates it was the best of
(``fusion.best_of_k``, -log10 k). Probes of the same position count as one finger (best of them, k
multiplied); each distinct position gives one score, to be fused by the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from biometrics.fingerprint.fusion import best_of_k
from biometrics.fingerprint.matching import PackedGallery
from biometrics.fingerprint.template import FingerprintTemplate
from biometrics.scores import ScoreCalibration

Probe = tuple[int, FingerprintTemplate]  # (ISO finger position, template)


class FingerprintGallery:
    """Thread-safe map subject -> [(finger, template)], with a packed snapshot for 1:N."""

    def __init__(self, calibration: ScoreCalibration) -> None:
        self.calibration = calibration
        self._lock = threading.Lock()
        self._entries: dict[str, list[Probe]] = {}
        self._snapshot: tuple[list[str], np.ndarray, np.ndarray, PackedGallery] | None = None

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._entries.values())

    def __contains__(self, subject_id: object) -> bool:
        return subject_id in self._entries

    def add(self, subject_id: str, entries: Sequence[Probe]) -> None:
        """Add templates of a subject."""
        if not entries:
            return
        with self._lock:
            self._entries.setdefault(subject_id, []).extend((int(f), t) for f, t in entries)
            self._snapshot = None

    def remove(self, subject_id: str) -> None:
        """Forget a subject's templates."""
        with self._lock:
            if self._entries.pop(subject_id, None) is not None:
                self._snapshot = None

    def _packed(self) -> tuple[list[str], np.ndarray, np.ndarray, PackedGallery]:
        with self._lock:
            if self._snapshot is None:
                subjects = list(self._entries)
                templates, fingers, starts = [], [], []
                for sid in subjects:
                    starts.append(len(templates))
                    for finger, t in self._entries[sid]:
                        templates.append(t)
                        fingers.append(finger)
                self._snapshot = (subjects, np.asarray(starts, dtype=np.int64),
                                  np.asarray(fingers, dtype=np.int64), PackedGallery(templates))
            return self._snapshot

    @staticmethod
    def _scores(raw: Sequence[np.ndarray], fingers: np.ndarray, starts: np.ndarray, probes: Sequence[Probe]
                ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per probe position: (best raw per subject, templates compared per subject)."""
        per_position: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for (position, _), r in zip(probes, raw, strict=True):
            eligible = np.ones(len(fingers), dtype=bool) if position == 0 else (
                (fingers == position) | (fingers == 0))
            masked = np.where(eligible, r, -np.inf)
            best = np.maximum.reduceat(masked, starts) if len(starts) else np.zeros(0)
            count = np.add.reduceat(eligible.astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
            if position in per_position:
                b0, c0 = per_position[position]
                per_position[position] = (np.maximum(b0, best), c0 + count)
            else:
                per_position[position] = (best, count)
        return per_position

    def search(self, probes: Sequence[Probe]) -> dict[str, list[tuple[int, float]]]:
        """False-match scores of every subject with a comparable template: subject -> [(finger, score)]."""
        subjects, starts, fingers, packed = self._packed()
        if not probes or not subjects:
            return {}
        raw = [packed.scores(t) for _, t in probes]
        per_position = self._scores(raw, fingers, starts, probes)
        out: dict[str, list[tuple[int, float]]] = {}
        for position, (best, count) in per_position.items():
            calibrated = self.calibration.score(np.where(np.isfinite(best), best, 0.0))
            for i, sid in enumerate(subjects):
                if count[i] > 0:
                    out.setdefault(sid, []).append((position, best_of_k(float(calibrated[i]), int(count[i]))))
        return out

    def compare(self, subject_id: str, probes: Sequence[Probe]) -> list[tuple[int, float]]:
        """False-match scores of one subject (1:1): [(finger, score)] for each comparable probe position."""
        from biometrics.fingerprint.matching import compare

        with self._lock:
            entries = list(self._entries.get(subject_id, ()))
        if not entries or not probes:
            return []
        fingers = np.asarray([f for f, _ in entries], dtype=np.int64)
        raw = [np.array([compare(t, ref) for _, ref in entries]) for _, t in probes]
        per_position = self._scores(raw, fingers, np.zeros(1, dtype=np.int64), probes)
        return [(position, best_of_k(float(self.calibration.score(float(best[0]))), int(count[0])))
                for position, (best, count) in per_position.items() if count[0] > 0]
