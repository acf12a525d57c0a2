"""The checkpoint's decisions: enrolment with a duplicate search, 1:1 verification, 1:N identification.

Pure Python over the core: extraction, the in-memory gallery, storage and the decision log. It knows
nothing of gRPC; ``verify/servicer.py`` adapts it. Every score is a false-match score ``-log10(FMR)``
(:mod:`biometrics.scores`) and the operating threshold is ``-log10(fmr)`` for the configured FMR.

**Storage is the truth, memory follows it.** A change (an enrolment, an erasure) is committed with its
change-log entry and its audit record in one transaction; only then is it applied to the in-memory gallery,
from the change log's sequence. If applying it fails, the gallery is marked behind and catches up from the
change log before the next call answers, so it can never diverge from storage for long enough to matter: a
subject stored is found by the next Verify, a subject erased is gone before the next search.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from biometrics import validation
from biometrics.attempts import DEFAULT_WINDOW_S, Attempt, AttemptLedger, AttemptsExhausted
from biometrics.audit import (
    JOURNAL_FILE,
    LOG_NAME,
    AuditChain,
    OfficerText,
    anchor_path,
    check_chain_at_open,
    import_jsonl,
    load_or_create_signing_key,
)
from biometrics.crypto import KeyRing
from biometrics.datadir import DataDirLock, check_usable, lock_station_dirs
from biometrics.decisions import PROCEED, TravellerOutcome, identification_outcome, shortlist, verification_outcome
from biometrics.errors import (
    BiometricError,
    CallAbandoned,
    InvalidSample,
    RegisterUnavailable,
    ReviewConflict,
    SamplesDisagree,
    SubjectExists,
    SubjectNotFound,
)
from biometrics.event_store import EventHousekeeper, SqlEventStore, check_event_id, check_rating
from biometrics.events import (
    ARRIVAL,
    DEFAULT_NATIONALITY_RETENTION_DAYS,
    DEFAULT_SERVICE_TARGET_MS,
    ERROR,
    SEE_OFFICER,
    EventNotFound,
    check_nationality,
)
from biometrics.events import PROCEED as PUBLISHED_PROCEED
from biometrics.face import FaceTemplate, face_template_of
from biometrics.fingerprint import (
    ENROL_MIN_QUALITY,
    FingerprintTemplate,
    compare_fingerprints,
    extract_fingerprint,
    fingerprint_quality,
)
from biometrics.fingerprint.agreement import (
    disagreement,
    impression_groups,
    one_finger_message,
    positions_of_one_finger,
)
from biometrics.fingerprint.capture import decode_fingerprint
from biometrics.fingerprint.fusion import (
    best_of_k,
    contradicted,
    fuse_modalities,
    search_score,
    search_scores,
)
from biometrics.gallery import Gallery
from biometrics.imaging import DEFAULT_LIMITS, ImageLimits, check_fingerprint_size
from biometrics.island import OnlineUpload
from biometrics.keydir import (
    KEYRING_NAME,
    KeyLocationError,
    check_outside,
    default_key_dir,
    prepare_key_dir,
)
from biometrics.multiframe import (
    DEFAULT_RULE,
    MIN_ENROL_AGREEMENT,
    check_rule,
    disagreeing_pairs,
    probe_templates,
)
from biometrics.pending import pending_gallery
from biometrics.recording import EventRecorder
from biometrics.scores import ScoreCalibration, threshold_for_fmr, threshold_for_fpir
from biometrics.statistics import TrafficStatistics
from biometrics.storage import (
    CHANGE_ENROLLED,
    CHANGE_ERASED,
    Change,
    KeyRingMismatch,
    SchemaTooNew,
    SealedStore,
    Storage,
    StoredTemplate,
    Transaction,
    now,
    record_of,
)
from biometrics.templates import pack_face_template
from biometrics.types import (
    Actor,
    Alert,
    Candidate,
    EnrolmentResult,
    IdentificationResult,
    Modality,
    ModalityScore,
    Review,
    Sample,
    SampleQuality,
    SubjectInfo,
    SubjectRecord,
    VerificationResult,
)

log = logging.getLogger(__name__)


class NoReference(BiometricError):
    """The subject has no enrolled reference for the modality of the probe."""


#: The Verify refusals audited (``verify_refused``), by what they say about the document.
REFUSAL_OUTCOMES: dict[type[BiometricError], str] = {
    SubjectNotFound: "not_found", NoReference: "no_reference", AttemptsExhausted: "attempts_exhausted"}


class FaceExtractor(Protocol):
    """Anything that turns a face sample into a template (in-process, or a worker pool)."""

    def extract_face(self, image: bytes | np.ndarray, purpose: str = "probe") -> FaceTemplate:
        """The face template of ``image`` (encoded bytes or RGB pixels)."""
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
    max_samples: int = validation.MAX_SAMPLES
    limits: ImageLimits = field(default_factory=ImageLimits)
    # Decision events for the transparency portal (biometrics.recording); False: none (the on/off benchmark).
    record_events: bool = True
    lanes: Mapping[str, str] = field(default_factory=dict)  # kiosk certificate subject or CN -> direction
    default_direction: str = ARRIVAL
    service_target_ms: float = DEFAULT_SERVICE_TARGET_MS
    nationality_retention_days: int = DEFAULT_NATIONALITY_RETENTION_DAYS
    # How one traveller's face samples (a burst, several photographs) are combined: biometrics.multiframe.
    multiframe_rule: str = DEFAULT_RULE
    # Verify calls of these roles (unattended kiosks) are counted per document by the station itself
    # (biometrics.attempts): a transaction scores at most the attempts its first call allowed, each corrected
    # by that number, and a call within ``attempt_window_seconds`` of the last is of the same transaction.
    counted_roles: frozenset[str] = frozenset({"kiosk"})
    attempt_window_seconds: float = DEFAULT_WINDOW_S


@dataclass(frozen=True)
class StoreLocation:
    """Where a checkpoint keeps its data and its keys (see :mod:`biometrics.keydir`)."""

    data_dir: Path
    key_dir: Path | None = None  # None: default_key_dir()
    key_file: Path | None = None  # None: KEY_DIR/keyring.json
    anchor: Path | None = None  # None: KEY_DIR/audit-heads/<store id>.json
    dev_keys_in_data_dir: bool = False
    store_url: str | None = None  # a postgresql:// register shared by stations; None: SQLite in data_dir
    station: str = ""  # the checkpoint's name (rokot-airport, tuapejat-port...)
    replica_dir: Path | None = None  # with store_url: keep working offline (a copy of the register, an outbox)
    offline_policy: Any = None  # biometrics.island.OfflinePolicy (None: its defaults)

    def resolved_key_dir(self) -> Path:
        """The key directory in use."""
        return self.key_dir or default_key_dir()


STATION_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_station(name: str, *, required: bool) -> None:
    """A station name: lower-case letters, digits and hyphens (``rokot-airport``); required on a shared register."""
    if not name and not required:
        return
    if not STATION_PATTERN.fullmatch(name or ""):
        raise ValueError(f"--station {name!r}: a station on a shared register needs a name of 1 to 63 lower-case "
                         "letters, digits and hyphens, such as rokot-airport")


def _named(scores: Sequence[ModalityScore]) -> list[tuple[str, float]]:
    """(modality name, score) pairs, as the fusion functions take them."""
    return [(m.modality.name.lower(), m.score) for m in scores]


def _modalities(samples: Any) -> set[int | None]:
    """The modalities of a request's samples (none when they are not a sequence: refused anyway)."""
    return {getattr(s, "modality", None) for s in samples} if isinstance(samples, Sequence) else set()


# the operator metrics' outcomes of an answer (checkpoint_decisions_total): (PROCEED, a match referred to an
# officer, a match on fingerprints alone referred as unmeasured, no match)
_METRIC_OUTCOMES = {
    "verify": ("verify_match", "verify_match_referred", "verify_finger_alone_referred", "verify_no_match"),
    "identify": ("identify_hit", "identify_hit_referred", "identify_finger_alone_referred", "identify_miss"),
}


def decision_metric(kind: str, found: bool, unmeasured: bool, outcome: TravellerOutcome) -> str:
    """The operator metrics' outcome of a Verify or Identify answer (``kind``): ``verify_match`` / ``identify_hit``
    only for a match or candidates answered PROCEED, so that the dashboard's PROCEED share counts no referral; one
    referred to an officer is ``..._finger_alone_referred`` (fingerprints alone, unmeasured) or
    ``verify_match_referred`` / ``identify_hit_referred`` (any other reason: a watchlisted subject, a subject in
    review, a contradicted candidate, two subjects over the threshold; the name does not say which, as the kiosk's
    answer does not);
    ``verify_no_match`` / ``identify_miss``."""
    proceed, referred, finger_alone, none = _METRIC_OUTCOMES[kind]
    if not found:
        return none
    if unmeasured:
        return finger_alone
    return proceed if outcome.decision == PROCEED else referred


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
        decision_log: AuditChain | None = None,
        statistics: TrafficStatistics | None = None,
        defer_load: bool = False,
        face_index: Any = None,
    ) -> None:
        self.storage = storage
        self.config = config or ServiceConfig()
        self.face_calibration = face_calibration or ScoreCalibration.for_modality("face")
        self.extractor: FaceExtractor = extractor or InProcessExtractor(self.config.limits)
        self.decision_log = decision_log
        self.statistics = statistics or TrafficStatistics()
        self.attempt_ledger = AttemptLedger(self.config.attempt_window_seconds)
        self.threshold = threshold_for_fmr(self.config.fmr)
        self._face_search_level = 0  # what _note_face_search last said of the 1:N threshold (0: nothing to say)
        check_rule(self.config.multiframe_rule)
        threshold_for_fpir(self.config.fpir, 1)  # refuse a bad rate at start
        # face_index: an index or a factory (biometrics.gallery.Gallery); default the in-process TemplateIndex
        #: The fingerprint calibration. A decision on fingerprints alone may send a traveller on only when its
        #: distinct impostor pairs measure the FMR the decision is read at (the rule of three): Verify's FMR over
        #: the transaction's attempts, Identify's per-comparison FMR at the 1:N threshold. The shipped one (DB1_B:
        #: 2,880 pairs of ten fingers) measures none of them; a station's own measures Verify's
        #: (docs/operations.md). Otherwise such a decision refers the traveller to an officer, with the scores for
        #: the officer (``finger_alone_unmeasured``).
        self.fingerprint_calibration = fingerprint_calibration or ScoreCalibration.for_modality("fingerprint")
        self.gallery = Gallery(self.fingerprint_calibration, face_index)
        self.fingerprint_gallery = self.gallery.fingerprint_gallery
        self._watchlist = self.gallery.watchlist
        self._state = self.gallery.state
        # Enrolments and deletions are serialised, so that a duplicate search and the insert it
        # clears are one step; searches never take this lock.
        self._write_lock = threading.RLock()  # re-entered by the island's drain around an upload
        self._dir_locks: list[DataDirLock] = []  # the data directory's and the replica directory's
        self.island: Any = None  # biometrics.island.Island on a station that keeps working offline
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._register_refused = ""  # why the register refused this station at loading: "" if it did not
        self._listener: Any = None
        self._loader: threading.Thread | None = None
        # Alerts stay with the station that raised them (its own store, or its journal beside a register).
        self.alert_store: SealedStore = decision_log.storage if decision_log is not None else storage
        self.station = decision_log.station if decision_log is not None else ""
        self.events: EventRecorder | None = None
        self.register_events: SqlEventStore | None = None  # on a station with a register: its events
        self._event_keeper: EventHousekeeper | None = None
        if self.config.record_events:
            self._open_events(fingerprint_calibration)
        if not defer_load:
            self._load_gallery()
            self._ready.set()

    @classmethod
    def open(cls, location: Path | StoreLocation, **kwargs: Any) -> CheckpointService:
        """The service over ``DATA_DIR/checkpoint.db``, locked for this process, its keys in the key directory.

        The data directory (and a replica directory) is locked: a second server on it is refused; the key ring
        and the audit signing key are loaded from the key directory, or created there on a first start, and
        refused inside the data directory unless ``dev_keys_in_data_dir``. A JSON-lines audit log of an older
        version is imported. An embedded store whose audit chain no longer holds the signed head exported for it
        (cut or replaced, or its store id changed) is refused with :class:`biometrics.audit.HeadNotHeld`, before
        anything is appended.
        """
        where = location if isinstance(location, StoreLocation) else StoreLocation(location)
        check_station(where.station, required=bool(where.store_url))
        key_dir = where.resolved_key_dir()
        key_file = where.key_file or key_dir / KEYRING_NAME
        check_usable(where.data_dir)
        if where.store_url and where.replica_dir is not None:
            check_usable(where.replica_dir, "replica directory")
        old_ring = where.data_dir / "keys" / KEYRING_NAME
        if old_ring.exists() and not where.dev_keys_in_data_dir and old_ring.resolve() != key_file.resolve():
            raise KeyLocationError(
                f"the key ring of this station is in {old_ring.parent}, inside the data directory (where older "
                f"versions kept it): move it out, e.g. `mv {old_ring.parent} {key_dir}` (when {key_dir} does not "
                "exist yet), then start again; --dev-keys-in-data-dir keeps it there on a development machine")
        replica_dir = where.replica_dir if where.store_url else None
        check_outside([where.data_dir] + ([replica_dir] if replica_dir is not None else []), keys=[key_dir, key_file],
                      anchor=where.anchor, allow_inside=where.dev_keys_in_data_dir)
        if where.dev_keys_in_data_dir:
            log.warning("DEVELOPMENT SETUP: keys may sit inside the data directory %s; a copy of it opens every "
                        "sealed row", where.data_dir)
        dir_locks = lock_station_dirs(where.data_dir, replica_dir)
        stores: list[SealedStore] = []
        checkpoint_every = kwargs.pop("checkpoint_every", 100)
        try:
            prepare_key_dir(key_dir)
            ring = KeyRing.load_or_create(key_file)
            # The station's own chain is keyed by its name in a shared register (and in the journal beside it).
            if where.store_url and where.replica_dir is not None:
                local_path = where.replica_dir / "replica.db"  # the copy, the outbox and the audit journal
            else:
                local_path = where.data_dir / (JOURNAL_FILE if where.store_url else "checkpoint.db")
            local = Storage(local_path, ring, station=where.station if where.store_url else "")
            stores.append(local)
            register = None
            if where.store_url:
                from biometrics.register import RegisterStorage

                register = RegisterStorage(where.store_url, ring, station=where.station)
                stores.append(register)
            anchor = where.anchor or anchor_path(key_dir, f"station-{where.station}" if register else local.store_id)
            chain = AuditChain(local, load_or_create_signing_key(key_dir), checkpoint_every=checkpoint_every,
                               anchor=anchor, register=register, station=where.station)
            legacy = where.data_dir / "audit" / LOG_NAME
            if register is None:  # before anything is appended: a cut chain is refused, its head left as it is
                check_chain_at_open(chain, heads_dir=None if where.anchor else anchor.parent)
            if legacy.exists() and local.audit_count() == 0:
                import_jsonl(legacy, chain)
            service = cls(register or local, decision_log=chain, defer_load=register is not None, **kwargs)
            if register is not None:
                from biometrics.island import Island
                from biometrics.register import Reviews
                from biometrics.replica import Replica
                from biometrics.restore import restored

                service.island = Island(service, Replica(local) if where.replica_dir is not None else None,
                                        Reviews(register), where.offline_policy)
                service.gallery.on_changes = service.island.follow
                service.gallery.keeps = service.island.keeps
                service.gallery.on_restore = lambda why, reload: restored(service.island, why, reload)
        except BaseException:
            for store in stores:
                store.close()
            for lock in dir_locks:
                lock.release()
            raise
        service._dir_locks = dir_locks
        service.start_event_housekeeping()
        return service

    # -- the in-memory gallery, following the change log --------------------------------------

    @property
    def face_index(self) -> Any:
        """The gallery's face index (made once the gallery is loaded, when it was given as a factory)."""
        return self.gallery.face_index

    def _load_gallery(self) -> None:
        self.gallery.load_pages(self.storage.gallery_pages())

    def catch_up(self) -> int:
        """Apply every change of the log after the one the gallery reflects; returns how many were applied."""
        return self.gallery.catch_up(self.storage)

    def _ensure_current(self) -> None:
        """Before answering: the service is loaded, and a gallery known to be behind is caught up.

        A register that cannot be reached does not stop verification: the station answers from memory.
        """
        if not self._ready.is_set():
            raise RegisterUnavailable("This station is still loading the register; try again in a moment.")
        if self._state.stale:
            try:
                self.catch_up()
            except RegisterUnavailable as exc:
                log.warning("gallery behind and the register unreachable; answering from memory (%s)", exc)

    def _applied(self, seq: int, apply: Any) -> None:
        """Apply our own committed change ``seq`` to memory; if that fails, catch up from the change log."""
        if not self.gallery.applied(seq, apply):
            with contextlib.suppress(Exception):
                self._ensure_current()

    @property
    def applied_seq(self) -> int:
        """The change-log sequence number the in-memory gallery reflects."""
        return self._state.applied_seq

    # -- for collaborators (biometrics.island) ---------------------------------------------------

    @property
    def sync_state(self) -> Any:
        """Where the gallery stands against the register (:class:`biometrics.gallery.GalleryState`)."""
        return self._state

    @property
    def write_lock(self) -> threading.RLock:
        """The lock that serialises every write of this station (enrolment, erasure, upload, review)."""
        return self._write_lock

    def change_transaction(self) -> Any:
        """A register transaction holding the register's write lock, whose audit records are part of it."""
        return self._change()

    def record(self, tx: Transaction, kind: str, actor: Actor, decision_id: str, **fields: Any) -> None:
        """Append a decision to this station's audit chain in ``tx``."""
        self._record(tx, kind, actor, decision_id, **fields)

    # -- a station on a shared register ----------------------------------------------------------

    def ready(self) -> bool:
        """True once the gallery is loaded (at once on the embedded store; after the register is reached)."""
        return self._ready.is_set()

    def start(self, *, retry_s: float = 2.0, poll_s: float = 2.0, background: bool = False) -> None:
        """On a shared register: reach it, load the gallery and follow the change log (in the background while
        it is unreachable). A malformed URL, a refused login, a newer schema or a wrong key ring raise at once.

        A station with a replica loads its gallery from the replica first and answers at once, offline if need
        be; it catches up from the register (erasures first, before anything is uploaded) when it reaches it.
        With ``background`` the gallery is loaded in a thread once the register answers (a server opens its port
        meanwhile, answering UNAVAILABLE and NOT_SERVING until it is ready).
        """
        from biometrics.register import RegisterStorage

        register = self.storage
        if self._ready.is_set() or not isinstance(register, RegisterStorage):
            return
        replica = self.island.replica if self.island is not None else None
        if replica is not None:
            self.gallery.load_pages(replica.local.gallery_pages())
            self._state.applied_seq = replica.register_seq()  # the copy follows the register's log, not its own
            self._state.generation, self._state.mark = replica.register_position()
            self._state.synced_wall, self._state.synced_at = replica.register_as_of(), None
            self._state.connected = False
            self.island.load_provisional()
            self._ready.set()
            log.info("gallery loaded from the replica: %d subjects (%d provisional), register change %d",
                     self.gallery.subjects, len(self.island.provisional), self.applied_seq)
        try:
            register.open()
            register.claim_station()  # another process under this station's name: StationInUse, stops the start
        except RegisterUnavailable as exc:
            log.warning("the register %s cannot be reached (%s); %s, retrying every %.0f s", register, exc,
                        "working offline from the replica" if replica is not None
                        else "this station answers UNAVAILABLE until it has loaded the register", retry_s)
            self._loader = threading.Thread(target=self._load_when_reachable, args=(retry_s, poll_s),
                                            name="register-loader", daemon=True)
            self._loader.start()
            return
        if background:
            self._loader = threading.Thread(target=self._finish_loading, args=(poll_s,), name="register-loader",
                                            daemon=True)
            self._loader.start()
        else:
            self._finish_loading(poll_s)

    def _load_when_reachable(self, retry_s: float, poll_s: float) -> None:
        from biometrics.register import StationInUse, StoreRefused

        refused = ""  # the last StationInUse logged (said once, not at every retry)
        while not self._closing.is_set():
            try:
                self.storage.open()  # type: ignore[attr-defined]
                self.storage.claim_station()  # type: ignore[attr-defined]
                self._finish_loading(poll_s)
                return
            except RegisterUnavailable as exc:
                log.info("register still unreachable (%s); retrying in %.0f s", exc, retry_s)
            except StationInUse as exc:
                if str(exc) != refused:
                    log.error("%s; not loading the register until it is free (retrying every %.0f s)", exc, retry_s)
                refused = str(exc)
            except (SchemaTooNew, KeyRingMismatch, StoreRefused) as exc:  # an operator must act: said once
                self.register_refused = str(exc)
                if str(exc) != refused:
                    log.error("the register refuses this station (%s): not loading it, and no enrolment is accepted "
                              "here until an operator resolves it (retrying every %.0f s)", exc, retry_s)
                refused = str(exc)
            except Exception:
                log.exception("loading the register failed; retrying in %.0f s", retry_s)
            self._closing.wait(retry_s)

    def _finish_loading(self, poll_s: float) -> None:
        from biometrics.register import ChangeListener

        start = time.perf_counter()
        if self.decision_log is not None:
            self.decision_log.reconcile()
            self.decision_log.start_shipping()
        if self._ready.is_set():  # loaded from the replica: catch up from where it stood
            try:
                self.sync()
            except Exception:  # the listener below catches up again and retries; it must start whatever happens
                log.exception("catching up the register after loading from the replica failed")
        else:
            if self._state.synced_at is None:  # not loaded by an earlier attempt that failed after it
                self._load_gallery()
            if self.island is not None:  # before any answer: alerts naming subjects erased while it was away
                self.island.sweep_alerts()
            self._ready.set()
        log.info("register loaded in %.3f s: %d subjects", time.perf_counter() - start, len(self._watchlist))
        self.search_threshold()  # logs whether the face calibration measures the loaded gallery's 1:N threshold

        def on_state(connected: bool) -> None:
            if connected:  # back: the next call catches up first, so erasures made meanwhile never answer again
                self._state.stale = True
                self._reclaim_station()
            self._state.connected = connected

        self._listener = ChangeListener(self.storage.url, self.sync, poll_s=poll_s,  # type: ignore[attr-defined]
                                        on_state=on_state).start()

    def _reclaim_station(self) -> None:
        """After the link returns: hold this station's name in the register again if its session was lost."""
        try:
            self.storage.claim_station()  # type: ignore[attr-defined]
        except RegisterUnavailable as exc:  # away again: the next reconnection claims it
            log.warning("station %r: its name is not held in the register yet (%s)", self.station, exc)
        except Exception as exc:  # another process took the name meanwhile
            log.error("station %r could not hold its name in the register again: %s", self.station, exc)

    def sync(self) -> int:
        """Follow the register: catch up its change log (erasures made elsewhere leave memory first), then, on a
        station that worked offline, upload its outbox. Returns how many changes were applied."""
        applied = self.catch_up()
        self._state.connected = True
        if self.island is not None and self.island.replica is not None:
            self.island.replica.mark_synced()
            self.island.drain()
        return applied

    def register_as_of(self) -> str:
        """When this station's view of the shared register was last up to date (RFC 3339, UTC); "" on a single
        station, whose store is its own register."""
        wall = self._state.synced_wall
        if self.decision_log is None or self.decision_log.register is None or wall is None:
            return ""
        return dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")

    @property
    def register_refused(self) -> str:
        """Why the register refuses this station ("" if it does not): at loading (a schema newer than this
        version, another key ring), or at a write (a newer station migrated it while this one ran)."""
        return self._register_refused or getattr(self.storage, "refused", "")

    @register_refused.setter
    def register_refused(self, reason: str) -> None:
        self._register_refused = reason

    def sync_status(self) -> dict[str, Any]:
        """Where this station's gallery stands: the last applied change, its age, and the register link."""
        synced = self._state.synced_at
        return {"shared": self.decision_log is not None and self.decision_log.register is not None,
                "ready": self.ready(), "applied_seq": self._state.applied_seq,
                "seconds_since_sync": None if synced is None else round(time.monotonic() - synced, 3),
                "register_connected": self._state.connected,
                "register_refused": self.register_refused,
                "audit_pending": self.decision_log.pending() if self.decision_log and self.decision_log.register
                else 0,
                "outbox_pending": self.island.replica.pending_count() if self.island and self.island.replica else 0,
                "outbox_failed": self.island.replica.failed_count() if self.island and self.island.replica else 0,
                "provisional": len(self.island.provisional) if self.island else 0,
                "last_drain": dict(self.island.last_drain) if self.island else {},
                "erasures_in_wal": self.erasures_in_wal()}

    def erasures_in_wal(self) -> int:
        """Erasures whose rows may still be in one of this station's SQLite WAL files, their truncation blocked by
        a reader and retried (:meth:`biometrics.storage.Storage.erasures_in_wal`); 0 once every one is done."""
        stores = {id(store): store for store in (self.storage, self.alert_store)}
        return sum(store.erasures_in_wal() for store in stores.values())

    # -- helpers -------------------------------------------------------------------------------

    def _check_samples(self, samples: Sequence[Sample]) -> None:
        """The request's samples (count, modality, finger, type), and each fingerprint's size against
        ``limits.max_fingerprint_sample``: all checked before anything is extracted, so an oversized fingerprint
        costs neither its own extraction nor the others'."""
        validation.check_samples(samples, self.config.max_samples)
        for sample in samples:
            if sample.modality == Modality.FINGERPRINT:
                check_fingerprint_size(sample.image, self.config.limits)

    def _extract_faces(self, samples: Sequence[Sample], purpose: str,
                       stop: Callable[[], None] | None = None) -> list[FaceTemplate]:
        """The template of each FACE sample; ``stop`` is called before each one (it raises to stop extracting:
        the caller has gone)."""
        faces = []
        for sample in samples:
            if sample.modality == Modality.FACE:
                if stop is not None:
                    stop()
                faces.append(self.extractor.extract_face(sample.image, purpose))
        return faces

    def _extract_fingers(self, samples: Sequence[Sample], purpose: str, stop: Callable[[], None] | None = None
                         ) -> list[tuple[int, FingerprintTemplate]]:
        """(ISO finger position, template) of each FINGERPRINT sample (greyscale, about 500 dpi); ``stop`` is called
        before each one, as for faces (an extraction on the gRPC thread takes up to about 1.5 s)."""
        fingers = []
        for sample in samples:
            if sample.modality != Modality.FINGERPRINT:
                continue
            if stop is not None:
                stop()
            image = sample.image
            grey = decode_fingerprint(image, self.config.limits) if isinstance(image, bytes) else image
            kwargs: dict[str, Any] = {"min_quality": ENROL_MIN_QUALITY, "check_ridges": True} if purpose == "enrol" \
                else {}
            fingers.append((int(sample.finger), extract_fingerprint(grey, **kwargs)))
        return fingers

    def _face_probes(self, faces: Sequence[FaceTemplate]) -> list[np.ndarray]:
        """One traveller's face samples combined by the configured multi-frame rule: the templates to compare."""
        if not faces:
            return []
        return list(probe_templates([f.template for f in faces], [f.quality for f in faces],
                                    self.config.multiframe_rule))

    def _enrolment_probes(self, templates: Sequence[np.ndarray]) -> list[np.ndarray]:
        """An enrolment's face photographs combined as Identify combines a traveller's frames (the configured
        rule; they carry no quality here, so the quality rule weighs them equally: their mean)."""
        if not len(templates):
            return []
        rule = self.config.multiframe_rule
        return list(probe_templates(list(templates), [1.0] * len(templates) if rule == "quality" else None, rule))

    def _face_score_of(self, probes: Sequence[np.ndarray], subject_id: str, frames: int = 1,
                       gallery: Gallery | None = None) -> float:
        """The face false-match score of the nearest of ``probes`` (combined from ``frames`` samples) to
        ``subject_id``'s references (in ``gallery``, default the station's), as :meth:`_face_count_score`."""
        g = self.gallery if gallery is None else gallery
        distance = min(g.face_index.compare(p, subject_id) for p in probes)
        return self._face_count_score(self.face_score(distance), frames, g.face_references(subject_id))

    @staticmethod
    def _face_count_score(score: float | np.ndarray, frames: int, references: int = 1) -> float:
        """A face score drawn from ``frames`` samples of one traveller against the best of a subject's ``references``
        templates loses ``log10(frames * references)``: that many chances for an impostor instead of one (the union
        bound, as for fingers; measured on LFW, docs/benchmarks.md: it holds the FMR for the mean of frames too, and
        without it three references let through twice the impostors one does)."""
        return best_of_k(float(score), max(1, frames) * max(1, references))

    @staticmethod
    def fuse(scores: Sequence[ModalityScore]) -> float:
        """One false-match score from a subject's per-modality scores (biometrics.fingerprint.fusion)."""
        return fuse_modalities(_named(scores))

    @staticmethod
    def search_score(scores: Sequence[ModalityScore]) -> float:
        """One 1:N false-match score from a subject's per-modality scores, with no contradiction floor
        (biometrics.fingerprint.fusion.search_scores): what Identify and the duplicate search rank and threshold."""
        return search_score(_named(scores))

    def face_score(self, distance: float | np.ndarray) -> float | np.ndarray:
        """False-match score of face distance(s)."""
        return self.face_calibration.score(distance)

    def search_threshold(self) -> float:
        """The 1:N threshold now: the 1:1 threshold, raised with the gallery to hold the configured FPIR (whether
        the face calibration measures or reaches it is logged when that changes: :meth:`_note_face_search`)."""
        threshold = threshold_for_fpir(self.config.fpir, len(self._watchlist), self.threshold)
        self._note_face_search(threshold)
        return threshold

    def _note_face_search(self, threshold: float) -> None:
        """Log, once each time it changes (not at every search), that the 1:N ``threshold`` reads each face
        comparison at a per-comparison FMR beyond what the face calibration's distinct impostor pairs measure
        (the rule of three, :meth:`ScoreCalibration.measures`: WARNING), or at a score no face comparison can reach
        (:meth:`ScoreCalibration.reaches`: ERROR, a search on a face alone returns no candidate), or again within
        both (INFO). The server's start line asks for the threshold, so a station says it at start too."""
        calibration, fmr = self.face_calibration, 10.0 ** -threshold
        level = 0 if calibration.measures(fmr) else 1 if calibration.reaches(fmr) else 2
        if level == self._face_search_level:
            return
        self._face_search_level = level
        subjects, fpir = len(self._watchlist), self.config.fpir
        where = (f"the 1:N threshold s = {threshold:.2f} ({subjects} subjects at FPIR {fpir:g}: a per-comparison "
                 f"FMR of {fmr:.2g})")
        if level == 2:
            log.error("%s is a score no face comparison can reach (the face calibration's highest is %.2f): Identify "
                      "and the enrolment duplicate search on a face alone return no candidate; fingerprints fused "
                      "with the face still can (docs/scale.md)", where, calibration.ceiling)
        elif level == 1:
            log.warning("%s is beyond what the face calibration measures (FMR %.2g, 3 over its %d distinct impostor "
                        "pairs): a face's score there is extrapolated, so that FPIR is not measured (docs/scale.md)",
                        where, calibration.measurable_fmr, calibration.n_pairs)
        else:
            log.info("%s is again within what the face calibration measures", where)

    def _search(self, faces: Sequence[np.ndarray], fingers: Sequence[tuple[int, FingerprintTemplate]],
                k: int, threshold: float, frames: int = 1, gallery: Gallery | None = None) -> list[Candidate]:
        """Candidates whose fused score is at or over ``threshold``, best first (in ``gallery``, default the
        station's): the ``k`` best and every watchlisted one ranked beyond them (as :func:`shortlist`; the face
        index itself answers its ``max(k, 50)`` nearest, so a watchlisted face beyond those is found only by finger).
        A subject erased while the search runs is left out, not reported as missing.

        Each subject's evidence is its face score (best over the combined probes and the subject's references,
        less ``log10`` of ``frames`` times its references; compared one to one when the subject was found by
        finger alone) and one score per enrolled finger the probes reached (``FingerprintGallery.search``: one
        finger sent twice is one score); they are scored by
        :meth:`search_score`, without Verify's contradiction floor (a matching finger with a face that does not
        match is a candidate, marked ``contradicted`` for an officer), stated as a false-match score so that the
        threshold keeps its FMR.
        """
        per_subject: dict[str, list[ModalityScore]] = {}
        g = self.gallery if gallery is None else gallery
        face_bound = 0.0  # the most a subject outside the face search's hits can score by face
        if faces:  # an empty index answers no hits: asking its size first costs a sharded gallery a call per shard
            wanted = max(k, 50)
            hits = g.face_index.search(np.stack(list(faces)), wanted)
            best: dict[str, float] = {}
            for per_probe in hits:
                for subject_id, distance in per_probe:
                    best[subject_id] = max(best.get(subject_id, 0.0), self._face_count_score(
                        self.face_score(distance), frames, g.face_references(subject_id)))
                if len(per_probe) >= wanted:  # a subject left out is at least as far as the last hit
                    face_bound = max(face_bound, self._face_count_score(self.face_score(per_probe[-1][1]), frames))
            for subject_id in best:
                per_subject[subject_id] = [ModalityScore(Modality.FACE, best[subject_id])]
        if fingers:
            found = g.fingerprint_gallery.search(fingers)
            outside = [sid for sid in found if sid not in per_subject and sid in g.face_counts] if faces else []
            for subject_id in self._may_reach(outside, found, face_bound, threshold):  # the face compared 1:1
                try:
                    face = self._face_score_of(faces, subject_id, frames, g)
                except SubjectNotFound:  # erased (or being replaced) since the search found it: not a candidate
                    continue
                per_subject[subject_id] = [ModalityScore(Modality.FACE, face)]
            for subject_id, scores in found.items():
                if subject_id in per_subject or not (faces and subject_id in g.face_counts):
                    per_subject.setdefault(subject_id, []).extend(
                        ModalityScore(Modality.FINGERPRINT, s, finger) for finger, s in scores)
        # only subjects the gallery holds: a face index whose removal failed may still hold an erased one's faces
        held = [sid for sid in per_subject if sid in g.watchlist]
        fused = dict(zip(held, self._search_scores([per_subject[sid] for sid in held]), strict=True))
        ranked = sorted(((sid, s) for sid, s in fused.items() if s >= threshold), key=lambda item: (-item[1], item[0]))
        return list(shortlist([Candidate(sid, s, tuple(per_subject[sid]), g.watchlist.get(sid, False),
                                         contradicted(_named(per_subject[sid]))) for sid, s in ranked], k))

    @staticmethod
    def _may_reach(subjects: Sequence[str], fingers: Mapping[str, list[tuple[int, float]]], face_bound: float,
                   threshold: float) -> list[str]:
        """The shortlist of ``subjects`` (found by finger, outside the face search's hits) whose search score could
        reach ``threshold`` with a face scoring at most ``face_bound``: the search score never falls when a
        modality's score rises, so a subject under the threshold at the bound is under it with its own face, and
        its face need not be compared."""
        groups: dict[int, list[str]] = {}  # by how many finger scores: the columns face, finger, ...
        for sid in subjects:
            groups.setdefault(len(fingers[sid]), []).append(sid)
        shortlist = []
        for n, group in groups.items():
            values = np.array([[face_bound] + [s for _, s in fingers[sid]] for sid in group], dtype=np.float64)
            bounds = search_scores(values, ["face"] + ["fingerprint"] * n)
            shortlist += [sid for sid, bound in zip(group, bounds.tolist(), strict=True) if bound >= threshold]
        return shortlist

    @staticmethod
    def _search_scores(subjects: Sequence[Sequence[ModalityScore]]) -> list[float]:
        """:meth:`search_score` of each subject's modality scores, computed one array per pattern of modalities
        (biometrics.fingerprint.fusion.search_scores), not one subject at a time."""
        out = [0.0] * len(subjects)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, scores in enumerate(subjects):
            groups.setdefault(tuple(m.modality.name.lower() for m in scores), []).append(i)
        for names, rows in groups.items():
            if not names:
                continue
            values = np.array([[m.score for m in subjects[i]] for i in rows], dtype=np.float64)
            for i, score in zip(rows, search_scores(values, names).tolist(), strict=True):
                out[i] = float(score)
        return out

    @contextlib.contextmanager
    def _change(self) -> Iterator[Transaction]:
        """A transaction of the register for a change and its audit record, holding the register's write lock
        (on a shared register: every station's writers wait for it; see :mod:`biometrics.register`)."""
        with (self.decision_log.change() if self.decision_log is not None else self.storage.transaction()) as tx:
            self.storage.lock_register(tx)
            yield tx

    @contextlib.contextmanager
    def _audit(self) -> Iterator[Transaction]:
        """A transaction of the station's own store for a decision that changes nothing, and its record."""
        with (self.decision_log.transaction() if self.decision_log is not None
              else self.alert_store.transaction()) as tx:
            yield tx

    def _record(self, tx: Transaction, kind: str, actor: Actor, decision_id: str, **fields: Any) -> None:
        if self.decision_log is not None:
            self.decision_log.record(tx, kind, actor, decision_id, **fields)

    def _ref(self, subject_id: str) -> str:
        return self.storage.keyring.pseudonym(subject_id)

    def _raise_alert(self, tx: Transaction, kind: str, decision_id: str, subject_id: str, score: float,
                     actor: Actor) -> Alert:
        """A watchlist hit, stored for officers in the decision's transaction and named in the audit chain."""
        alert = Alert(uuid.uuid4().hex, now(), kind, decision_id, subject_id, float(score), actor.identity)
        self.alert_store.insert_alert(tx, alert)
        self._record(tx, "alert", actor, decision_id, subject_ref=self._ref(subject_id), outcome=kind,
                     alert_id=alert.alert_id, score=alert.score)
        log.warning("ALERT %s: decision %s (alert %s) for an officer", kind, decision_id, alert.alert_id)
        return alert

    # -- decision events (biometrics.recording) ---------------------------------------------------

    def _open_events(self, fingerprint_calibration: ScoreCalibration | None) -> None:
        """The recorder of decision events, into the station's own store (its journal beside a register)."""
        options = {"service_target_ms": self.config.service_target_ms,
                   "retention_days": self.config.nationality_retention_days}
        journal = self.alert_store is not self.storage
        local = SqlEventStore(self.alert_store, journal=journal, **options)
        if not journal and local.discard_deltas():  # left by the v7 migration, which cannot tell a journal apart
            log.info("events: the rating deltas of a store that ships nothing were discarded (its counters hold them)")
        self.events = EventRecorder(
            local, self.station, lanes=self.config.lanes, default_direction=self.config.default_direction,
            face_calibration=self.face_calibration,
            fingerprint_calibration=fingerprint_calibration or ScoreCalibration.for_modality("fingerprint"))
        if journal:
            self.register_events = SqlEventStore(self.storage, **options)

    def start_event_housekeeping(self, *, interval: float = 1.0, fold_every: float = 3600.0) -> None:
        """Ship the journal's events to the register (on a station with one) and fold expired nationality rows,
        in a background thread (stopped by :meth:`close`)."""
        if self.events is not None and self._event_keeper is None:
            self._event_keeper = EventHousekeeper(self.events.store, self.register_events, interval=interval,
                                                  fold_every=fold_every,
                                                  on_tick=self.publish_ended_transactions,
                                                  station=self.station).start()

    def _new_feedback_id(self) -> str:
        return self.events.new_id() if self.events is not None else ""

    def _record_event(self, tx: Transaction, event_id: str, outcome: TravellerOutcome, actor: Actor,
                      started: float, faces: Sequence[FaceTemplate],
                      fingers: Sequence[tuple[int, FingerprintTemplate]], nationality: str) -> None:
        """Write the decision's event in ``tx`` (its audit record's transaction); a watchlist hit is published
        as see_officer, like a no-match."""
        event = self._event_of(outcome, actor, started, faces, fingers, nationality)
        if event is not None and self.events is not None:
            self.events.write(tx, event, event_id)

    def _event_of(self, outcome: TravellerOutcome, actor: Actor, started: float, faces: Sequence[FaceTemplate],
                  fingers: Sequence[tuple[int, FingerprintTemplate]], nationality: str) -> Any:
        """The decision's event as it would be published now (None without an event store)."""
        if self.events is None:
            return None
        qualities = [f.quality for f in faces] + [t.quality for _, t in fingers]
        published = PUBLISHED_PROCEED if outcome.decision == PROCEED else SEE_OFFICER
        return self.events.event(actor, published, started, qualities, nationality, faces=bool(faces),
                                 fingers=bool(fingers))

    def publish_ended_transactions(self, *, all_open: bool = False) -> int:
        """Publish the end of each kiosk transaction whose last call was a step (not accepted, the kiosk to call
        again) and whose window has passed with no later call (the traveller went to an officer): the event that
        step would have published, as see_officer (:meth:`AttemptLedger.take_ended`); with ``all_open`` (the
        station stopping) every transaction still open. Each in a transaction of its own; a failure is logged.
        Returns how many were published. Run by the event housekeeping thread and at :meth:`close`."""
        published = 0
        for event in self.attempt_ledger.take_ended(all_open=all_open):
            try:
                if self.events is not None:
                    self.events.record(event)
                    published += 1
            except Exception:
                log.exception("the end of a kiosk transaction could not be published")
        return published

    def _record_error(self, actor: Actor, started: float, samples: Sequence[Sample], nationality: str) -> None:
        """Record a decision that ended in a refusal (no face, unknown document...) as an ``error`` event, in a
        transaction of its own; a failure to record it is logged, never raised over the refusal."""
        self.record_refusal(actor, started, _modalities(samples), nationality)

    def verify_capture_failed(self, subject_id: str, attempt: int, actor: Actor, started: float,
                              modalities: Collection[int | None], nationality: str) -> None:
        """A Verify call of ``subject_id`` that ended before a decision (its device capture failed, or its caller
        abandoned it): published as the end of its kiosk transaction when an earlier, not accepted call of it
        published nothing. For a counted caller (a kiosk) the station's own count says so, once per transaction
        (:meth:`AttemptLedger.claim_end`); for others the caller's ``attempt`` (> 1). A first call publishes
        nothing here (it made no decision)."""
        if self.attempt_ledger.claim_end(subject_id) if self._counted(actor) else attempt > 1:
            self.record_refusal(actor, started, modalities, nationality)

    def _verify_refused(self, exc: BiometricError, subject_id: str, actor: Actor, started: float,
                        modalities: Collection[int | None], nationality: str) -> None:
        """A Verify refused before a decision: audited for what it says of the document, and published as an
        ``error``; a refusal for exhausted attempts only as the end of a transaction that published none
        (:meth:`AttemptLedger.claim_end`: its last scored call normally has), so that a kiosk calling again and
        again after its transaction ended adds nothing to the published figures."""
        self._audit_refusal(exc, subject_id, actor)
        if not isinstance(exc, AttemptsExhausted) or self.attempt_ledger.claim_end(subject_id):
            self.record_refusal(actor, started, modalities, nationality)

    def record_refusal(self, actor: Actor, started: float, modalities: Collection[int | None],
                       nationality: str) -> None:
        """Publish a call that ended in a refusal as an ``error`` decision event (its own transaction), also when
        it failed before reaching the service: a kiosk transaction's later call whose capture failed (the
        traveller asked to place the finger again walked away) ends a transaction whose earlier, not accepted
        call published nothing. A failure to record it is logged, never raised over the refusal."""
        if self.events is None:
            return
        try:
            try:
                nationality = check_nationality(nationality)
            except BiometricError:
                nationality = ""
            self.events.record(self.events.event(actor, ERROR, started, [], nationality,
                                                 faces=Modality.FACE in modalities,
                                                 fingers=Modality.FINGERPRINT in modalities))
        except Exception:
            log.exception("the event of a refused decision could not be recorded")

    def _enrolled_nationality(self, subject_id: str) -> str:
        """The enrolled subject's nationality, from a store on this machine only (the station's SQLite file, or
        the replica beside a register); "" when there is none or it cannot be read: a kiosk sends the travel
        document's nationality (``document_nationality``) instead."""
        local: SealedStore | None = self.storage if isinstance(self.storage, Storage) else (
            self.island.replica.local if self.island is not None and self.island.replica is not None else None)
        if local is None:
            return ""
        try:
            info = local.subject_info(subject_id)
        except Exception:
            log.debug("nationality of a verified subject not readable", exc_info=True)
            return ""
        return info.nationality if info is not None else ""

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
        still_wanted: Callable[[], bool] | None = None,
    ) -> EnrolmentResult:
        """Enrol a subject after quality checks and a 1:N duplicate search of the whole gallery.

        A possible duplicate (another subject at or over the 1:N threshold) holds the enrolment back
        (``enrolled=False``) unless an officer allows it with a reason, which is recorded. The subject, its
        change-log entry and the audit record commit in one transaction before this returns.
        ``still_wanted``: asked before each sample is extracted and once the write lock is held, before the search
        and the commit; False (the caller has gone) stops, stores nothing and raises :class:`CallAbandoned`.
        """
        actor = actor or Actor()
        validation.check_subject_id(subject_id)
        validation.check_subject_info(info)
        validation.check_reason(override_reason, "override_reason", required=allow_duplicate, documents=[subject_id])
        self._check_samples(samples)
        self._check_finger_positions(samples)
        if subject_id in self._watchlist:
            raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.")

        def stop() -> None:
            if still_wanted is not None and not still_wanted():
                raise CallAbandoned(f"The enrolment of {subject_id!r} was abandoned by its caller: nothing was "
                                    "stored.")

        faces = self._extract_faces(samples, "enrol", stop)
        if split := disagreeing_pairs([f.template for f in faces], self.face_score):
            a, b, score = split[0]
            raise SamplesDisagree(
                f"Face photographs {a + 1} and {b + 1} do not look like the same person (score {score:.1f}, under "
                f"{MIN_ENROL_AGREEMENT}). Retake the photographs, of the applicant alone.")
        fingers = self._extract_fingers(samples, "enrol", stop)
        self._check_impressions_agree(fingers)
        qualities = tuple(SampleQuality(Modality.FACE, 0, f.quality) for f in faces) + tuple(
            SampleQuality(Modality.FINGERPRINT, finger, t.quality) for finger, t in fingers)
        stored = [StoredTemplate(Modality.FACE, 0, f.quality, pack_face_template(f.template)) for f in faces] + [
            StoredTemplate(Modality.FINGERPRINT, finger, t.quality, t.to_bytes()) for finger, t in fingers]
        decision_id = _new_decision_id()
        with self._write_lock:  # asked again once the lock is held: a caller may give up while another writes
            stop()
            self._ensure_current()
            if self.island is not None and self.island.offline():
                result = self.island.enrol_offline(subject_id, info, faces, fingers, stored, qualities, decision_id,
                                                   allow_duplicate, override_reason, actor)
                self.statistics.record_decision("enrol_provisional" if result.enrolled else "enrol_duplicate_held")
                return result
            online = OnlineUpload() if self.island is not None and self.island.works_offline else None
            try:
                result = self._enrol_in_register(subject_id, info, faces, fingers, stored, qualities, decision_id,
                                                 allow_duplicate, override_reason, actor, online)
            except RegisterUnavailable:
                if self.island is None or not self.island.works_offline:
                    raise
                self.island.link_lost()  # the commit may have been lost after the register made it: same upload
                result = self.island.enrol_offline(subject_id, info, faces, fingers, stored, qualities, decision_id,
                                                   allow_duplicate, override_reason, actor, online)
        return result

    def _check_impressions_agree(self, fingers: Sequence[tuple[int, FingerprintTemplate]]) -> None:
        """Refuse (:class:`SamplesDisagree`, ``INVALID_ARGUMENT``) an enrolment whose impressions of one finger
        position (or those sent without a position) are not of one finger: each must match another of them at
        ``MIN_IMPRESSION_AGREEMENT`` (FMR 1%), directly or through others (``biometrics.fingerprint.agreement``),
        scored with the station's fingerprint calibration. As for face photographs (``MIN_ENROL_AGREEMENT``). And
        two declared positions must not be one finger (the applicant did not move to the next finger:
        ``positions_of_one_finger``), which every later search would count twice."""
        by_position: dict[int, list[FingerprintTemplate]] = {}
        for position, template in fingers:
            by_position.setdefault(position, []).append(template)
        for position, templates in by_position.items():
            if len(templates) < 2:
                continue
            groups, best = impression_groups(templates, self._fingerprint_pair_score)
            if len(groups) > 1:
                raise SamplesDisagree(disagreement(position, groups, best))
        if one := positions_of_one_finger(by_position, self._fingerprint_pair_score):
            raise SamplesDisagree(one_finger_message(*one[0]))

    @staticmethod
    def _check_finger_positions(samples: Sequence[Sample]) -> None:
        """Refuse (:class:`SamplesDisagree`, ``INVALID_ARGUMENT``) an enrolment that sends some fingers with their
        positions and some without (0), before anything is extracted: a search takes a template of unknown position
        for possibly any of the subject's fingers, so it would join every probe of the subject into one finger
        (``gallery.per_enrolled_finger``), and the duplicate-finger check cannot compare it with the others.
        Subjects enrolled so before this check keep that (conservative) scoring."""
        positions = {s.finger for s in samples if s.modality == Modality.FINGERPRINT}
        if 0 in positions and len(positions) > 1:
            raise SamplesDisagree("Some fingers were sent with their positions and some without: give every "
                                  "finger's position, or none.")

    def _fingerprint_pair_score(self, a: FingerprintTemplate, b: FingerprintTemplate) -> float:
        """The false-match score of one comparison of two fingerprint templates (the station's calibration)."""
        return float(self.fingerprint_calibration.score(compare_fingerprints(a, b)))

    def screen(self, faces: Sequence[np.ndarray], fingers: Sequence[tuple[int, FingerprintTemplate]],
               allow_duplicate: bool, exclude: frozenset[str] = frozenset(), pending: Gallery | None = None
               ) -> tuple[float, tuple[Candidate, ...], bool, str]:
        """The duplicate search of an enrolment against the gallery in memory, ``exclude`` left out, and against
        ``pending`` (the enrolments waiting for an officer's review, which no gallery holds):
        (threshold, possible duplicates, enrolled?, outcome). The enrolment's face photographs ``faces`` are
        searched as Identify searches several frames of a traveller: combined by the multi-frame rule, the score
        less ``log10`` of their number."""
        threshold = self.search_threshold()
        k = self.config.max_candidates + len(exclude)
        probes, frames = self._enrolment_probes(faces), len(faces)  # its photographs as one traveller's frames
        found = [c for c in self._search(probes, fingers, k, threshold, frames) if c.subject_id not in exclude]
        if pending is not None:
            found = sorted(found + self._search(probes, fingers, k, threshold, frames, gallery=pending),
                           key=lambda c: (-c.score, c.subject_id))
        duplicates = tuple(found)[: self.config.max_candidates]
        enrolled = not duplicates or allow_duplicate
        outcome = "enrol_duplicate_held" if not enrolled else (
            "enrol_duplicate_overridden" if duplicates else "enrol_new")
        return threshold, duplicates, enrolled, outcome

    def _enrol_in_register(self, subject_id: str, info: SubjectInfo, faces: Sequence[FaceTemplate],
                           fingers: Sequence[tuple[int, FingerprintTemplate]], stored: list[StoredTemplate],
                           qualities: tuple[SampleQuality, ...], decision_id: str, allow_duplicate: bool,
                           override_reason: str, actor: Actor, online: OnlineUpload | None = None) -> EnrolmentResult:
        seq = ref = None
        with self._change() as tx:
            self.catch_up()  # inside the register's write lock: the search sees every committed change
            if subject_id in self._watchlist:
                raise SubjectExists(f"A subject is already enrolled under {subject_id!r}.")
            if self.island is not None and self.island.reviews.pending_for(tx, self._ref(subject_id)):
                raise SubjectExists(f"{subject_id!r} was enrolled offline at an island station and waits for an "
                                    "officer's review as a possible duplicate: resolve that review first "
                                    "(checkpoint-enroll reviews), then enrol again if need be.")
            pending = pending_gallery(self, self.island.reviews, tx) if self.island is not None else None
            threshold, duplicates, enrolled, outcome = self.screen([f.template for f in faces], fingers,
                                                                   allow_duplicate, pending=pending)
            if online is not None:
                online.screened = threshold, tuple(duplicates)
            if enrolled:
                ref, seq, with_ids = self.storage.insert_subject(tx, subject_id, info, stored)
                if online is not None and self.island is not None:  # recognisable should the COMMIT's answer be lost
                    self.island.record_online(tx, online, subject_id, info, with_ids, seq)
            self._record(
                tx, "enrol", actor, decision_id, subject_ref=self._ref(subject_id), outcome=outcome,
                threshold=threshold, qualities=[q.quality for q in qualities],
                duplicates=[{"subject_ref": self._ref(c.subject_id), "score": c.score} for c in duplicates],
                override_reason=OfficerText(override_reason if duplicates and allow_duplicate else "",
                                            (self._ref(subject_id), *(self._ref(c.subject_id) for c in duplicates))),
            )
        if seq is not None and ref is not None:
            record = record_of(subject_id, info, with_ids)
            self._applied(seq, lambda: self.gallery.apply_change(Change(seq, CHANGE_ENROLLED, ref),
                                                                 (record, with_ids)))
        self.statistics.record_decision(outcome)
        return EnrolmentResult(subject_id, enrolled, duplicates, qualities, threshold, decision_id)

    def verify(self, subject_id: str, samples: Sequence[Sample], *, actor: Actor | None = None,
               document_nationality: str = "", attempts: int = 1, attempt: int = 0,
               still_wanted: Callable[[], bool] | None = None) -> VerificationResult:
        """1:1: is the holder of these samples the subject enrolled as ``subject_id``?

        The samples are extracted before the subject is looked up, so an unknown document number costs a
        caller as much as a known one (a kiosk cannot probe cheaply who is enrolled). The decision's event
        (for the transparency portal) is recorded with its audit record; ``document_nationality`` (alpha-3,
        from the travel document) gives its category, else the enrolled subject's nationality does.

        ``attempts``: this call is one of a kiosk transaction that allows that many calls (the traveller asked
        to place the finger again after a call that was not accepted). The call's fused score is stated as the
        best of ``attempts`` (less ``log10(attempts)``; each modality's own score is returned as it is), so that
        the transaction, accepted when any of its calls is, keeps the FMR the threshold states (union bound).
        Measured in docs/benchmarks.md ("Fused verification"). ``attempt``: which call this is (1 to
        ``attempts``; 0, not given: the last). A call before the last that is not accepted is a step of the
        transaction, not its outcome: it is audited, but its decision event (the published statistics) is left
        to the call that ends the transaction, so the portal counts travellers, not placements; it gets no
        feedback id.

        ``still_wanted``: asked before each sample is extracted (the slow part) and once they are, before they are
        compared; False (the caller has gone) extracts no more and scores nothing: no attempt is counted, no
        decision is audited or published, no alert raised, a ``verify_abandoned`` record is audited, and
        :class:`CallAbandoned` is raised (a later call of a transaction is published as its end, as a capture that
        failed: see :meth:`verify_capture_failed`).
        """
        started, actor = time.perf_counter(), actor or Actor()
        try:
            return self._verify(subject_id, samples, actor, document_nationality, started, attempts, attempt,
                                still_wanted)
        except BiometricError as exc:
            self._verify_refused(exc, subject_id, actor, started, _modalities(samples), document_nationality)
            raise
        except CallAbandoned:
            self.verify_capture_failed(subject_id, attempt, actor, started, _modalities(samples),
                                       document_nationality)
            raise

    def _verify(self, subject_id: str, samples: Sequence[Sample], actor: Actor, document_nationality: str,
                started: float, attempts: int = 1, attempt: int = 0,
                still_wanted: Callable[[], bool] | None = None) -> VerificationResult:
        nationality, attempts, attempt = validation.check_verify_request(subject_id, document_nationality,
                                                                        attempts, attempt)
        self._check_samples(samples)
        stop = functools.partial(self._stop_if_abandoned, still_wanted, "verify", actor,
                                 subject_ref=self._ref(subject_id),
                                 **({"attempts": attempts, "attempt": attempt} if attempts > 1 else {}))
        faces = self._extract_faces(samples, "probe", stop)
        fingers = self._extract_fingers(samples, "probe", stop)
        stop()
        self._ensure_current()
        if subject_id not in self._watchlist:
            raise SubjectNotFound(f"No traveller is enrolled under {subject_id!r}.")
        modality_scores: list[ModalityScore] = []
        if faces and subject_id in self.face_index:
            modality_scores.append(ModalityScore(Modality.FACE, self._face_score_of(self._face_probes(faces),
                                                                                    subject_id, len(faces))))
        modality_scores.extend(ModalityScore(Modality.FINGERPRINT, s, finger)
                               for finger, s in self.fingerprint_gallery.compare(subject_id, fingers))
        if not modality_scores:
            missing = "face" if faces else "fingerprint of these fingers"
            raise NoReference(f"{subject_id!r} has no {missing} enrolled: verify with another modality.")
        counted = self._count_attempt(subject_id, attempts, actor)
        declared = attempts
        if counted is not None:
            attempts = counted.attempts
        score = self.fuse(modality_scores)
        if attempts > 1:  # one call of a transaction that accepts when any call does: the union bound
            score = best_of_k(score, attempts)
        match = score >= self.threshold
        watchlist = self._watchlist.get(subject_id, False)
        in_review = self.island is not None and self.island.in_review(subject_id)
        # read at fmr / attempts: each call of a transaction is held to its share of the FMR (the union bound)
        unmeasured = (not any(m.modality is Modality.FACE for m in modality_scores)
                      and not self._finger_scores_measured(self.config.fmr / attempts))
        decision_id = _new_decision_id()
        if self.events is not None and not nationality:
            nationality = self._enrolled_nationality(subject_id)
        result = VerificationResult(match, score, self.threshold, decision_id, tuple(modality_scores), watchlist,
                                    self.register_as_of(), feedback_id=self._new_feedback_id(), in_review=in_review,
                                    finger_alone_unmeasured=unmeasured)
        outcome = verification_outcome(result)
        # A call not accepted is a step of its transaction (the kiosk will call again), not its end, when the kiosk
        # says more calls are to come and, for a counted caller, the station's own count leaves it another call: a
        # kiosk cannot keep a failed transaction off the portal by declaring every call its first. Each transaction
        # is published once: a later call of one whose end was published (the kiosk declared an earlier call its
        # last) is not published again.
        step = outcome.decision != PROCEED and not unmeasured and 0 < attempt < declared and (
            counted is None or counted.call < counted.attempts)  # another placement cannot change a referral
        publish = not step and not (counted is not None and counted.published)
        if not publish:
            result = replace(result, feedback_id="")
        alert = match and watchlist and not (counted is not None and counted.alerted)
        with self._audit() as tx:
            self._record(tx, "verify", actor, decision_id, subject_ref=self._ref(subject_id),
                         match=match, score=score, threshold=self.threshold,
                         **({"attempts": attempts, "attempt": attempt} if attempts > 1 else {}),
                         **({"call": counted.call} if counted is not None else {}),
                         **({"in_review": True} if in_review else {}),
                         **({"finger_alone_unmeasured": True} if unmeasured else {}))
            if alert:  # once per kiosk transaction: a watchlisted traveller asked again raises no second one
                self._raise_alert(tx, "watchlist_verify", decision_id, subject_id, score, actor)
            if publish:
                self._record_event(tx, result.feedback_id, outcome, actor, started, faces, fingers, nationality)
        if counted is not None:
            # a step publishes nothing now; should the traveller not call again, its transaction ends with it
            unpublished = self._event_of(outcome, actor, started, faces, fingers, nationality) if step else None
            self.attempt_ledger.end(counted, accepted=outcome.decision == PROCEED or unmeasured, alerted=alert,
                                    published=publish, unpublished=unpublished)
        self.statistics.record_decision(decision_metric("verify", match, unmeasured, outcome))
        return result

    def _finger_scores_measured(self, fmr: float) -> bool:
        """Whether the fingerprint calibration's distinct impostor pairs measure a comparison's FMR ``fmr`` (the
        rule of three): a decision on fingerprints alone read at a rarer FMR refers the traveller to an officer."""
        return self.fingerprint_calibration.measures(fmr)

    def check_attempts_left(self, subject_id: str, *, actor: Actor | None = None,
                            modalities: Collection[int | None] = (), nationality: str = "") -> None:
        """Raise ``AttemptsExhausted`` when a kiosk's Verify of ``subject_id`` would be refused for its transaction's
        attempts (``biometrics.attempts``), counting nothing: asked before a device capture, so that the
        traveller is not asked to place a finger for a call that will be refused. The refusal is audited, and
        published as the transaction's end if it has none (``modalities`` and ``nationality``: the request's)."""
        actor = actor or Actor()
        if self._counted(actor):
            started = time.perf_counter()
            try:
                self.attempt_ledger.check_open(subject_id)
            except AttemptsExhausted as exc:
                self._verify_refused(exc, subject_id, actor, started, modalities, nationality)
                raise

    def _audit_refusal(self, exc: BiometricError, subject_id: str, actor: Actor) -> None:
        """Audit a Verify refused before a decision for what it says about the document (``outcome``: not_found,
        no_reference, attempts_exhausted): a kiosk probing who is enrolled, or a document tried until the station
        refuses it, leaves a trace in the chain. Other refusals (no face, a bad image) are the capture's, published
        as errors only. A failure to record is logged, never raised over the refusal."""
        outcome = REFUSAL_OUTCOMES.get(type(exc))
        if outcome is None:
            return
        try:
            with self._audit() as tx:
                self._record(tx, "verify_refused", actor, _new_decision_id(), subject_ref=self._ref(subject_id),
                             outcome=outcome)
        except Exception:
            log.exception("the audit record of a refused Verify could not be written")

    def _count_attempt(self, subject_id: str, attempts: int, actor: Actor) -> Attempt | None:
        """The station's count of this call in its document's kiosk transaction (``biometrics.attempts``), for
        a caller of the counted roles; None for others (an officer at a desk). Raises ``AttemptsExhausted``."""
        return self.attempt_ledger.begin(subject_id, attempts) if self._counted(actor) else None

    def _counted(self, actor: Actor) -> bool:
        """Whether the station counts this caller's Verify calls per document (an unattended kiosk)."""
        return actor.role in self.config.counted_roles

    def _stop_if_abandoned(self, still_wanted: Callable[[], bool] | None, kind: str, actor: Actor,
                           **fields: Any) -> None:
        """Before a Verify or Identify extracts each sample and before it compares them: when its caller has gone
        (``still_wanted`` answers False), audit a ``KIND_abandoned`` record (no score, no match, no candidate: no
        decision was made) and raise :class:`CallAbandoned`."""
        if still_wanted is None or still_wanted():
            return
        with self._audit() as tx:
            self._record(tx, f"{kind}_abandoned", actor, _new_decision_id(), **fields)
        raise CallAbandoned(f"The {kind} call was abandoned by its caller before its decision: nothing was decided "
                            "or counted.")

    def identify(
        self, samples: Sequence[Sample], max_candidates: int = 0, *, actor: Actor | None = None,
        document_nationality: str = "", still_wanted: Callable[[], bool] | None = None,
    ) -> IdentificationResult:
        """1:N: the enrolled subjects these samples match, at or over the 1:N threshold, best first.

        Its event is recorded with its audit record, its category from ``document_nationality`` (unknown without).
        ``still_wanted``: asked before each sample is extracted and once they are, before the search; False (the
        caller has gone) extracts no more, searches nothing and records no decision, no alert and no event, audits
        an ``identify_abandoned`` record and raises :class:`CallAbandoned`.
        """
        started, actor = time.perf_counter(), actor or Actor()
        try:
            return self._identify(samples, max_candidates, actor, document_nationality, started, still_wanted)
        except BiometricError:
            self._record_error(actor, started, samples, document_nationality)
            raise

    def _identify(self, samples: Sequence[Sample], max_candidates: int, actor: Actor, document_nationality: str,
                  started: float, still_wanted: Callable[[], bool] | None = None) -> IdentificationResult:
        nationality, max_candidates = validation.check_identify_request(document_nationality, max_candidates)
        self._check_samples(samples)
        k = min(max_candidates or self.config.default_max_candidates, self.config.max_candidates)
        stop = functools.partial(self._stop_if_abandoned, still_wanted, "identify", actor)
        faces = self._extract_faces(samples, "search", stop)  # a second traveller in the picture: refused
        fingers = self._extract_fingers(samples, "probe", stop)
        stop()
        self._ensure_current()
        threshold = self.search_threshold()
        # ranked over the server's whole cap (two at least): the decision and the alerts see every watchlisted
        # candidate and whether a second subject is over the threshold (an ambiguous identity, even beyond k), the
        # answer the k best and the watchlisted (decisions.shortlist)
        ranked = self._search(self._face_probes(faces), fingers, max(2, self.config.max_candidates), threshold,
                              len(faces))
        candidates = shortlist(ranked, k)
        decision_id = _new_decision_id()
        # a candidate scored without a face (none sent, or none enrolled) rests on its fingers alone, read at the
        # per-comparison FMR of the 1:N threshold
        unmeasured = any(all(m.modality is not Modality.FACE for m in c.modality_scores) for c in candidates) and (
            not self._finger_scores_measured(10.0 ** -threshold))
        result = IdentificationResult(candidates, threshold, decision_id, self.register_as_of(),
                                      feedback_id=self._new_feedback_id(), finger_alone_unmeasured=unmeasured,
                                      ambiguous=len({c.subject_id for c in ranked}) > 1)
        outcome = identification_outcome(result)
        with self._audit() as tx:
            self._record(tx, "identify", actor, decision_id, threshold=threshold,
                         candidates=[{"subject_ref": self._ref(c.subject_id), "score": c.score,
                                      "watchlist": c.watchlist} for c in candidates],
                         **({"finger_alone_unmeasured": True} if unmeasured else {}))
            for c in candidates:
                if c.watchlist:
                    self._raise_alert(tx, "watchlist_identify", decision_id, c.subject_id, c.score, actor)
            self._record_event(tx, result.feedback_id, outcome, actor, started, faces,
                               fingers, nationality)
        self.statistics.record_decision(decision_metric("identify", bool(candidates), unmeasured, outcome))
        return result

    def rate_decision(self, feedback_id: str, rating: int) -> None:
        """The traveller's rating (1..4) of a decision, by the ``feedback_id`` its answer gave; once per decision
        (FeedbackRefused), within the rating window (RatingWindowClosed), an unknown id EventNotFound, a bad
        rating InvalidRating. Not audited and without the caller; kept only as counters (the month's, at the
        station), with a mark of the decision, no value and no time, while its window lasts
        (docs/transparency.md, "Feedback")."""
        check_rating(rating)
        check_event_id(feedback_id)
        if self.events is None:
            raise EventNotFound("This station does not record its decisions, so there is nothing to rate.")
        self.events.store.record_feedback(feedback_id, rating)

    def get_subject(self, subject_id: str, *, actor: Actor | None = None) -> SubjectRecord:
        """The subject's personal data and template inventory; every read is recorded in the audit chain."""
        actor = actor or Actor()
        validation.check_subject_id(subject_id)
        self._ensure_current()
        decision_id = _new_decision_id()
        try:
            record = self.storage.get_subject(subject_id)
        except SubjectNotFound:
            with self._audit() as tx:
                self._record(tx, "read_subject", actor, decision_id, subject_ref=self._ref(subject_id),
                             outcome="not_found")
            raise
        with self._audit() as tx:
            self._record(tx, "read_subject", actor, decision_id, subject_ref=self._ref(subject_id), outcome="read")
        return record

    def record_capture(self, modality: Modality, device: str, width: int, height: int, *,
                       actor: Actor | None = None) -> str:
        """Record in the audit chain that ``actor`` took an image from the station's ``device`` (CaptureFace,
        CaptureFingerprint: the whole image goes to the caller): the modality and the image's size, never the
        image. Recorded before the image is handed over; returns the decision id."""
        decision_id = _new_decision_id()
        with self._audit() as tx:
            self._record(tx, "capture", actor or Actor(), decision_id, modalities=[modality.name.lower()],
                         device=device, width=int(width), height=int(height))
        return decision_id

    def delete_subject(self, subject_id: str, reason: str, *, actor: Actor | None = None) -> str:
        """Erase a subject from storage, then from the in-memory gallery; returns the decision id.

        The erasure, its change-log entry and its audit record commit in one transaction. The officer's
        ``reason`` is required (as for a duplicate override or a review): an erasure is recorded with why.
        """
        actor = actor or Actor()
        validation.check_subject_id(subject_id)
        validation.check_reason(reason, "reason", required=True, documents=[subject_id])
        decision_id = _new_decision_id()
        with self._write_lock:
            self._ensure_current()
            if self.island is not None and self.island.offline():
                self.island.erase_offline(subject_id, reason, decision_id, actor)
            else:
                try:
                    self._erase_in_register(subject_id, reason, decision_id, actor)
                except RegisterUnavailable:
                    if self.island is None or not self.island.works_offline:
                        raise
                    self.island.link_lost()
                    self.island.erase_offline(subject_id, reason, decision_id, actor)
        self.statistics.record_decision("delete")
        return decision_id

    def _erase_in_register(self, subject_id: str, reason: str, decision_id: str, actor: Actor) -> None:
        """Erase in the store; on a shared register, an erasure that finds nothing is recorded against the
        document all the same (enrolments of it queued at islands are refused) and answered NOT_FOUND saying so."""
        with self._change() as tx:
            self.catch_up()
            if self.island is None:
                seq, found = self.storage.erase_subject(tx, subject_id), True
                if seq is None:
                    raise SubjectNotFound(f"No subject is enrolled under {subject_id!r}.")
            else:
                seq, found = self.storage.erase_document(tx, subject_id)  # type: ignore[attr-defined]
            self._record(tx, "delete", actor, decision_id, subject_ref=self._ref(subject_id), reason=reason,
                         **({} if found else {"outcome": "recorded_against_document"}))
        self._applied(seq, lambda: self.gallery.apply_change(Change(seq, CHANGE_ERASED, self._ref(subject_id)), None))
        if not found:
            raise SubjectNotFound(
                f"No subject is enrolled under {subject_id!r} in the central register. The erasure is recorded "
                "against the document number: an enrolment of it made at an island station working offline, not "
                "uploaded yet, is refused when it is uploaded, unless it was made after the station learnt of "
                "this erasure.")

    def list_alerts(self, limit: int = 50, *, actor: Actor | None = None) -> list[Alert]:
        """The newest ``limit`` watchlist alerts (at most 500), newest first; the read is audited."""
        actor = actor or Actor()
        limit = validation.check_limit(limit, "limit", default=validation.DEFAULT_ALERTS, maximum=validation.MAX_ALERTS)
        alerts = self.alert_store.list_alerts(limit)
        with self._audit() as tx:
            self._record(tx, "read_alerts", actor, _new_decision_id(), count=len(alerts))
        return alerts

    def list_reviews(self, limit: int = 50, *, actor: Actor | None = None) -> list[Review]:
        """Enrolments made offline whose upload found possible duplicates, waiting for an officer; audited."""
        actor = actor or Actor()
        limit = validation.check_limit(limit, "limit", default=validation.DEFAULT_ALERTS, maximum=validation.MAX_ALERTS)
        if self.island is None:
            return []
        self._ensure_current()
        reviews = self.island.list_reviews(limit)
        with self._audit() as tx:
            self._record(tx, "read_reviews", actor, _new_decision_id(), count=len(reviews))
        return reviews

    def resolve_review(self, review_id: str, resolution: str, reason: str, *, actor: Actor | None = None) -> str:
        """Resolve a review: keep_both, link or reject, with the officer's reason (required); audited."""
        actor = actor or Actor()
        validation.check_reason(reason, "reason", required=True)
        if self.island is None:
            raise ReviewConflict("This station has no shared register: there is nothing to review.")
        self._ensure_current()
        return self.island.resolve(review_id, resolution, reason, actor)

    def holds(self, subject_id: str) -> bool:
        """Whether this station's in-memory gallery holds ``subject_id`` now (diagnostics and tests)."""
        return subject_id in self._watchlist

    def gallery_size(self) -> tuple[int, int]:
        """(subjects, templates) in the in-memory gallery."""
        return self.gallery.subjects, self.gallery.templates

    def sample_quality(self, sample: Sample) -> float:
        """The quality (0..100) of one sample, as enrolment would measure it (0 when unusable)."""
        try:
            if sample.modality == Modality.FINGERPRINT:
                image = sample.image
                grey = decode_fingerprint(image, self.config.limits) if isinstance(image, bytes) else image
                return float(fingerprint_quality(grey))
            return float(self._extract_faces([sample], "probe")[0].quality)
        except InvalidSample:
            return 0.0

    def close(self) -> None:
        """Stop following the register, sign a shutdown checkpoint, release storage and the data directory."""
        self._closing.set()
        if self._listener is not None:
            self._listener.stop()
        if self._loader is not None:
            self._loader.join(10)
        close_faces = getattr(self.face_index, "close", None)  # a sharded gallery: stop its replicas
        if close_faces is not None:
            close_faces()
        self.publish_ended_transactions(all_open=True)  # before the housekeeper's last shipping
        if self._event_keeper is not None:
            self._event_keeper.stop()
        try:
            if self.decision_log is not None:
                self.decision_log.close()
        finally:
            self.storage.close()
            if self.alert_store is not self.storage:
                self.alert_store.close()
            for lock in self._dir_locks:
                lock.release()
            self._dir_locks = []
