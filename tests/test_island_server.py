"""The island station through gRPC and the desk tool: a provisional enrolment, the age of the station's view,
the outbox in GetStatistics, and a review resolved at the central office's desk."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from checkpoint.v1 import checkpoint_pb2 as pb
from helpers import ServerProcess, face_sample
from pg import fresh_database
from waiting import wait_until

from benchmarks.linkcut import LinkProxy
from enroll import cli as desk

pytestmark = [pytest.mark.server, pytest.mark.slow]


def stats(stub: object) -> pb.Statistics:
    return stub.GetStatistics(pb.GetStatisticsRequest())  # type: ignore[attr-defined]


def test_an_island_enrols_provisionally_and_the_office_rejects_a_duplicate(tmp_path: Path, capsys) -> None:
    with fresh_database() as url, LinkProxy.to_url(url) as proxy:
        central = ServerProcess(tmp_path / "central", key_dir=tmp_path / "keys",
                                args=("--store", url, "--station", "central-office")).start()
        island = ServerProcess(tmp_path / "island", key_dir=tmp_path / "keys", args=(
            "--store", proxy.url(url), "--station", "siberut-port",
            "--replica", str(tmp_path / "island-replica"))).start()
        try:
            office, port = central.stub(), island.stub()
            for stub in (office, port):
                wait_until(lambda stub=stub: stats(stub).register.ready, timeout=60, message="loaded")
            # An island is ready as soon as it has loaded its (here empty) replica; its offline budget counts from
            # the last time it reached the register, so cut the link only once it has (else "last reached: never").
            wait_until(lambda: stats(port).register.connected, timeout=60, message="the island reached the register")
            proxy.cut()
            wait_until(lambda: not stats(port).register.connected, timeout=20, message="the island is offline")
            kofi = port.Enroll(pb.EnrollRequest(subject_id="K4000004", info=pb.SubjectInfo(name="Kofi"),
                                                samples=[face_sample("Kofi_Annan_0004.jpg")]))
            assert kofi.enrolled and kofi.provisional
            seen = port.Verify(pb.VerifyRequest(subject_id="K4000004",
                                                samples=[face_sample("Kofi_Annan_0001.jpg")]))
            assert seen.decision == pb.PROCEED and seen.register_as_of
            assert stats(port).register.outbox_pending == 1 and stats(port).register.provisional == 1
            assert office.Enroll(pb.EnrollRequest(subject_id="K5000005", info=pb.SubjectInfo(name="Kofi"),
                                                  samples=[face_sample("Kofi_Annan_0001.jpg")])).enrolled
            proxy.restore()
            wait_until(lambda: stats(port).register.outbox_pending == 0, timeout=60, message="drained")

            assert desk.main(["--target", central.target, "reviews"]) == 0
            listed = capsys.readouterr().out
            assert "K4000004" in listed and "siberut-port" in listed and "possible duplicate K5000005" in listed
            (review,) = office.ListReviews(pb.ListReviewsRequest()).reviews
            with pytest.raises(grpc.RpcError) as refused:
                office.ResolveReview(pb.ResolveReviewRequest(review_id=review.review_id, resolution=pb.REJECT))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, "a resolution needs a reason"
            assert desk.main(["--target", central.target, "resolve", review.review_id, "reject",
                              "--reason", "same traveller, second document refused"]) == 0
            wait_until(lambda: stats(port).register.provisional == 0, timeout=30,
                       message="the rejected enrolment left the island")
            with pytest.raises(grpc.RpcError) as gone:
                port.Verify(pb.VerifyRequest(subject_id="K4000004",
                                             samples=[face_sample("Kofi_Annan_0001.jpg")]))
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            assert not office.ListReviews(pb.ListReviewsRequest()).reviews
        finally:
            island.stop()
            central.stop()
