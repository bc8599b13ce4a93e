"""`make dashboard` evaluates the Grafana panels' PromQL itself (tests/bench/dashboard.py): its rate and
histogram_quantile agree with Prometheus' definitions on hand-made scrapes."""

from __future__ import annotations

import math

import pytest

from tests.bench.dashboard import WINDOW, Query, Scrape, quantile

BUCKETS = [(0.1, 2.0), (0.2, 6.0), (0.4, 10.0), (math.inf, 10.0)]


def test_quantile_interpolates_inside_the_bucket_holding_the_rank() -> None:
    assert quantile(0.5, BUCKETS) == pytest.approx(0.1 + 0.1 * (5 - 2) / 4)  # rank 5 in (0.1, 0.2]
    assert quantile(0.1, BUCKETS) == pytest.approx(0.05)  # the first bucket starts at 0
    assert quantile(0.9, BUCKETS) == pytest.approx(0.2 + 0.2 * (9 - 6) / 4)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound_and_no_calls_is_no_value() -> None:
    assert quantile(0.99, [(0.1, 1.0), (math.inf, 4.0)]) == 0.1
    assert math.isnan(quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


def test_rate_and_quantile_by_label_over_a_window_of_scrapes() -> None:
    def at(t: float, calls: float, fast: float, total: float) -> Scrape:
        return Scrape(
            t,
            {
                ("llm_calls_total", (("code", "OK"),)): calls,
                ("h_bucket", (("le", "0.1"), ("method", "Complete"))): fast,
                ("h_bucket", (("le", "+Inf"), ("method", "Complete"))): total,
            },
        )

    w = WINDOW
    query = Query([at(0, 0, 0, 0), at(w / 2, w, 10, 10), at(w, 3 * w, 10, 30), at(2 * w, 5 * w, 10, 50)])

    rates = query.rate_by("llm_calls_total", ["code"])[("OK",)]
    assert math.isnan(rates[0])
    assert rates[1:] == pytest.approx([2.0, 3.0, 2.0])  # the window reaches back to scrapes 0, 0 and 2
    p50 = query.quantile_by(0.5, "h", ["method"])[("Complete",)]
    assert p50[1] == pytest.approx(0.05)  # all ten calls under 0.1
    assert p50[3] == 0.1  # in the last window every call was slower than the last finite bound
