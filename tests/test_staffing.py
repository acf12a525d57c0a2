"""Erlang C staffing against values computed by hand from the textbook formula."""

from __future__ import annotations

import math

import pytest

from portal.staffing import erlang_b, erlang_c, lanes_needed, plan_hour, wait_exceeds, wait_percentile


def test_erlang_c_matches_hand_computed_values() -> None:
    # C(c, a) = [a^c/c! * c/(c-a)] / [sum_{k<c} a^k/k! + a^c/c! * c/(c-a)]
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # M/M/1: P(wait) = rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)  # 1 / (1 + 1 + 1)
    assert erlang_c(3, 2.0) == pytest.approx(4 / 9)  # 4 / (5 + 4)
    assert erlang_c(3, 1.0) == pytest.approx(0.25 / 2.75)
    assert erlang_c(4, 1.0) == pytest.approx((1 / 18) / (2.5 + 1 / 6 + 1 / 18))


def test_erlang_b_and_unstable_queue() -> None:
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.5 / 2.5)
    assert erlang_c(2, 2.0) == 1.0  # a >= c: everybody waits, the queue grows without bound
    assert erlang_c(3, 0.0) == 0.0


def test_wait_tail_and_percentile() -> None:
    # two lanes, one arrival a minute, one minute of service: a = 1 Erlang
    assert wait_exceeds(2, 1 / 60, 60.0, 60.0) == pytest.approx(math.exp(-1) / 3)
    assert wait_percentile(2, 1 / 60, 60.0) == pytest.approx(60 * math.log((1 / 3) / 0.05))
    assert wait_percentile(4, 1 / 60, 60.0) == 0.0  # P(wait) = 0.0204 <= 5 %
    assert wait_percentile(1, 1 / 30, 60.0) == math.inf


def test_lanes_needed_is_the_smallest_meeting_the_target() -> None:
    assert lanes_needed(1 / 60, 60.0, 0.0) == 4  # C(3,1) = 0.091 > 5 %, C(4,1) = 0.020
    assert lanes_needed(1 / 60, 60.0, 60.0) == 3  # c=2: e^-1/3 = 0.123; c=3: 0.091 e^-2 = 0.012
    assert lanes_needed(0.0, 60.0, 60.0) == 0
    with pytest.raises(ValueError):
        lanes_needed(1.0, 0.0, 60.0)


def test_plan_hour_compares_with_open_lanes() -> None:
    plan = plan_hour(10, arrivals=60, processing_mean_ms=1000.0, lanes_open=1, handling_s=59.0,
                     target_wait_s=60.0)
    assert plan.service_s == pytest.approx(60.0)
    assert plan.lanes_needed == 3
    assert plan.verdict == "short"
    assert plan.p95_wait_open_s == math.inf  # one lane at a = 1 Erlang is unstable
    idle = plan_hour(3, arrivals=0, processing_mean_ms=None, lanes_open=0, handling_s=20.0, target_wait_s=60.0)
    assert idle.verdict == "idle" and idle.lanes_needed == 0
