"""Several face frames of one traveller combined before comparison: hand-made template cases."""

from __future__ import annotations

import numpy as np
import pytest

from biometrics.multiframe import (
    DEFAULT_RULE,
    RULES,
    probe_distance,
    probe_templates,
    weighted_mean_template,
)


def _unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float64)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("rule", RULES)
def test_one_frame_is_compared_as_it_is(rule: str) -> None:
    t = np.array([0.3, -0.1, 0.5], np.float32)
    out = probe_templates([t], [40.0], rule)
    assert out.shape == (1, 3)
    assert np.allclose(out[0], t)


def test_best_keeps_every_frame_and_the_nearest_distance_counts() -> None:
    ref = np.array([1.0, 0.0, 0.0])
    near, far = np.array([0.9, 0.1, 0.0]), np.array([0.0, 1.0, 0.0])
    assert probe_templates([near, far], None, "best").shape == (2, 3)
    assert probe_distance([far, near], None, ref, "best") == pytest.approx(np.linalg.norm(near - ref), abs=1e-6)


def test_mean_of_a_frame_and_itself_is_that_frame() -> None:
    t = np.array([0.2, 0.4, -0.1])
    assert np.allclose(probe_templates([t, t], None, "mean")[0], t, atol=1e-6)


def test_mean_keeps_the_frames_length_and_points_between_them() -> None:
    a, b = _unit(1, 0, 0), _unit(0, 1, 0)
    mean = weighted_mean_template([a, b])
    assert np.linalg.norm(mean) == pytest.approx(1.0)  # not pulled towards the origin (length 0.707)
    assert np.allclose(mean, _unit(1, 1, 0))


def test_mean_of_two_noisy_frames_is_nearer_the_reference_than_either() -> None:
    ref = _unit(1, 0, 0)
    a, b = _unit(1, 0.3, 0), _unit(1, -0.3, 0)  # the same face, noise in opposite directions
    d_mean = probe_distance([a, b], None, ref, "mean")
    assert d_mean < 1e-6 < probe_distance([a, b], None, ref, "best")


def test_quality_weights_pull_towards_the_better_frame() -> None:
    good, poor = _unit(1, 0.1, 0), _unit(0, 1, 0)
    weighted = probe_templates([good, poor], [100.0, 0.0], "quality")[0]
    plain = probe_templates([good, poor], None, "mean")[0]
    assert np.linalg.norm(weighted - good) < np.linalg.norm(plain - good)
    # equal qualities are the plain mean
    assert np.allclose(probe_templates([good, poor], [50.0, 50.0], "quality")[0], plain, atol=1e-6)


def test_bad_input_is_refused_with_a_clear_error() -> None:
    t = np.zeros((2, 3))
    with pytest.raises(ValueError, match="unknown multi-frame rule"):
        probe_templates(t, None, "median")
    with pytest.raises(ValueError, match="one quality per frame"):
        probe_templates(np.eye(3)[:2], [50.0], "quality")
    with pytest.raises(ValueError, match="non-empty"):
        probe_templates(np.zeros((0, 3)), None, "mean")
    with pytest.raises(ValueError, match="weights"):
        weighted_mean_template(np.eye(3)[:2], [0.0, 0.0])
    assert DEFAULT_RULE in RULES
