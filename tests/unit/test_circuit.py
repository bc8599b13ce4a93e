"""CircuitBreaker with a fake clock: what counts against a provider, and the single half-open trial."""

from __future__ import annotations

import asyncio

import pytest

from server.core.circuit import CircuitBreaker
from server.core.errors import (
    CircuitOpen,
    DeadlineExceeded,
    ProviderBadRequest,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)

OPENAI = "openai"
LONG = 30.0
"""Seconds left of a call with an ordinary deadline."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _opened(clock: FakeClock, threshold: int = 2) -> CircuitBreaker:
    breaker = CircuitBreaker([OPENAI], threshold, cooldown=30.0, min_trial_seconds=2.0, clock=clock)
    for _ in range(threshold):
        trial = breaker.before_call(OPENAI, LONG)
        breaker.record(OPENAI, ProviderUnavailable(OPENAI, "503"), trial=trial)
    return breaker


def test_the_circuit_opens_after_consecutive_provider_failures() -> None:
    breaker = _opened(FakeClock())

    with pytest.raises(CircuitOpen):
        breaker.before_call(OPENAI, LONG)


def test_after_the_cooldown_exactly_one_trial_goes_through_even_when_other_calls_end() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 31

    first = breaker.before_call(OPENAI, LONG)
    # A call let through before the circuit opened ends now, cancelled by its caller.
    breaker.record(OPENAI, asyncio.CancelledError(), trial=False)
    with pytest.raises(CircuitOpen):
        breaker.before_call(OPENAI, LONG)

    assert first is True


def test_a_successful_trial_closes_the_circuit() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 31

    breaker.record(OPENAI, None, trial=breaker.before_call(OPENAI, LONG))

    assert breaker.before_call(OPENAI, LONG) is False
    assert not breaker.is_open(OPENAI)


def test_a_failed_trial_opens_the_circuit_for_another_cooldown() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 31

    breaker.record(OPENAI, ProviderTimeout(OPENAI, "slow"), trial=breaker.before_call(OPENAI, LONG))

    with pytest.raises(CircuitOpen) as caught:
        breaker.before_call(OPENAI, LONG)
    assert caught.value.retry_after == pytest.approx(30.0)


@pytest.mark.parametrize(
    "error",
    [
        asyncio.CancelledError(),
        DeadlineExceeded("the caller's deadline"),
        ProviderBadRequest(OPENAI, "bad"),
        ProviderRateLimited(OPENAI, "slow down"),
        ValueError("a header the gateway could not send"),
    ],
    ids=["cancelled", "deadline", "rejected", "rate-limited", "gateway-bug"],
)
def test_a_trial_ended_by_the_caller_or_the_gateway_leaves_the_next_call_as_the_trial(
    error: BaseException,
) -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 31

    breaker.record(OPENAI, error, trial=breaker.before_call(OPENAI, LONG))

    assert breaker.before_call(OPENAI, LONG) is True


def test_server_errors_count_whatever_the_callers_deadline() -> None:
    breaker = CircuitBreaker([OPENAI], 2, cooldown=30.0, min_trial_seconds=2.0, clock=FakeClock())

    for _ in range(2):
        trial = breaker.before_call(OPENAI, LONG)
        breaker.record(OPENAI, ProviderUnavailable(OPENAI, "503"), trial=trial, caller_deadline=True)

    assert breaker.is_open(OPENAI)


def test_timeouts_of_the_callers_own_short_deadline_never_open_the_circuit() -> None:
    breaker = CircuitBreaker([OPENAI], 2, cooldown=30.0, min_trial_seconds=2.0, clock=FakeClock())

    for _ in range(10):
        trial = breaker.before_call(OPENAI, LONG)
        breaker.record(OPENAI, ProviderTimeout(OPENAI, "slow"), trial=trial, caller_deadline=True)

    assert breaker.before_call(OPENAI, LONG) is False


def test_the_trial_goes_only_to_a_call_with_time_enough_to_finish() -> None:
    clock = FakeClock()
    breaker = _opened(clock)
    clock.now += 31

    with pytest.raises(CircuitOpen):
        breaker.before_call(OPENAI, 0.05)  # a caller flooding 50 ms deadlines cannot take the trial

    assert breaker.before_call(OPENAI, LONG) is True
