"""The in-process limit store: one replica's counters in dicts. Atomic because nothing in `reserve`
awaits: the event loop runs it to its end before any other call's reservation."""

from __future__ import annotations

from collections.abc import Sequence

from server.core.limits import MINUTE, Check, LimitKind, Refusal

_EPSILON = 1e-6
_PURGE_EVERY = 4096


class MemoryLimitStore:
    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        """Bucket key → theoretical arrival time: when the bucket is full again."""
        self._leases: dict[str, dict[str, float]] = {}
        """Concurrency key → lease → expiry."""
        self._spent: dict[str, tuple[int, float]] = {}
        """Budget key → (micro-dollars spent or reserved, when the window ends)."""
        self._operations = 0

    async def reserve(self, checks: Sequence[Check], lease: str, now: float) -> Refusal | None:
        self._purge(now)
        for index, check in enumerate(checks):
            if check.kind in (LimitKind.REQUESTS_PER_MINUTE, LimitKind.TOKENS_PER_MINUTE):
                tat = max(self._tats.get(check.key, now), now) + check.cost * MINUTE / check.limit
                if tat - now > MINUTE + _EPSILON:
                    return Refusal(index, tat - now - MINUTE)
            elif check.kind is LimitKind.CONCURRENT:
                if len(self._live_leases(check.key, now)) + 1 > check.limit:
                    return Refusal(index, None)
            elif self._spent.get(check.key, (0, 0.0))[0] + check.cost > check.limit:
                return Refusal(index, None)
        for check in checks:
            if check.kind in (LimitKind.REQUESTS_PER_MINUTE, LimitKind.TOKENS_PER_MINUTE):
                tat = max(self._tats.get(check.key, now), now)
                self._tats[check.key] = tat + check.cost * MINUTE / check.limit
            elif check.kind is LimitKind.CONCURRENT:
                self._leases.setdefault(check.key, {})[lease] = check.expires_at
            else:
                spent, _ = self._spent.get(check.key, (0, check.expires_at))
                self._spent[check.key] = (spent + check.cost, check.expires_at)
        return None

    async def settle(
        self, checks: Sequence[Check], deltas: Sequence[int], lease: str, now: float
    ) -> list[int]:
        spent_after = []
        for check, delta in zip(checks, deltas, strict=True):
            spent_after.append(0)
            if check.kind in (LimitKind.REQUESTS_PER_MINUTE, LimitKind.TOKENS_PER_MINUTE):
                if delta:
                    tat = max(self._tats.get(check.key, now), now if delta > 0 else 0.0)
                    self._tats[check.key] = tat + delta * MINUTE / check.limit
            elif check.kind is LimitKind.CONCURRENT:
                self._leases.get(check.key, {}).pop(lease, None)
            else:
                spent, expires = self._spent.get(check.key, (0, check.expires_at))
                self._spent[check.key] = (spent + delta, expires)
                spent_after[-1] = spent + delta
        return spent_after

    async def standing(self, checks: Sequence[Check], now: float) -> list[int]:
        used = []
        for check in checks:
            if check.kind in (LimitKind.REQUESTS_PER_MINUTE, LimitKind.TOKENS_PER_MINUTE):
                ahead = max(self._tats.get(check.key, now) - now, 0.0)
                used.append(round(ahead * check.limit / MINUTE))
            elif check.kind is LimitKind.CONCURRENT:
                used.append(len(self._live_leases(check.key, now)))
            else:
                used.append(self._spent.get(check.key, (0, 0.0))[0])
        return used

    async def aclose(self) -> None:
        return None

    def _live_leases(self, key: str, now: float) -> dict[str, float]:
        leases = self._leases.get(key, {})
        for lease in [lease for lease, expiry in leases.items() if expiry <= now]:
            del leases[lease]  # a lease whose call never settled (it cannot happen in process, but cheap)
        return leases

    def _purge(self, now: float) -> None:
        """Forget full buckets and ended budget windows now and then, so memory follows the live callers."""
        self._operations += 1
        if self._operations % _PURGE_EVERY:
            return
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        self._spent = {key: value for key, value in self._spent.items() if value[1] > now}
        self._leases = {key: leases for key, leases in self._leases.items() if leases}
