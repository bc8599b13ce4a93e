"""Retries of provider calls (`call_with_retries`) with a fake sleep: which errors are retried, how long
each wait is (Retry-After first, else jittered backoff), and that no wait runs past the caller's deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from server.core.errors import (
    DeadlineExceeded,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
    QuotaExhausted,
)
from server.core.retry import RetryPolicy, call_with_retries

OPENAI = "openai"
POLICY = RetryPolicy(max_retries=3, base_delay=0.5, max_delay=8.0)
FAR = 1000.0
"""Seconds to a deadline no test reaches."""


class FakeSleep:
    """Records each wait and returns at once: the test reads the delays instead of timing them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Script:
    """An attempt that raises the scripted errors in turn, then answers "ok"."""

    def __init__(self, *errors: ProviderError) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.seconds_left: list[float] = []

    async def __call__(self, seconds_left: float) -> str:
        self.calls += 1
        self.seconds_left.append(seconds_left)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def _run(
    attempt: Callable[[float], Awaitable[str]],
    sleep: FakeSleep,
    *,
    seconds: float = FAR,
    policy: RetryPolicy = POLICY,
    retries: list[tuple[ProviderError, float]] | None = None,
) -> str:
    deadline = asyncio.get_running_loop().time() + seconds
    seen = retries if retries is not None else []
    return await call_with_retries(
        attempt, policy, deadline, lambda error, delay: seen.append((error, delay)), sleep=sleep
    )


async def test_a_rate_limit_with_retry_after_waits_exactly_what_the_provider_asked() -> None:
    sleep = FakeSleep()
    retries: list[tuple[ProviderError, float]] = []
    limited = ProviderRateLimited(OPENAI, "slow down", status_code=429, retry_after=7.0)
    attempt = Script(limited)

    result = await _run(attempt, sleep, retries=retries)

    assert result == "ok"
    assert attempt.calls == 2
    assert sleep.delays == [7.0]
    assert retries == [(limited, 7.0)]


async def test_without_retry_after_each_wait_is_jittered_exponential_backoff_within_its_bounds() -> None:
    sleep = FakeSleep()
    attempt = Script(*(ProviderUnavailable(OPENAI, "503") for _ in range(3)))

    await _run(attempt, sleep)

    ceilings = [0.5, 1.0, 2.0]
    assert len(sleep.delays) == 3
    for delay, ceiling in zip(sleep.delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


async def test_retries_stop_after_max_retries_with_the_providers_own_error() -> None:
    sleep = FakeSleep()
    errors = [ProviderUnavailable(OPENAI, f"503 #{n}") for n in range(5)]
    attempt = Script(*errors)

    with pytest.raises(ProviderUnavailable) as caught:
        await _run(attempt, sleep, policy=RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.01))

    assert caught.value is errors[2]
    assert attempt.calls == 3
    assert len(sleep.delays) == 2


@pytest.mark.parametrize(
    "error",
    [
        ProviderBadRequest(OPENAI, "bad", status_code=400),
        QuotaExhausted(OPENAI, "billing", status_code=429),
    ],
    ids=["rejected", "quota"],
)
async def test_errors_that_are_not_retryable_are_raised_at_once(error: ProviderError) -> None:
    sleep = FakeSleep()
    attempt = Script(error)

    with pytest.raises(type(error)):
        await _run(attempt, sleep)

    assert attempt.calls == 1
    assert sleep.delays == []


async def test_a_retry_after_past_the_deadline_gives_up_at_once_with_the_rate_limit() -> None:
    sleep = FakeSleep()
    attempt = Script(ProviderRateLimited(OPENAI, "slow down", retry_after=60.0))

    with pytest.raises(ProviderRateLimited) as caught:
        await _run(attempt, sleep, seconds=30.0)

    assert caught.value.retry_after == 60.0  # the caller learns how long to wait
    assert attempt.calls == 1
    assert sleep.delays == []


async def test_each_attempt_is_told_the_time_left_before_the_deadline() -> None:
    attempt = Script(ProviderUnavailable(OPENAI, "503"))

    await _run(attempt, FakeSleep(), seconds=50.0)

    assert len(attempt.seconds_left) == 2
    assert all(0 < left <= 50.0 for left in attempt.seconds_left)


async def test_an_attempt_still_running_at_the_deadline_is_cut_with_deadline_exceeded() -> None:
    never = asyncio.Event()

    async def hangs(_: float) -> str:
        await never.wait()
        return "unreachable"

    with pytest.raises(DeadlineExceeded):
        await _run(hangs, FakeSleep(), seconds=0.01)


async def test_a_deadline_already_passed_makes_no_attempt() -> None:
    attempt = Script()

    with pytest.raises(DeadlineExceeded):
        await _run(attempt, FakeSleep(), seconds=-1.0)

    assert attempt.calls == 0
