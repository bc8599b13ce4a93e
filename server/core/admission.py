"""Load shedding: at most N calls in flight per provider, a bounded wait for a slot, then refusal.

Past the limit the caller hears RESOURCE_EXHAUSTED at once (after at most `max_wait`), instead of
joining an unbounded queue that grows memory and latency until everything times out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.core.errors import Overloaded
from server.core.types import ProviderName


class Admission:
    def __init__(self, providers: list[ProviderName], max_in_flight: int, max_wait: float) -> None:
        self._slots = {name: asyncio.Semaphore(max_in_flight) for name in providers}
        self._max_in_flight = max_in_flight
        self._max_wait = max_wait

    @asynccontextmanager
    async def slot(self, provider: ProviderName, seconds_left: float) -> AsyncIterator[None]:
        """Hold one of the provider's slots for the duration of the block."""
        semaphore = self._slots[provider]
        if semaphore.locked():
            wait = min(self._max_wait, max(0.0, seconds_left))
            try:
                await asyncio.wait_for(semaphore.acquire(), wait)
            except TimeoutError:
                raise Overloaded(provider, self._max_in_flight, wait) from None
        else:
            await semaphore.acquire()
        try:
            yield
        finally:
            semaphore.release()
