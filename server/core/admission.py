"""Load shedding and fairness: at most N calls in flight per provider, a bounded wait for a slot, then
refusal; and at most M calls in flight per caller, refused at once past it.

Past the provider limit the caller hears RESOURCE_EXHAUSTED at once (after at most `max_wait`),
instead of joining an unbounded queue that grows memory and latency until everything times out.

The caller limit keeps one identity from taking every slot. The identity is the RequestContext's
source agent (the token's subject when authentication is on); callers with none share one bucket.
A caller at its limit is refused without waiting: only its own calls ending can make room, and it
knows better than the gateway which of them to wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.core.errors import CallerOverLimit, Overloaded
from server.core.types import ProviderName


class Admission:
    def __init__(
        self, providers: list[ProviderName], max_in_flight: int, max_wait: float, max_per_caller: int
    ) -> None:
        self._slots = {name: asyncio.Semaphore(max_in_flight) for name in providers}
        self._max_in_flight = max_in_flight
        self._max_wait = max_wait
        self._max_per_caller = max_per_caller
        self._per_caller: dict[str, int] = {}
        """Calls in flight by caller; a caller with none has no entry, so the map stays small."""
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def slot(self, provider: ProviderName, caller: str, seconds_left: float) -> AsyncIterator[None]:
        """Hold one of the caller's slots and one of the provider's for the duration of the block."""
        held = self._per_caller.get(caller, 0)
        if held >= self._max_per_caller:
            raise CallerOverLimit(caller, self._max_per_caller)
        self._per_caller[caller] = held + 1
        self._idle.clear()
        try:
            async with self._provider_slot(provider, seconds_left):
                yield
        finally:
            if self._per_caller[caller] == 1:
                del self._per_caller[caller]
            else:
                self._per_caller[caller] -= 1
            if not self._per_caller:
                self._idle.set()

    async def idle(self) -> None:
        """Return once no call holds a slot (at once when none does): tests and a draining server wait
        on this instead of polling."""
        await self._idle.wait()

    def in_flight(self, caller: str) -> int:
        """The caller's calls in flight now."""
        return self._per_caller.get(caller, 0)

    @asynccontextmanager
    async def _provider_slot(self, provider: ProviderName, seconds_left: float) -> AsyncIterator[None]:
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
