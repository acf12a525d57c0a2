"""The generalisation benchmark's bookkeeping: the official FVC impostor pairs, the clean-EER ratio and
target per cell, and the cache key that separates extractor versions."""

from __future__ import annotations

import csv

import numpy as np

from benchmarks import fingerprint_robustness as fr


def write_pairs(folder) -> None:
    names = [f"{f}_{i}.png" for f in (101, 102, 103) for i in (1, 2)]
    with open(folder / "pairs.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["path_a", "path_b", "same"])
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                out.writerow([a, b, int(a[:3] == b[:3])])


def test_fvc_impostors_are_first_impressions_of_different_fingers(tmp_path):
    write_pairs(tmp_path)
    mask = fr.fvc_impostors(tmp_path)
    # 15 pairs of 6 images, 3 genuine: 12 impostor rows, of which 101_1-102_1, 101_1-103_1, 102_1-103_1
    assert mask.shape == (12,)
    assert mask.sum() == 3


def row(set_name: str, kind: str, extractor: str, eer: float, protocol: str = "all") -> dict:
    return {"set": set_name, "degradation": kind, "extractor": extractor, "protocol": protocol, "eer": eer,
            "fmr100": eer, "fmr1000": eer, "refused": []}


def test_each_cell_is_judged_against_its_own_clean_eer():
    rows = [row("DB1_B", "clean", "new", 0.01), row("DB1_B", "blur", "new", 0.02),
            row("DB1_B", "dry", "new", 0.021), row("DB1_B", "clean", "old", 0.02),
            row("DB1_B", "blur", "old", 0.03), row("DB2_B", "clean", "new", 0.0),
            row("DB2_B", "wet", "new", 0.0), row("DB2_B", "dry", "new", 0.004)]
    fr.judge(rows)
    met = {(r["set"], r["degradation"], r["extractor"]): r["met"] for r in rows}
    assert met["DB1_B", "blur", "new"] and not met["DB1_B", "dry", "new"]  # exactly double is met
    assert met["DB1_B", "blur", "old"]  # 1.5x of the old extractor's own clean EER
    assert met["DB2_B", "wet", "new"] and not met["DB2_B", "dry", "new"]  # a clean EER of 0 allows only 0
    assert rows[2]["ratio"] == np.float64(0.021) / 0.01


def test_the_table_puts_old_and_new_side_by_side():
    rows = [row("DB1_B", "clean", "new", 0.01), row("DB1_B", "clean", "old", 0.02),
            row("DB1_B", "texture", "new", 0.012), row("DB1_B", "texture", "old", 0.125)]
    fr.judge(rows)
    table = fr.markdown(rows, "all")
    assert "| DB1_B | texture | 12.50 | 1.20 | 6.25 | 1.20 | **no** / yes |" in table


def test_the_cache_key_follows_the_extractor_sources_not_the_matcher(tmp_path, monkeypatch):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "biometrics" / "fingerprint").mkdir(parents=True)
    (tmp_path / "benchmarks" / "degrade.py").write_text("A")
    (tmp_path / "biometrics" / "imaging.py").write_text("I")
    (tmp_path / "biometrics" / "fingerprint" / "segmentation.py").write_text("S")
    (tmp_path / "biometrics" / "fingerprint" / "kernels.py").write_text("K")
    monkeypatch.setattr(fr, "ROOT", tmp_path)
    first = fr.code_version("new")
    (tmp_path / "biometrics" / "fingerprint" / "kernels.py").write_text("K2")  # comparison only
    assert fr.code_version("new") == first
    (tmp_path / "biometrics" / "fingerprint" / "segmentation.py").write_text("S2")
    assert fr.code_version("new") != first
    old = fr.code_version("old")
    (tmp_path / "benchmarks" / "degrade.py").write_text("B")  # other degraded images: other templates
    assert fr.code_version("old") != old and old.startswith(f"old-{fr.OLD_COMMIT}")


def test_the_probe_protocol_takes_each_pairs_second_template_from_the_probes(tmp_path):
    """``probe`` pairs: the reference (path_a) as enrolled, the probe (path_b) from the degraded capture."""
    from pathlib import Path

    from PIL import Image

    from benchmarks.fingerprint_eval import score_pairs
    from biometrics.fingerprint import extract_fingerprint

    data = Path(__file__).resolve().parent / "data" / "fingerprints"
    names = {"101_1.png": "DB1_B_101_1.png", "101_2.png": "DB1_B_101_2.png", "102_1.png": "DB1_B_102_1.png"}
    with open(tmp_path / "pairs.csv", "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerows([["path_a", "path_b", "same"], ["101_1.png", "101_2.png", 1], ["101_2.png", "102_1.png", 0],
                       ["101_1.png", "102_1.png", 0]])
    templates = {n: extract_fingerprint(np.array(Image.open(data / f).convert("L"))) for n, f in names.items()}
    genuine, impostor = score_pairs(tmp_path, templates)
    assert genuine[0] > max(impostor)
    lost = {**templates, "101_2.png": None}  # the probe capture of 101_2 failed
    g, i = score_pairs(tmp_path, templates, lost)
    assert g[0] == 0.0  # 101_2 as a probe: failed
    assert list(i) == list(impostor)  # 101_2 as a reference: the enrolled template, unchanged
    assert score_pairs(tmp_path, lost)[1][0] == 0.0  # both sides from the failed captures


def test_without_the_probe_protocol_a_degraded_cell_is_scored_once(tmp_path, monkeypatch):
    """``--protocols all fvc``: the degraded pairs are scored once (no clean-reference pass), one row a protocol."""
    (tmp_path / "DB1_B").mkdir()
    write_pairs(tmp_path / "DB1_B")
    entry = {"templates": {}, "refused": [], "seconds": [0.1]}
    monkeypatch.setattr(fr, "templates_for", lambda *args: entry)
    calls = []

    def score(folder, templates, probes=None):
        calls.append(probes)
        return np.array([0.9, 0.8, 0.7]), np.array([0.1] * 12)

    monkeypatch.setattr(fr, "score_pairs", score)
    rows = fr.measure(tmp_path, "DB1_B", "dry", "new", tmp_path / "cache", 1, ("all", "fvc"))
    assert [r["protocol"] for r in rows] == ["all", "fvc"]
    assert calls == [None]
    rows = fr.measure(tmp_path, "DB1_B", "dry", "new", tmp_path / "cache", 1)
    assert [r["protocol"] for r in rows] == ["all", "fvc", "probe"]
    assert len(calls) == 3  # the degraded pairs, then the clean references against the degraded probes
