"""The `--workers` supervisor's restart policy: a crash loop backs off, a worker that served a while is
restarted at once (the supervisor itself is tested by killing real workers in test_startup.py)."""

from __future__ import annotations

from server.workers import RestartPolicy

POLICY = RestartPolicy(first_delay=0.5, max_delay=30.0, stable_after=30.0)


def test_a_worker_that_served_a_while_is_restarted_at_once() -> None:
    deaths = POLICY.quick_deaths(before=4, lived=3600.0)

    assert deaths == 0
    assert POLICY.delay(deaths) == 0.0


def test_a_crash_loop_waits_twice_as_long_each_time_up_to_the_maximum() -> None:
    deaths, delays = 0, []
    for _ in range(10):
        deaths = POLICY.quick_deaths(deaths, lived=0.2)
        delays.append(POLICY.delay(deaths))

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]


def test_a_worker_that_then_stays_up_resets_the_backoff() -> None:
    deaths = POLICY.quick_deaths(POLICY.quick_deaths(0, lived=0.1), lived=0.1)

    assert POLICY.delay(POLICY.quick_deaths(deaths, lived=31.0)) == 0.0
