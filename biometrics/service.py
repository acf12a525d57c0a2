"""The checkpoint's decisions: enrolment with a duplicate search, 1:1 verification, 1:N identification.

Pure Python over the core: extraction, the in-memory gallery, storage and the decision log. It knows
nothing of gRPC; ``verify/servicer.py`` adapts it. Every score is a false-match score ``-log10(FMR)``
(:mod:`biometrics.scores`) and the operating threshold is ``-log10(fmr)`` for the configured FMR.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from biometrics.crypto import KeyRing
from biometrics.errors import (
    BiometricError,
    InvalidSample,
    SubjectExists,
    SubjectNotFound,
)
from biometrics.face import TEMPLATE_DIM, FaceTemplate, face_template_of
from biometrics.fingerprint import ENROL_MIN_QUALITY, FingerprintTemplate, extract_fingerprint, fingerprint_quality
from biometrics.fingerprint.fusion import fuse_false_match_scores
from biometrics.fingerprint.gallery import FingerprintGallery
from biometrics.imaging import DEFAULT_LIMITS, ImageLimits, decode_grey
from biometrics.matcher import TemplateIndex
from biometrics.scores import ScoreCalibration, threshold_for_fmr, threshold_for_fpir
from biometrics.statistics import TrafficStatistics
from biometrics.storage import Storage, StoredTemplate
from biometrics.templates import pack_face_template, unpack_face_template
from biometrics.types import (
    Actor,
    Candidate,
    EnrolmentResult,
    IdentificationResult,
    Modality,
    ModalityScore,
    Sample,
    SampleQuality,
    SubjectInfo,
    SubjectRecord,
    VerificationResult,
)

log = logging.getLogger(__name__)

SUBJECT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")


class NoReference(BiometricError):
    """The subject has no enrolled reference for the modality of the probe."""


class FaceExtractor(Protocol):
    """Anything that turns a face sample into a template (in-process, or a worker pool)."""

    def extract_face(self, image: bytes | np.ndarray, purpose: str = "probe") -> FaceTemplate:
        """The face template of ``image`` (encoded bytes or RGB pixels)."""
        ...


class DecisionLog(Protocol):
    """Where every decision is recorded (the tamper-evident audit log)."""

    def record(self, kind: str, actor: Actor, decision_id: str, **fields: Any) -> None:
        """Append one decision."""
        ...


@dataclass
class InProcessExtractor:
    """Extraction on the calling thread."""

    limits: ImageLimits = DEFAULT_LIMITS

    def extract_face(self, image: bytes | np.ndarray, purpose: str = "probe") -> FaceTemplate:
        """See :class:`FaceExtractor`."""
        return face_template_of(image, purpose, self.limits)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ServiceConfig:
    """Operating settings of a checkpoint."""

    fmr: float = 0.001
    # 1:N searches (Identify, the duplicate search at enrolment): the share of searches of someone not
    # enrolled that may return a candidate. The threshold grows with the gallery (see threshold_for_fpir).
    fpir: float = 0.01
    default_max_candidates: int = 10
    max_candidates: int = 100
    max_samples: int = 10
    limits: ImageLimits = field(default_factory=ImageLimits)


def _check_subject_id(subject_id: str) -> None:
    if not SUBJECT_ID_PATTERN.match(subject_id or ""):
        raise InvalidSample(
            "The subject id must be 1 to 64 letters, digits or . _ : / - (the travel-document number)."
        )


def _new_decision_id() -> str:
    return uuid.uuid4().hex


class CheckpointService:
    """Enrolment, verification and identification over one gallery and its storage."""

    def __init__(
        self,
        storage: Storage,
        *,
        config: ServiceConfig | None = None,
        face_calibration: ScoreCalibration | None = None,
        fingerprint_calibration: ScoreCalibration | None = None,
        extractor: FaceExtractor | None = None,
        decision_log: DecisionLog | None = None,
        statistics: TrafficStatistics | None = None,
    ) -> None:
        self.storage = storage
        self.config = config or ServiceConfig()
        self.face_calibration = face_calibration or ScoreCalibration.for_modality("face")
        self.extractor: FaceExtractor = extractor or InProcessExtractor(self.config.limits)
        self.decision_log = decision_log
        self.statistics = statistics or TrafficStatistics()
        self.threshold = threshold_for_fmr(self.config.fmr)
        threshold_for_fpir(self.config.fpir, 1)  # refuse a bad rate at start
        self.face_index = TemplateIndex(TEMPLATE_DIM)
        self.fingerprint_gallery = FingerprintGallery(
            fingerprint_calibration or ScoreCalibration.for_modality("fingerprint"))
        self._watchlist: dict[str, bool] = {}
        # Enrolments and deletions are serialised, so that a duplicate search and the insert it
        # clears are one step; searches never take this lock.
        self._write_lock = threading.Lock()
        self._load_gallery()

    @classmethod
    def open(cls, data_dir: Path, *, key_file: Path | None = None, **kwargs: Any) -> CheckpointService:
        """The service over ``data_dir/checkpoint.db``, its key ring created on a first start."""
        keyring = KeyRing.load_or_create(key_file or data_dir / "keys" / "keyring.json")
        return cls(Storage(data_dir / "checkpoint.db", keyring), **kwargs)

    def _load_gallery(self) -> None:
        subjects = templates = 0
        face_owners: list[str] = []
        faces: list[np.ndarray] = []
        for record, stored in self.storage.load_all():
            face_rows = [unpack_face_template(t.data) for t in stored if t.modality == Modality.FACE]
            face_owners += [record.subject_id] * len(face_rows)
            faces += face_rows
            self.fingerprint_gallery.add(record.subject_id, [
                (t.finger, FingerprintTemplate.from_bytes(t.data)) for t in stored
                if t.modality == Modality.FINGERPRINT])
            self._watchlist[record.subject_id] = record.info.watchlist
            subjects += 1
            templates += len(stored)
        if faces:
            self.face_index.add_many(face_owners, np.stack(faces))  # one bulk append, one snapshot
        log.info("gallery loaded: %d subjects, %d templates", subjects, templates)

    # -- helpers -------------------------------------------------------------------------------

    def _check_samples(self, samples: Sequence[Sample]) -> None:
        if not samples:
            raise InvalidSample("No sample was sent: at least one face or fingerprint image is needed.")
        if len(samples) > self.config.max_samples:
            raise InvalidSample(f"{len(samples)} samples were sent; at most {self.config.max_samples} are accepted.")

    def _extract_faces(self, samples: Sequence[Sample], purpose: str) -> list[FaceTemplate]:
        faces = []
        for sample in samples:
            if sample.modality == Modality.FINGERPRINT:
                continue  # see _extract_fingers
            if sample.modality != Modality.FACE:
                raise InvalidSample("Each sample must say its modality (FACE or FINGERPRINT).")
            faces.append(self.extractor.extract_face(sample.image, purpose))
        return faces

    def _extract_fingers(self, samples: Sequence[Sample], purpose: str) -> list[tuple[int, FingerprintTemplate]]:
        """(ISO finger position, template) of each FINGERPRINT sample (greyscale, about 500 dpi)."""
        fingers = []
        for sample in samples:
            if sample.modality != Modality.FINGERPRINT:
                continue
            grey = decode_grey(sample.image, self.config.limits) if isinstance(sample.image, bytes) else sample.image
            kwargs = {"min_quality": ENROL_MIN_QUALITY} if purpose == "enrol" else {}
            fingers.append((int(sample.finger), extract_fingerprint(grey, **kwargs)))
        return fingers

    def face_score(self, distance: float | np.ndarray) -> float | np.ndarray:
        """False-match score of face distance(s)."""
        return self.face_calibration.score(distance)

    def search_threshold(self) -> float:
        """The 1:N threshold now: the 1:1 threshold, raised with the gallery to hold the configured FPIR."""
        return threshold_for_fpir(self.config.fpir, len(self._watchlist), self.threshold)

    def _search(self, faces: Sequence[FaceTemplate], fingers: Sequence[tuple[int, FingerprintTemplate]],
                k: int, threshold: float) -> list[Candidate]:
        """Candidates whose fused score is at or over ``threshold``, best first.

        Each subject's evidence is its face score (best over probes; 0 when its face is outside the
        face search's top hits) and one score per probed finger position; they are fused by
        ``fuse_false_match_scores`` (Fisher's rule under independence), so the threshold keeps its FMR.
        """
        per_subject: dict[str, list[ModalityScore]] = {}
        if faces and len(self.face_index):
            hits = self.face_index.search(np.stack([f.template for f in faces]), max(k, 50))
            best: dict[str, float] = {}
            for per_probe in hits:
                for subject_id, distance in per_probe:
                    best[subject_id] = max(best.get(subject_id, 0.0), float(self.face_score(distance)))
            for subject_id in best:
                per_subject[subject_id] = [ModalityScore(Modality.FACE, best[subject_id])]
        if fingers:
            for subject_id, scores in self.fingerprint_gallery.search(fingers).items():
                entries = per_subject.setdefault(subject_id, [])
                if faces and not entries and subject_id in self.face_index:
                    entries.append(ModalityScore(Modality.FACE, 0.0))
                entries.extend(ModalityScore(Modality.FINGERPRINT, s, finger) for finger, s in scores)
        fused = {sid: fuse_false_match_scores([m.score for m in ms]) for sid, ms in per_subject.items()}
        ranked = sorted(((sid, s) for sid, s in fused.items() if s >= threshold),
                        key=lambda item: (-item[1], item[0]))[:k]
        return [Candidate(sid, s, tuple(per_subject[sid]), self._watchlist.get(sid, False)) for sid, s in ranked]

    def _record(self, kind: str, actor: Actor, decision_id: str, **fields: Any) -> None:
        if self.decision_log is not None:
            self.decision_log.record(kind, actor, decision_id, **fields)

    # -- calls ---------------------------------------------------------------------------------

    def enrol(
        self,
        subject_id: str,
        info: SubjectInfo,
        samples: Sequence[Sample],
        *,
        allow_duplicate: bool = False,
        override_reason: str = "",
        actor: Actor | None = None,
    ) -> EnrolmentResult:
        """Enrol a subject after quality checks and a 1:N duplicate search of the whole gallery.

        A possible duplicate (another subject at or over the 1:N threshold) holds the enrolment back
        (``enrolled=False``) unless an officer allows it, which is recorded.
        """
        actor = actor or Actor()
        _check_subject_id(subject_id)
        self._check_samples(samples)
        if subject_id in self._watchlist:
            raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.")
        faces = self._extract_faces(samples, "enrol")
        fingers = self._extract_fingers(samples, "enrol")
        qualities = tuple(SampleQuality(Modality.FACE, 0, f.quality) for f in faces) + tuple(
            SampleQuality(Modality.FINGERPRINT, finger, t.quality) for finger, t in fingers)
        decision_id = _new_decision_id()
        with self._write_lock:
            if subject_id in self._watchlist:
                raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.")
            threshold = self.search_threshold()
            duplicates = tuple(self._search(faces, fingers, self.config.max_candidates, threshold))
            enrolled = not duplicates or allow_duplicate
            if enrolled:
                stored = [
                    StoredTemplate(Modality.FACE, 0, f.quality, pack_face_template(f.template)) for f in faces
                ] + [StoredTemplate(Modality.FINGERPRINT, finger, t.quality, t.to_bytes()) for finger, t in fingers]
                self.storage.add_subject(subject_id, info, stored)
                if faces:
                    self.face_index.add(subject_id, np.stack([f.template for f in faces]))
                self.fingerprint_gallery.add(subject_id, fingers)
                self._watchlist[subject_id] = info.watchlist
        outcome = "enrol_duplicate_held" if not enrolled else (
            "enrol_duplicate_overridden" if duplicates else "enrol_new")
        self.statistics.record_decision(outcome)
        self._record(
            "enrol", actor, decision_id, subject_ref=self.storage.keyring.pseudonym(subject_id),
            outcome=outcome, threshold=threshold, qualities=[q.quality for q in qualities],
            duplicates=[{"subject_ref": self.storage.keyring.pseudonym(c.subject_id), "score": c.score}
                        for c in duplicates],
            override_reason=override_reason if duplicates and allow_duplicate else "",
        )
        return EnrolmentResult(subject_id, enrolled, duplicates, qualities, threshold, decision_id)

    def verify(self, subject_id: str, samples: Sequence[Sample], *, actor: Actor | None = None) -> VerificationResult:
        """1:1: is the holder of these samples the subject enrolled as ``subject_id``?"""
        actor = actor or Actor()
        _check_subject_id(subject_id)
        self._check_samples(samples)
        if subject_id not in self._watchlist:
            raise SubjectNotFound(f"No traveller is enrolled under {subject_id!r}.")
        faces = self._extract_faces(samples, "probe")
        fingers = self._extract_fingers(samples, "probe")
        modality_scores: list[ModalityScore] = []
        if faces and subject_id in self.face_index:
            distances = [self.face_index.compare(f.template, subject_id) for f in faces]
            modality_scores.append(ModalityScore(Modality.FACE, float(self.face_score(min(distances)))))
        modality_scores.extend(ModalityScore(Modality.FINGERPRINT, s, finger)
                               for finger, s in self.fingerprint_gallery.compare(subject_id, fingers))
        if not modality_scores:
            missing = "face" if faces else "fingerprint of these fingers"
            raise NoReference(f"{subject_id!r} has no {missing} enrolled: verify with another modality.")
        score = fuse_false_match_scores([m.score for m in modality_scores])
        match = score >= self.threshold
        decision_id = _new_decision_id()
        self.statistics.record_decision("verify_match" if match else "verify_no_match")
        self._record("verify", actor, decision_id, subject_ref=self.storage.keyring.pseudonym(subject_id),
                     match=match, score=score, threshold=self.threshold)
        return VerificationResult(match, score, self.threshold, decision_id, tuple(modality_scores))

    def identify(
        self, samples: Sequence[Sample], max_candidates: int = 0, *, actor: Actor | None = None
    ) -> IdentificationResult:
        """1:N: the enrolled subjects these samples match, at or over the 1:N threshold, best first."""
        actor = actor or Actor()
        self._check_samples(samples)
        if max_candidates < 0:
            raise InvalidSample("max_candidates cannot be negative.")
        k = min(max_candidates or self.config.default_max_candidates, self.config.max_candidates)
        faces = self._extract_faces(samples, "probe")
        threshold = self.search_threshold()
        candidates = tuple(self._search(faces, self._extract_fingers(samples, "probe"), k, threshold))
        decision_id = _new_decision_id()
        self.statistics.record_decision("identify_hit" if candidates else "identify_miss")
        self._record("identify", actor, decision_id, threshold=threshold,
                     candidates=[{"subject_ref": self.storage.keyring.pseudonym(c.subject_id), "score": c.score,
                                  "watchlist": c.watchlist} for c in candidates])
        return IdentificationResult(candidates, threshold, decision_id)

    def get_subject(self, subject_id: str, *, actor: Actor | None = None) -> SubjectRecord:
        """The subject's personal data and template inventory."""
        _check_subject_id(subject_id)
        return self.storage.get_subject(subject_id)

    def delete_subject(self, subject_id: str, reason: str = "", *, actor: Actor | None = None) -> str:
        """Erase a subject from storage and the in-memory gallery at once; returns the decision id."""
        actor = actor or Actor()
        _check_subject_id(subject_id)
        with self._write_lock:
            if not self.storage.delete_subject(subject_id):
                raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
            self.face_index.remove(subject_id)
            self.fingerprint_gallery.remove(subject_id)
            self._watchlist.pop(subject_id, None)
        decision_id = _new_decision_id()
        self.statistics.record_decision("delete")
        self._record("delete", actor, decision_id, subject_ref=self.storage.keyring.pseudonym(subject_id),
                     reason=reason)
        return decision_id

    def gallery_size(self) -> tuple[int, int]:
        """(subjects, templates) in the in-memory gallery."""
        return len(self._watchlist), len(self.face_index) + len(self.fingerprint_gallery)

    def sample_quality(self, sample: Sample) -> float:
        """The quality (0..100) of one sample, as enrolment would measure it (0 when unusable)."""
        try:
            if sample.modality == Modality.FINGERPRINT:
                image = sample.image
                grey = decode_grey(image, self.config.limits) if isinstance(image, bytes) else image
                return float(fingerprint_quality(grey))
            return float(self._extract_faces([sample], "probe")[0].quality)
        except InvalidSample:
            return 0.0

    def close(self) -> None:
        """Release storage."""
        self.storage.close()
