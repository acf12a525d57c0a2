"""The fingerprint evaluation's sensor cuts: ZFM window, 4 grey bits, placement shifts kept inside the image."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.fingerprint_eval import SENSOR_SIZE, SHIFTED_RUNS, SHIFTS, error_rates, sensor_cut, shift_of


def gradient_image(h: int = 374, w: int = 388) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((x + 2 * y) % 256).astype(np.uint8)


def test_a_cut_is_the_sensor_window_with_sixteen_grey_levels():
    grey = gradient_image()
    cut = sensor_cut(grey, 500)
    w, h = SENSOR_SIZE
    assert cut.shape == (h, w)
    assert len(np.unique(cut)) <= 16
    sy, sx = (374 - h) // 2, (388 - w) // 2
    assert np.array_equal(cut, (grey[sy:sy + h, sx:sx + w] >> 4) * 17)


def test_a_shifted_cut_moves_the_window_and_stays_inside_the_image():
    grey = gradient_image()
    w, h = SENSOR_SIZE
    sy, sx = (374 - h) // 2, (388 - w) // 2
    moved = sensor_cut(grey, 500, (40, -30))
    assert np.array_equal(moved, (grey[sy - 30:sy - 30 + h, sx + 40:sx + 40 + w] >> 4) * 17)
    far = sensor_cut(grey, 500, (1000, 1000))  # clamped to the bottom-right corner, no white padding
    assert np.array_equal(far, (grey[374 - h:, 388 - w:] >> 4) * 17)


def test_the_two_images_of_a_pair_meet_in_several_relative_placements():
    # consecutive images (e.g. impressions 1 and 2 of a finger) never share a placement in a run, and across
    # the runs each image takes a different one
    for run in range(SHIFTED_RUNS):
        assert all(shift_of(i, run) != shift_of(i + 1, run) for i in range(10))
    assert len({shift_of(3, run) for run in range(SHIFTED_RUNS)}) == SHIFTED_RUNS
    assert {shift_of(i, 0) for i in range(10)} == set(SHIFTS)  # ten images of a run use every placement


def test_error_rates_on_a_hand_computed_case():
    genuine = np.array([0.9, 0.8, 0.7, 0.2])
    impostor = np.array([0.1, 0.3, 0.25, 0.05, 0.0])
    rates = error_rates(genuine, impostor)
    # a comparison matches when score >= threshold; at 0.25 FNMR is 1/4, FMR 2/5 (FNMR <= FMR, sum 0.65); at
    # 0.3 FNMR is 1/4 (0.2 fails), FMR 1/5 (0.3 passes) (FNMR >= FMR, sum 0.45): FVC2000 takes 0.3, [0.2, 0.25]
    assert rates["eer"] == pytest.approx(0.225)
    # no impostor passes from 0.7 up; 0.2 still fails there, so FNMR at FMR 0 (and at FMR <= 1%) is 1/4
    assert rates["zero_fmr"] == pytest.approx(0.25)
    assert rates["fmr100"] == pytest.approx(0.25)
    assert rates["n_genuine"] == 4 and rates["n_impostor"] == 5


def test_the_eer_is_fvc2000s_not_the_nearest_crossing():
    # at t = 0.5 FNMR 1/5, FMR 8/20 (sum 0.6); at t = 0.6 FNMR 2/5, FMR 7/20 (sum 0.75, but the closer pair):
    # FVC2000 takes the smaller sum, [0.2, 0.4] -> 0.3; averaging the closest crossing would say 0.375
    genuine = np.array([0.9, 0.8, 0.7, 0.5, 0.3])
    impostor = np.array([0.6] * 7 + [0.5] + [0.1] * 12)
    rates = error_rates(genuine, impostor)
    assert (rates["eer_low"], rates["eer_high"]) == (pytest.approx(0.2), pytest.approx(0.4))
    assert rates["eer"] == pytest.approx(0.3)


def test_det_plots_draw_one_figure_per_protocol(tmp_path):
    from benchmarks.fingerprint_eval import det_plots

    rng = np.random.default_rng(3)
    results, raw = [], {}
    for name in ("DB1_B", "DB2_B"):
        for protocol in ("full", "shifted"):
            genuine, impostor = rng.normal(0.3, 0.1, 40), rng.normal(0.0, 0.05, 400)
            rates = error_rates(genuine, impostor)
            rates.update({"set": name, "protocol": protocol})
            results.append(rates)
            raw[f"{name}/{protocol}"] = {"genuine": genuine.tolist(), "impostor": impostor.tolist()}
    written = det_plots(results, raw, tmp_path / "det")
    assert sorted(p.name for p in written) == ["det-full.png", "det-shifted.png"]
    assert all(p.stat().st_size > 10_000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
