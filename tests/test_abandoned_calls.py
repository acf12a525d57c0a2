"""A Verify or Identify abandoned by its kiosk once the station's camera has taken the traveller is not scored.

Review: such a call was scored and recorded as a decision nobody received (its audit record, the kiosk's attempt
counted against the document, its decision event published, an alert raised). Now it leaves an abandonment in the
audit chain and nothing else: no decision, no attempt, no event, no alert, no decision in the statistics. The call
ends once the camera has handed over the picture (the servicer's captures are over), cancelled by the kiosk or past
its deadline; the handlers are called in this process with the kiosk's identity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import face, face_sample
from servicer_calls import Aborted, Call

from biometrics.imaging import decode_rgb
from biometrics.service import CheckpointService, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo
from verify.roles import acting_as
from verify.servicer import CheckpointServicer

KIOSK = Actor(role="kiosk", identity="CN=kiosk-1,OU=kiosk,O=Checkpoint", extra={"common_name": "kiosk-1"})
OFFICER = Actor(role="officer", identity="CN=Siti Rahma,OU=officer,O=Checkpoint")
CAMERA = pb.Sample(modality=pb.FACE, capture=pb.DeviceCapture())
IMPOSTOR = "Hans_Blix_0001.jpg"
ENDINGS = ["cancel", "expire"]  # the kiosk cancels its call, or its deadline passes


class CameraThatOutlivesItsCall:
    """The station's camera: hands the photograph over, and by then the kiosk's call has ended."""

    def __init__(self, photo: str, call: Call, how: str) -> None:
        self.pixels = decode_rgb(face(photo))
        self.call = call
        self.how = how

    def capture_face(self, device: str, timeout_s: float, **limits: Any) -> np.ndarray:
        assert self.call.is_active()  # the call was alive when the camera was asked
        self.call.end(self.how)
        return self.pixels


@pytest.fixture
def service(tmp_path: Path) -> Iterator[CheckpointService]:
    s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"))
    s.enrol("P1234567", SubjectInfo(name="Megawati Sukarnoputri", nationality="IDN"),
            [Sample(Modality.FACE, face("Megawati_Sukarnoputri_0001.jpg"))], actor=OFFICER)
    s.enrol("Q7654321", SubjectInfo(name="Kofi Annan", nationality="GHA", watchlist=True),
            [Sample(Modality.FACE, face("Kofi_Annan_0001.jpg"))], actor=OFFICER)
    yield s
    s.close()


def audited(service: CheckpointService) -> list[dict[str, Any]]:
    """The decisions in the station's audit chain, in order."""
    entries = (json.loads(e) for e in service.alert_store.audit_entries())
    return [e for e in entries if e.get("type") == "decision"]


def published(service: CheckpointService) -> list[str]:
    """The outcomes of the station's decision events (what the portal publishes), in order."""
    assert service.events is not None
    with service.events.store.backend._read() as view:
        return [r[0] for r in view.execute("SELECT outcome FROM decision_events ORDER BY n").fetchall()]


def abandoned(servicer: CheckpointServicer, method: str, request: Any, call: Call) -> Aborted:
    with acting_as(KIOSK), pytest.raises(Aborted) as refused:
        getattr(servicer, method)(request, call)
    return refused.value


def cancelled_calls(service: CheckpointService, method: str) -> int:
    return next((c.by_status.get("CANCELLED", 0) for c in service.statistics.calls() if c.method == method), 0)


@pytest.mark.parametrize("how", ENDINGS)
def test_a_verify_abandoned_after_its_capture_is_neither_decided_nor_counted(service: CheckpointService,
                                                                             how: str) -> None:
    before, decisions, events = len(audited(service)), service.statistics.decisions(), published(service)
    call = Call()
    servicer = CheckpointServicer(service, CameraThatOutlivesItsCall(IMPOSTOR, call, how))
    refusal = abandoned(servicer, "Verify", pb.VerifyRequest(subject_id="P1234567", samples=[CAMERA], attempts=1),
                        call)
    assert refusal.code == grpc.StatusCode.CANCELLED
    new = audited(service)[before:]
    assert [e["kind"] for e in new] == ["verify_abandoned"]  # an abandonment, not a decision
    assert set(new[0]["fields"]) == {"subject_ref"}  # no match, no score, no call of a transaction
    assert service.statistics.decisions() == decisions
    assert cancelled_calls(service, "Verify") == 1
    assert published(service) == events
    assert service.attempt_ledger.open_count() == 0
    # The document's one attempt is still there: the traveller's next call is scored, as its transaction's first.
    with acting_as(KIOSK):
        answer = servicer.Verify(pb.VerifyRequest(subject_id="P1234567", samples=[face_sample(IMPOSTOR)],
                                                  attempts=1), Call())
    assert answer.decision == pb.SEE_OFFICER
    scored = audited(service)[-1]
    assert (scored["kind"], scored["fields"]["match"], scored["fields"]["call"]) == ("verify", False, 1)


@pytest.mark.parametrize("how", ENDINGS)
def test_an_identify_abandoned_after_its_capture_raises_no_decision_and_no_alert(service: CheckpointService,
                                                                                 how: str) -> None:
    before, decisions, events = len(audited(service)), service.statistics.decisions(), published(service)
    alerts = len(service.list_alerts(actor=OFFICER))
    call = Call()
    servicer = CheckpointServicer(service, CameraThatOutlivesItsCall("Kofi_Annan_0002.jpg", call, how))
    refusal = abandoned(servicer, "Identify", pb.IdentifyRequest(samples=[CAMERA]), call)
    assert refusal.code == grpc.StatusCode.CANCELLED
    assert [e["kind"] for e in audited(service)[before:]] == ["read_alerts", "identify_abandoned"]
    assert len(service.list_alerts(actor=OFFICER)) == alerts
    assert service.statistics.decisions() == decisions
    assert cancelled_calls(service, "Identify") == 1
    assert published(service) == events


def test_a_later_call_abandoned_ends_its_transaction_as_an_error_not_a_decision(service: CheckpointService) -> None:
    """The transaction's first call, not accepted, published nothing (the kiosk calls again); its second call is
    abandoned: the transaction is published once, as an error (as when that call's capture fails), never as a
    decision, and the second attempt is not counted."""
    servicer = CheckpointServicer(service)
    events = published(service)
    with acting_as(KIOSK):
        first = servicer.Verify(pb.VerifyRequest(subject_id="P1234567", samples=[face_sample(IMPOSTOR)],
                                                 attempts=2, attempt=1), Call())
    assert first.decision == pb.SEE_OFFICER and published(service) == events
    call = Call()
    servicer.station = CameraThatOutlivesItsCall(IMPOSTOR, call, "cancel")
    abandoned(servicer, "Verify", pb.VerifyRequest(subject_id="P1234567", samples=[CAMERA], attempts=2, attempt=2),
              call)
    assert published(service) == [*events, "error"]
    assert audited(service)[-1]["kind"] == "verify_abandoned"
    with acting_as(KIOSK):  # the transaction's second attempt is left: scored as its call 2
        servicer.Verify(pb.VerifyRequest(subject_id="P1234567", samples=[face_sample(IMPOSTOR)], attempts=2,
                                         attempt=2), Call())
    assert audited(service)[-1]["fields"]["call"] == 2
