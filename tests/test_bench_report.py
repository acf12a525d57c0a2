"""checkpoint-bench report: one Markdown report from result folders, with the machine and the commands."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from benchmarks import cli

FACES = Path(__file__).resolve().parent / "data" / "faces"


def mem_total_gib() -> float | None:
    """MemTotal from /proc/meminfo in GiB (None off Linux)."""
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    kib = next(int(line.split()[1]) for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:"))
    return kib / 2**20


@pytest.mark.bench
def test_report_from_an_identify_run(tmp_path: Path):
    data = tmp_path / "data"
    for f in FACES.glob("*.jpg"):
        name = f.stem.rsplit("_", 1)[0]
        (data / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, data / name / f.name)
    assert cli.main(["identify", "--data", str(data), "--out", str(tmp_path / "id"), "--workers", "1"]) == 0
    out = tmp_path / "report"
    assert cli.main(["report", "--out", str(out), "--identify", str(tmp_path / "id")]) == 0
    text = (out / "report.md").read_text()
    assert "## 1:N open-set identification" in text and "CMC rank 1" in text
    assert "## Machine" in text and "numpy" in text
    assert f"checkpoint-bench identify --data {data}" in text  # the exact command is given
    assert (out / "identify" / "cmc.png").is_file()
    machine = json.loads((out / "machine.json").read_text())
    assert machine["logical_cores"] == os.cpu_count()
    if (total := mem_total_gib()) is not None:
        assert machine["memory_gib"] == pytest.approx(total, abs=0.051)  # rounded to 0.1 GiB
    assert f"{machine['logical_cores']} logical cores" in text and f"memory {machine['memory_gib']} GiB" in text


def test_nothing_to_report_and_bad_folders_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert cli.main(["report", "--out", str(tmp_path / "r")]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert cli.main(["report", "--out", str(tmp_path / "r"), "--accuracy", str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err
