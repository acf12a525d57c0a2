"""The face calibration's measured range against the operating thresholds, as the fingerprint side does it (a
review: only the fingerprint calibration was checked). The shipped face calibration measures 9,414,908 impostor
pairs of lfw-dev, to s = 6.97, and extrapolates to 8.94 at a distance of 0: a server at ``--fmr 1e-9`` is
refused, one beyond the rule of three (FMR 3.2e-7) is warned about, and a 1:N threshold that the gallery's growth
carries beyond the measured range, then beyond reach, is logged once each time that changes."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from helpers import ServerProcess, face, refused_at_start

from biometrics.scores import ScoreCalibration
from biometrics.service import CheckpointService, ServiceConfig, StoreLocation
from biometrics.types import Actor, Modality, Sample, SubjectInfo

OFFICER = Actor(role="officer", identity="CN=Siti,OU=officer")


def test_the_shipped_face_calibration_states_how_far_it_measures_and_reaches() -> None:
    shipped = ScoreCalibration.for_modality("face")
    assert (shipped.n_impostor, shipped.n_pairs) == (9_414_908, 9_414_908)
    assert shipped.measurable_fmr == pytest.approx(3 / 9_414_908)
    assert shipped.ceiling == pytest.approx(8.935, abs=1e-3)  # distance 0, on the extrapolated tail
    assert shipped.score(0.0) == pytest.approx(shipped.ceiling)
    assert shipped.reaches(1e-8) and not shipped.reaches(1e-9)
    shipped.check_reaches(1e-8)
    with pytest.raises(ValueError, match=r"s = 9\.00, and the face calibration scores no comparison above 8\.94"):
        shipped.check_reaches(1e-9)
    assert shipped.measures(1e-6) and not shipped.measures(1e-7)
    with pytest.raises(ValueError, match=r"measure an FMR down to 3\.2e-07 at best.*calibrate on more faces"):
        shipped.check_measures(1e-7)
    assert ScoreCalibration.for_modality("fingerprint").ceiling == 12.0  # a similarity: capped, not bounded


def test_a_server_refuses_an_fmr_no_face_comparison_can_reach(tmp_path: Path) -> None:
    done = refused_at_start(tmp_path, "--fmr", "1e-9")
    assert "--fmr 1e-09" in done.stderr and "no face comparison could ever match" in done.stderr
    assert "8.94" in done.stderr and "Choose an FMR of 1.2e-09 or more" in done.stderr


@pytest.mark.server
def test_a_server_warns_at_start_of_an_fmr_beyond_the_face_measurement(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", args=("--fmr", "1e-7")).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("shipped fingerprint calibration" in x for x in proc.output):
            time.sleep(0.1)  # the last line the server logs at start
        said = "".join(proc.output)
    finally:
        proc.stop()
    assert "WARNING" in said and "the face calibration cannot state FMR 1e-07" in said
    assert "measure an FMR down to 3.2e-07" in said
    # the 1:N threshold of the empty gallery is the 1:1 one: beyond the measurement too, said once
    assert said.count("beyond what the face calibration measures") == 1


def _small_face_calibration() -> ScoreCalibration:
    """A face calibration of 1,000 impostors: measured to FMR 3e-3 (s 2.52), reaching s 2.85 at distance 0."""
    return ScoreCalibration(modality="face", higher_is_better=False, values=[-1.0, -0.5], scores=[0.0, 2.0],
                            tail_slope=1.7, n_impostor=1000, source="tests")


def test_identify_says_once_when_the_gallery_carries_its_threshold_beyond_the_face_calibration(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """FPIR 10^-2.45: 1 subject reads s 2.45 (measured), 2 subjects 2.75 (beyond 3/n, reachable), 3 subjects 2.93
    (beyond the ceiling 2.85); each change is logged once, not at every search."""
    caplog.set_level(logging.INFO, logger="biometrics.service")
    config = ServiceConfig(fmr=0.01, fpir=10 ** -2.45, record_events=False)
    s = CheckpointService.open(StoreLocation(tmp_path / "data", key_dir=tmp_path / "keys"), config=config,
                               face_calibration=_small_face_calibration())

    def said() -> list[tuple[int, str]]:
        return [(r.levelno, r.getMessage()) for r in caplog.records if "face calibration" in r.getMessage()]

    try:
        for sid, photo in (("A1", "Hans_Blix_0001.jpg"), ("A2", "Kofi_Annan_0001.jpg")):
            assert s.enrol(sid, SubjectInfo(name=sid), [Sample(Modality.FACE, face(photo))], actor=OFFICER).enrolled
        s.identify([Sample(Modality.FACE, face("Kofi_Annan_0002.jpg"))], actor=OFFICER)
        assert s.search_threshold() == pytest.approx(2.751, abs=1e-3)
        assert [level for level, _ in said()] == [logging.WARNING]
        assert "3 over its 1000 distinct impostor pairs" in said()[0][1] and "FMR 0.003" in said()[0][1]
        assert s.enrol("A3", SubjectInfo(name="A3"), [Sample(Modality.FACE, face("Megawati_Sukarnoputri_0001.jpg"))],
                       actor=OFFICER).enrolled
        for _ in range(3):
            found = s.identify([Sample(Modality.FACE, face("Kofi_Annan_0002.jpg"))], actor=OFFICER)
            assert not found.candidates  # no face can reach s 2.93: Kofi Annan is not found
        assert [level for level, _ in said()] == [logging.WARNING, logging.ERROR]
        assert "no face comparison can reach" in said()[1][1] and "highest is 2.85" in said()[1][1]
        s.delete_subject("A3", "test", actor=OFFICER)
        s.delete_subject("A2", "test", actor=OFFICER)
        s.identify([Sample(Modality.FACE, face("Hans_Blix_0001.jpg"))], actor=OFFICER)
        assert [level for level, _ in said()] == [logging.WARNING, logging.ERROR, logging.INFO]
        assert "again within" in said()[2][1]
    finally:
        s.close()
