"""Retries for provider calls, in one place: backoff with jitter, the provider's Retry-After honoured,
and the caller's deadline bounding everything (never sleep past it).

The SDKs' own retries are off (`max_retries=0`): they cannot see the gRPC deadline, so they would sleep
past it, and they would retry a stream the gateway has already started relaying.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from server.core.errors import DeadlineExceeded, ProviderError

T = TypeVar("T")


@dataclass(slots=True, frozen=True)
class RetryPolicy:
    """Values from configuration (LLM_MAX_RETRIES, LLM_RETRY_BASE_DELAY, LLM_RETRY_MAX_DELAY)."""

    max_retries: int
    base_delay: float
    max_delay: float

    def backoff(self, retry: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random, capped at max_delay."""
        ceiling = min(self.max_delay, self.base_delay * 2.0**retry)
        # Jitter, not cryptography.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # nosec B311


async def call_with_retries(
    attempt: Callable[[float], Awaitable[T]],
    policy: RetryPolicy,
    deadline: float,
    on_retry: Callable[[ProviderError, float], None],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `attempt(seconds_left)` until it succeeds, retrying retryable provider errors.

    `deadline` is in event-loop time. Gives up with the provider's own error (so a rate limit still
    reaches the caller as RESOURCE_EXHAUSTED with the provider's retry delay) when the retries are used
    up or the next wait would overrun the deadline, and with DeadlineExceeded when the time runs out.
    `sleep` waits between attempts (tests pass a fake that records the delays and returns at once).
    """
    loop = asyncio.get_running_loop()
    retries = 0
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline passed before the provider answered")
        try:
            async with asyncio.timeout_at(deadline):
                return await attempt(remaining)
        except TimeoutError:
            raise DeadlineExceeded("the deadline passed before the provider answered") from None
        except ProviderError as error:
            if not error.retryable or retries >= policy.max_retries:
                raise
            delay = error.retry_after if error.retry_after is not None else policy.backoff(retries)
            if loop.time() + delay >= deadline:
                raise
            on_retry(error, delay)
            await sleep(delay)
            retries += 1
