"""What the service records of each Verify and Identify for the transparency portal: a :class:`DecisionEvent`.

:class:`EventRecorder` turns a decision into an event (station, lane, direction, category, published outcome,
processing time, quality bucket, model and calibration versions, and the nationality for the restricted
table) and writes it in the transaction the service gives it (the one of the decision's audit record).

**Lane and direction are the server's setting.** The lane is the caller's identity: the kiosk certificate's
common name (``kiosk-02``), else its whole subject (``Actor.identity``). An officer's desk is published as
``desk``: an officer's certificate names a person, who is not published. The direction comes from the server's
lane map (``--lane KIOSK=departure``, keyed by the certificate's subject or common name; default ``arrival``),
not from the request: the server already knows which kiosk calls from its certificate, so one place (the
server's configuration) says which way each lane faces, and a misconfigured or tampered kiosk cannot move its
traffic to the other direction of the published figures. A kiosk needs no change to be counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from biometrics.event_store import SqlEventStore, new_event_id
from biometrics.events import (
    ARRIVAL,
    DIRECTIONS,
    DecisionEvent,
    category_of,
    check_nationality,
    quality_bucket,
    to_minute,
)
from biometrics.scores import ScoreCalibration
from biometrics.storage import Transaction
from biometrics.types import Actor

#: The face model (dlib's ResNet face encoder, as packaged by face_recognition_models).
FACE_MODEL = "dlib-resnet-v1"
#: The station name published when the server runs without ``--station``.
UNNAMED_STATION = "local"
#: The lane published for a caller that is not a kiosk and not in the lane map (an officer's desk).
DESK_LANE = "desk"
KIOSK_ROLE = "kiosk"


def fingerprint_model() -> str:
    """The fingerprint model: the minutia cylinder-code template format's version."""
    from biometrics.fingerprint.template import VERSION

    return f"mcc-v{VERSION}"


def calibration_version(calibration: ScoreCalibration) -> str:
    """A short content hash of a score calibration: it changes exactly when the calibration does."""
    doc = json.dumps(dataclasses.asdict(calibration), sort_keys=True, default=str).encode()
    return hashlib.sha256(doc).hexdigest()[:12]


def parse_lanes(specs: Iterable[str]) -> dict[str, str]:
    """``KIOSK=DIRECTION`` options (KIOSK: a certificate subject or common name) as a lane map; ValueError
    naming the bad one."""
    lanes: dict[str, str] = {}
    for spec in specs:
        name, sep, direction = spec.rpartition("=")
        direction = direction.strip().lower()
        if not sep or not name.strip() or direction not in DIRECTIONS:
            raise ValueError(f"--lane {spec!r}: expected KIOSK=arrival or KIOSK=departure (KIOSK: the kiosk "
                             "certificate's subject or common name)")
        lanes[name.strip()] = direction
    return lanes


def lane_of(actor: Actor, lanes: Mapping[str, str], default_direction: str = ARRIVAL) -> tuple[str, str]:
    """(lane, direction) of a caller: see the module doc."""
    keys = (actor.identity, actor.extra.get("common_name", ""))
    direction = next((lanes[k] for k in keys if k and k in lanes), default_direction)
    lane = (actor.extra.get("common_name") or actor.identity) if actor.role == KIOSK_ROLE else DESK_LANE
    return lane or DESK_LANE, direction


class EventRecorder:
    """Builds and writes the decision events of one service (see the module doc)."""

    def __init__(self, store: SqlEventStore, station: str, *, lanes: Mapping[str, str] | None = None,
                 default_direction: str = ARRIVAL, face_calibration: ScoreCalibration | None = None,
                 fingerprint_calibration: ScoreCalibration | None = None) -> None:
        if default_direction not in DIRECTIONS:
            raise ValueError(f"the default direction is one of {DIRECTIONS}, not {default_direction!r}")
        self.store = store
        self.station = station or UNNAMED_STATION
        self.lanes = dict(lanes or {})
        self.default_direction = default_direction
        self._face_calibration = calibration_version(face_calibration) if face_calibration else "none"
        self._finger_calibration = (calibration_version(fingerprint_calibration) if fingerprint_calibration
                                    else "none")

    def versions(self, faces: bool, fingers: bool) -> tuple[str, str]:
        """(model version, calibration version) of a decision over these modalities."""
        models, calibrations = [], []
        if faces or not fingers:
            models.append(f"face:{FACE_MODEL}")
            calibrations.append(f"face:{self._face_calibration}")
        if fingers:
            models.append(f"finger:{fingerprint_model()}")
            calibrations.append(f"finger:{self._finger_calibration}")
        return "+".join(models), "+".join(calibrations)

    def event(self, actor: Actor, outcome: str, started: float, qualities: Sequence[float], nationality: str,
              *, faces: bool, fingers: bool) -> DecisionEvent:
        """The event of a decision that began at ``started`` (``time.perf_counter()``) and ends now.

        The quality bucket is that of the poorest sample; the category follows the document's nationality.
        """
        lane, direction = lane_of(actor, self.lanes, self.default_direction)
        model, calibration = self.versions(faces, fingers)
        nationality = check_nationality(nationality)
        return DecisionEvent(
            minute=to_minute(datetime.now(UTC)), station=self.station, lane=lane, direction=direction,
            category=category_of(nationality), outcome=outcome,
            processing_ms=(time.perf_counter() - started) * 1000.0,
            quality=quality_bucket(min(qualities) if qualities else None), model_version=model,
            calibration_version=calibration, nationality=nationality)

    def write(self, tx: Transaction, event: DecisionEvent, event_id: str) -> str:
        """Write ``event`` under ``event_id`` in ``tx`` (the transaction of the decision's audit record)."""
        return self.store.write(tx, [event], [event_id])[0]

    def record(self, event: DecisionEvent) -> str:
        """Write ``event`` in a transaction of its own (a decision that ended in an error has no audit record)."""
        return self.store.record_decision(event)

    @staticmethod
    def new_id() -> str:
        """A new event id (random)."""
        return new_event_id()

