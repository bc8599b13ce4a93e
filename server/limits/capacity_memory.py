"""The in-process capacity store (one replica, no Redis): the same buckets as capacity_redis.py in dicts.
Atomic because nothing here awaits. See server/core/capacity.py for what the counts mean."""

from __future__ import annotations

from collections.abc import Sequence

from server.core.capacity import WINDOW_S
from server.core.ports import Offer

LEARNED_TTL_S = 600.0
"""A limit learned from headers is forgotten after this long without being heard again."""

_EPSILON = 1e-6


class MemoryCapacityStore:
    def __init__(self) -> None:
        self._tats: dict[tuple[str, int], float] = {}
        """(offer key, dim) → when that bucket is full again (GCRA's theoretical arrival time)."""
        self._learned: dict[tuple[str, int], tuple[int, float]] = {}
        """(offer key, dim) → (limit the provider's headers said, when that is forgotten)."""
        self._cool: dict[str, float] = {}

    def _limit(self, offer: Offer, dim: int, now: float) -> int:
        if offer.limits[dim]:
            return offer.limits[dim]
        learned = self._learned.get((offer.key, dim))
        return learned[0] if learned is not None and learned[1] > now else 0

    def _fit(self, offer: Offer, costs: Sequence[int], now: float) -> tuple[float, float]:
        """(headroom left after charging, 0..1; seconds until it would fit, 0 when it fits now)."""
        wait = max(self._cool.get(offer.key, 0.0) - now, 0.0)
        headroom = 1.0
        for dim, cost in enumerate(costs):
            limit = self._limit(offer, dim, now)
            if not limit:
                continue
            after = max(self._tats.get((offer.key, dim), now), now) + cost * WINDOW_S / limit
            if after - now > WINDOW_S + _EPSILON:
                wait = max(wait, after - now - WINDOW_S)
            else:
                headroom = min(headroom, 1 - (after - now) / WINDOW_S)
        return headroom, wait

    async def take(
        self, offers: Sequence[Offer], costs: tuple[int, int, int, int], now: float
    ) -> tuple[int | None, float]:
        best: int | None = None
        best_score = -1.0
        earliest: float | None = None
        for index, offer in enumerate(offers):
            headroom, wait = self._fit(offer, costs, now)
            if wait > 0:
                earliest = wait if earliest is None else min(earliest, wait)
            elif headroom * offer.weight > best_score:
                best, best_score = index, headroom * offer.weight
        if best is None:
            return None, earliest if earliest is not None else WINDOW_S
        await self.adjust(offers[best], costs, now)
        return best, 0.0

    async def adjust(self, offer: Offer, deltas: Sequence[int], now: float) -> None:
        for dim, delta in enumerate(deltas):
            limit = self._limit(offer, dim, now)
            if not limit or not delta:
                continue
            key = (offer.key, dim)
            base = self._tats.get(key, now)
            if delta > 0:
                base = max(base, now)
            tat = base + delta * WINDOW_S / limit
            if tat > now:
                self._tats[key] = tat
            else:
                self._tats.pop(key, None)

    async def learn(self, offer: Offer, dim: int, limit: int, remaining: int, now: float) -> None:
        if limit <= 0:
            return
        self._learned[(offer.key, dim)] = (limit, now + LEARNED_TTL_S)
        used = min(max(limit - remaining, 0), limit) / limit
        key = (offer.key, dim)
        self._tats[key] = max(self._tats.get(key, now), now + used * WINDOW_S)

    async def cool(self, offer: Offer, until: float, now: float) -> None:
        self._cool[offer.key] = max(self._cool.get(offer.key, 0.0), until)

    async def usage(
        self, offer: Offer, now: float
    ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], float]:
        limits = tuple(self._limit(offer, dim, now) for dim in range(4))
        used = tuple(
            round(max(self._tats.get((offer.key, dim), now) - now, 0.0) * limit / WINDOW_S) if limit else 0
            for dim, limit in enumerate(limits)
        )
        return limits, used, max(self._cool.get(offer.key, 0.0) - now, 0.0)  # type: ignore[return-value]

    async def aclose(self) -> None:
        return None
