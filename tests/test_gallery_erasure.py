"""An erasure whose face-index removal fails (a sharded index with a shard down) leaves nothing matchable."""

from __future__ import annotations

from pathlib import Path

import pytest

from biometrics.errors import SubjectNotFound
from biometrics.matcher import TemplateIndex
from biometrics.service import CheckpointService, StoreLocation
from biometrics.sharded import ShardUnavailable
from biometrics.types import Modality, Sample, SubjectInfo

DATA = Path(__file__).resolve().parent / "data"
SUBJECT = "USA0000099"
RIGHT_INDEX = 2
pytestmark = pytest.mark.slow  # real face and fingerprint extraction


class ShardDown(TemplateIndex):
    """An in-process index whose removals fail once ``down`` is set, as a sharded one's do with a shard down."""

    down = False

    def remove(self, subject_id: str) -> None:
        if self.down:
            raise ShardUnavailable("no replica of shard 0 answers")
        super().remove(subject_id)


def finger(name: str) -> Sample:
    return Sample(Modality.FINGERPRINT, (DATA / "fingerprints" / f"{name}.png").read_bytes(), RIGHT_INDEX)


def test_a_failed_face_removal_leaves_the_erased_subject_unmatchable(tmp_path: Path) -> None:
    index = ShardDown(128)
    service = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"), face_index=index)
    try:
        face = Sample(Modality.FACE, (DATA / "fused" / "Dick_Vermeil_0001.jpg").read_bytes())
        assert service.enrol(SUBJECT, SubjectInfo(name="Dick Vermeil", watchlist=True),
                             [face, finger("DB1_B_101_1"), finger("DB1_B_101_3")]).enrolled
        assert service.verify(SUBJECT, [finger("DB1_B_101_2")]).match  # his finger, before the erasure
        index.down = True
        service.delete_subject(SUBJECT, "erasure request")
        assert SUBJECT in index  # the face index could not let go of his face
        with pytest.raises(SubjectNotFound):
            service.verify(SUBJECT, [finger("DB1_B_101_2")])
        assert service.identify([finger("DB1_B_101_2")]).candidates == ()
        assert service.identify([face]).candidates == ()  # his face is still in the index, but not a candidate
        index.down = False
        service.catch_up()  # the shard is back: the erasure is applied again, in full
        assert SUBJECT not in index
    finally:
        service.close()
