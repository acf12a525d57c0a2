"""checkpoint-bench events on small data: both services answer, the figures are written, a bulk load counts every
event in the aggregates; a folder without identities.csv is a clear refusal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pg import ADMIN_URL

from benchmarks import cli

FACES = Path(__file__).resolve().parent / "data" / "faces"


def small_lfw(root: Path) -> Path:
    """tests/data/faces laid out as the LFW folder the benchmark reads."""
    root.mkdir(parents=True)
    people: dict[str, list[Path]] = {}
    for image in sorted(FACES.glob("*.jpg")):
        people.setdefault(image.stem.rsplit("_", 1)[0], []).append(image)
    with (root / "identities.csv").open("w") as f:
        f.write("identity,n_images\n")
        for name, images in people.items():
            f.write(f"{name},{len(images)}\n")
            (root / "images" / name).mkdir(parents=True)
            for image in images:
                shutil.copy(image, root / "images" / name / image.name)
    return root


@pytest.mark.bench
@pytest.mark.slow
def test_a_short_run_writes_its_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lfw = small_lfw(tmp_path / "lfw")
    out = tmp_path / "events.json"
    assert cli.main(["events", "--images", str(lfw), "--subjects", "2", "--verifies", "12", "--live-verifies", "2",
                     "--bulk", "3000", "--postgres", ADMIN_URL, "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for backend in ("verify_sqlite", "verify_register"):
        for mode in ("cached", "live"):
            s = figures[backend][mode]
            assert s["on_p50_ms"] > 0 and s["off_p50_ms"] > 0, (backend, mode)
    assert figures["verify_register"]["pending_after"] == 0  # the journal's events reached the register
    assert figures["bulk_sqlite"]["events"] == figures["bulk_postgres"]["events"] == 3000
    assert "recording on vs off" in capsys.readouterr().out


def test_a_folder_without_identities_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["events", "--images", str(tmp_path), "--json", str(tmp_path / "x.json")]) == 2
    assert "identities.csv" in capsys.readouterr().out
