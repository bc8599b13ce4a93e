"""Rate limits and USD budgets per caller, checked before the call: reserve the worst case, settle after.

    policy (values)  ─▶ Limiter.checks(identity, roles, model, tier) ─▶ [Check, ...]
    Limiter.reserve ─▶ LimitStore.reserve(checks)   all or nothing, atomically (Lua on Redis)
    ... the provider call ...
    Limiter.settle  ─▶ LimitStore.settle(checks, actual - reserved)

Kinds, each per identity and per scope (`all` models together, `model:<id>`, `tier:<tier>`):
- requests and tokens per minute: a bucket of `limit` refilled at `limit` per minute (GCRA: one
  timestamp per key, no per-request log). Tokens reserve the worst case (an upper bound of the prompt
  plus max_tokens) and settle to the real usage.
- concurrent calls: a set of leases that expire at the call's deadline, so a replica that dies holding
  some cannot leak them.
- USD per UTC day and per UTC month, in micro-dollars (integers: no drift): reserve the worst-case price,
  settle to the real cost (cached and reasoning tokens included, as the catalogue prices them).

The store is the only stateful part and the only thing that differs between one replica (in process)
and many (Redis); everything here is the same code path for both.
"""

from __future__ import annotations

import asyncio
import calendar
import enum
import functools
import math
import os
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from server.core.errors import Code, GatewayError, Origin

MICRO = 1_000_000
MINUTE = 60.0
RELEASE_BACKOFF = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Seconds before each try to give back a reservation whose outcome the store did not tell."""
ANONYMOUS = "anonymous"
"""The identity of callers with neither a token nor `a2a-source-agent`: they share one set of limits."""


class LimitKind(enum.StrEnum):
    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_MINUTE = "tokens_per_minute"
    CONCURRENT = "concurrent"
    USD_PER_DAY = "usd_per_day"
    USD_PER_MONTH = "usd_per_month"


BUDGETS = (LimitKind.USD_PER_DAY, LimitKind.USD_PER_MONTH)


@dataclass(slots=True, frozen=True)
class Limits:
    """The limits of one scope; None: unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None

    def merged(self, override: Limits) -> Limits:
        """These limits with every value `override` sets replacing ours."""
        return replace(self, **{k: v for k in LimitKind if (v := getattr(override, k)) is not None})

    def items(self) -> Iterable[tuple[LimitKind, float]]:
        for kind in LimitKind:
            value = getattr(self, kind.value)
            if value is not None:
                yield kind, value


@dataclass(slots=True, frozen=True)
class ScopedLimits:
    """Limits for all models together, and per model or tier."""

    all: Limits
    models: Mapping[str, Limits]
    tiers: Mapping[str, Limits]

    def merged(self, override: ScopedLimits) -> ScopedLimits:
        return ScopedLimits(
            self.all.merged(override.all),
            _merge_maps(self.models, override.models),
            _merge_maps(self.tiers, override.tiers),
        )


def _merge_maps(base: Mapping[str, Limits], override: Mapping[str, Limits]) -> dict[str, Limits]:
    merged = dict(base)
    for scope, limits in override.items():
        merged[scope] = merged.get(scope, Limits()).merged(limits)
    return merged


@dataclass(slots=True, frozen=True)
class Policy:
    """Defaults for every identity, overridden by the caller's roles, then by its own identity."""

    default: ScopedLimits
    roles: Mapping[str, ScopedLimits]
    identities: Mapping[str, ScopedLimits]

    def for_caller(self, identity: str, roles: Sequence[str]) -> ScopedLimits:
        limits = self.default
        for role in roles:  # in the token's order: a later role's value wins
            if role in self.roles:
                limits = limits.merged(self.roles[role])
        if identity in self.identities:
            limits = limits.merged(self.identities[identity])
        return limits

    @property
    def empty(self) -> bool:
        nothing = ScopedLimits(Limits(), {}, {})
        return self.default == nothing and not self.roles and not self.identities


@dataclass(slots=True, frozen=True)
class Check:
    """One counter a call must fit in: its store key, what it counts, its limit and this call's cost."""

    key: str
    kind: LimitKind
    scope: str
    limit: int
    """Requests, tokens or calls; micro-dollars for budgets."""
    cost: int
    expires_at: float
    """Unix seconds: when a budget window ends (its key may go) or a concurrency lease lapses."""


@dataclass(slots=True, frozen=True)
class Refusal:
    index: int
    """Which check did not fit."""
    retry_after: float | None
    """Seconds until it would fit, when the store can tell (buckets)."""


@dataclass(slots=True, frozen=True)
class Standing:
    """Where an identity stands against one check (for GetQuota)."""

    check: Check
    used: int
    reset_at: float | None
    """Unix seconds: when a bucket is full again or a budget window ends; None for concurrency."""


class LimitStore(Protocol):
    """Shared counters. `reserve` is atomic: every check fits and is charged, or nothing is charged."""

    async def reserve(self, checks: Sequence[Check], lease: str, now: float, until: float) -> Refusal | None:
        """Charge every check, or none; mark the lease as reserved until `until` (unix seconds)."""
        ...

    async def settle(
        self, checks: Sequence[Check], deltas: Sequence[int], lease: str, now: float
    ) -> list[int]:
        """Correct each check by `delta` (actual minus reserved) and release the concurrency lease, once:
        only while the lease's reservation is live (reserve marks it, settle consumes the mark; a lease
        that never reserved, or is already settled, changes nothing). Returns what each budget check has
        spent after (0 for the other kinds, and for all when nothing was applied)."""
        ...

    async def standing(self, checks: Sequence[Check], now: float) -> list[int]:
        """What is used of each check now."""
        ...

    async def aclose(self) -> None: ...


class StoreUnavailable(Exception):
    """The store could not be reached or did not answer in time (raised by stores)."""


LIMIT_REASONS = {
    LimitKind.REQUESTS_PER_MINUTE: "RATE_LIMIT_EXCEEDED",
    LimitKind.TOKENS_PER_MINUTE: "TOKEN_RATE_LIMIT_EXCEEDED",
    LimitKind.CONCURRENT: "CONCURRENCY_LIMIT_EXCEEDED",
    LimitKind.USD_PER_DAY: "BUDGET_EXCEEDED",
    LimitKind.USD_PER_MONTH: "BUDGET_EXCEEDED",
}


class CallerLimitReached(GatewayError):
    """A caller's rate limit, concurrency limit or budget has no room for this call."""

    code = Code.RESOURCE_EXHAUSTED
    origin = Origin.CALLER

    def __init__(
        self, identity: str, check: Check, retry_after: float | None, left: int | None = None
    ) -> None:
        self.identity = identity
        self.kind = check.kind
        self.scope = check.scope
        self.limit = _display(check.kind, check.limit)
        never = check.kind is not LimitKind.CONCURRENT and check.cost > check.limit
        self.fits_later = not never
        """False for a call larger than the whole limit: waiting cannot help, so no retry time (nor
        RetryInfo) is given."""
        self.retry_after = None if never else retry_after
        self.reason = LIMIT_REASONS[check.kind]
        super().__init__(
            f"{check.kind.value} for {identity} ({check.scope}) is {self.limit}: "
            + _refusal_reason(check, self.retry_after, left, never)
        )

    @property
    def subject(self) -> str:
        """Who reached the limit (for google.rpc.QuotaFailure): the caller's identity."""
        return self.identity

    @property
    def description(self) -> str:
        """The QuotaFailure violation's description."""
        return f"{self.kind.value} of {self.limit} for scope {self.scope}"

    def metadata(self) -> dict[str, str]:
        meta = {"identity": self.identity, "limit": self.kind.value, "scope": self.scope, "value": self.limit}
        if self.retry_after is not None:
            meta["retry_after_s"] = f"{self.retry_after:.3f}"
        return meta


class LimitsUnavailable(GatewayError):
    """The shared limit store is down and the operator chose to fail closed."""

    reason = "LIMITS_UNAVAILABLE"
    code = Code.UNAVAILABLE

    def __init__(self) -> None:
        self.retry_after = 1.0
        super().__init__(
            "the gateway cannot check rate limits and budgets (its Redis is unreachable); refusing rather "
            "than spending without limits"
        )


def _display(kind: LimitKind, value: int) -> str:
    """A count as it is, micro-dollars as dollars in fixed decimals ($0.00002, never $2e-05)."""
    if kind not in BUDGETS:
        return str(value)
    return "$" + (f"{value / MICRO:.6f}".rstrip("0").rstrip(".") or "0")


_UNITS = {
    LimitKind.REQUESTS_PER_MINUTE: "requests",
    LimitKind.TOKENS_PER_MINUTE: "tokens",
    LimitKind.USD_PER_DAY: "",
    LimitKind.USD_PER_MONTH: "",
}
_WINDOWS = {LimitKind.USD_PER_DAY: "UTC day", LimitKind.USD_PER_MONTH: "UTC month"}


def _refusal_reason(check: Check, retry_after: float | None, left: int | None, never: bool) -> str:
    """Why this call does not fit and when it would: its worst case against what is left (not "used
    up" when it is not), a retry time only when waiting helps, lower max_tokens when it cannot."""
    if check.kind is LimitKind.CONCURRENT:
        return f"all {check.limit} allowed calls are in flight; retry when one of them ends"
    unit = f" {_UNITS[check.kind]}" if _UNITS[check.kind] else ""
    cost = f"{_display(check.kind, check.cost)}{unit}"
    if never:
        return (
            f"this call's worst case ({cost}) is more than the whole limit, so waiting cannot help: "
            "lower max_tokens"
        )
    shown_left = (
        f"the {_display(check.kind, max(0, left))}{unit} left" if left is not None else "what is left"
    )
    if check.kind is LimitKind.REQUESTS_PER_MINUTE:
        why = "no request is left this minute"
    else:
        why = f"this call's worst case ({cost}) is more than {shown_left}"
    if retry_after is None:
        when = "retry later"
    elif check.kind in _WINDOWS:
        when = f"it fits when the {_WINDOWS[check.kind]} ends, in {retry_after:.1f}s"
    else:
        when = f"it fits in {retry_after:.1f}s"
    if check.kind is LimitKind.REQUESTS_PER_MINUTE:
        return f"{why}; {when}"
    return f"{why}; {when}, or sooner with a lower max_tokens"


@dataclass(slots=True)
class Ticket:
    """A reservation: what was charged, to be settled exactly once."""

    identity: str
    checks: tuple[Check, ...]
    lease: str
    settled: bool = False


@dataclass(slots=True, frozen=True)
class Worst:
    """A call's worst case: an upper bound of its tokens, and of its price in micro-dollars."""

    tokens: int
    micro_usd: int


def prompt_token_bound(texts: Iterable[str], messages: int) -> int:
    """An upper bound of the prompt's tokens: every tokenizer the providers use gives at most one token
    per UTF-8 byte, plus a few tokens of framing per message."""
    return sum(len(text.encode()) for text in texts) + 8 * messages + 16


class Limiter:
    def __init__(
        self,
        policy: Policy,
        store: LimitStore,
        *,
        fail_open: bool,
        lease_seconds: float,
        clock: Callable[[], float],
        on_refused: Callable[[CallerLimitReached], None] = lambda error: None,
        on_unavailable: Callable[[BaseException], None] = lambda error: None,
        on_budget: Callable[[str, Check, int], None] = lambda identity, check, spent: None,
    ) -> None:
        self._policy = policy
        self._store = store
        self._fail_open = fail_open
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._on_refused = on_refused
        self._on_unavailable = on_unavailable
        self._on_budget = on_budget
        self._settling: set[asyncio.Task[None]] = set()
        self._releasing: set[asyncio.Task[None]] = set()
        self._open_tickets = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._active = not policy.empty  # the policy is immutable: decided once, read on every call

    @property
    def active(self) -> bool:
        return self._active

    def checks(
        self,
        identity: str,
        roles: Sequence[str],
        targets: Sequence[tuple[str, str]],
        worst: Worst | None,
        now: float,
    ) -> list[Check]:
        """Every counter that applies to this caller and to any of the `(model, tier)` targets (a call's
        model and its fallbacks), with this call's cost in each (cost 0 with `worst` None: GetQuota)."""
        limits = self._policy.for_caller(identity, roles)
        scopes = {"all": limits.all}
        for model, tier in targets:
            if model in limits.models:
                scopes[f"model:{model}"] = limits.models[model]
            if tier in limits.tiers:
                scopes[f"tier:{tier}"] = limits.tiers[tier]
        return self._checks(identity, list(scopes.items()), worst, now)

    def _checks(
        self, identity: str, scopes: Sequence[tuple[str, Limits]], worst: Worst | None, now: float
    ) -> list[Check]:
        day, day_end, month, month_end = _calendar(math.floor(now / 86400))
        windows = {
            LimitKind.REQUESTS_PER_MINUTE: ("", now + MINUTE),
            LimitKind.TOKENS_PER_MINUTE: ("", now + MINUTE),
            LimitKind.CONCURRENT: ("", now + self._lease_seconds),
            LimitKind.USD_PER_DAY: (f":{day}", day_end),
            LimitKind.USD_PER_MONTH: (f":{month}", month_end),
        }
        costs = {
            LimitKind.REQUESTS_PER_MINUTE: 1,
            LimitKind.TOKENS_PER_MINUTE: worst.tokens if worst else 0,
            LimitKind.CONCURRENT: 1,
            LimitKind.USD_PER_DAY: worst.micro_usd if worst else 0,
            LimitKind.USD_PER_MONTH: worst.micro_usd if worst else 0,
        }
        checks = []
        for scope, scoped in scopes:
            for kind, value in scoped.items():
                suffix, expires_at = windows[kind]
                limit = math.floor(value * MICRO) if kind in BUDGETS else int(value)
                key = f"llm:{{{identity}}}:{scope}:{kind.value}{suffix}"
                checks.append(Check(key, kind, scope, limit, costs[kind], expires_at))
        return checks

    async def reserve(
        self, identity: str, roles: Sequence[str], targets: Sequence[tuple[str, str]], worst: Worst
    ) -> Ticket | None:
        """Charge the call's worst case to every limit that applies, or raise CallerLimitReached (or
        LimitsUnavailable when the store is down and the policy fails closed). None: nothing to charge."""
        now = self._clock()
        checks = self.checks(identity, roles, targets, worst, now)
        if not checks:
            return None
        # The lease names the reservation in the store: settling consumes it, so a settlement (or the
        # release of a reservation whose answer was lost) is applied at most once.
        lease = f"llm:{{{identity}}}:lease:{os.urandom(16).hex()}"
        try:
            refusal = await self._store.reserve(checks, lease, now, now + self._lease_seconds)
        except StoreUnavailable as error:
            self._on_unavailable(error)
            self._release(checks, lease)  # the script may have run before its answer was lost
            if self._fail_open:
                return None
            raise LimitsUnavailable() from None
        except asyncio.CancelledError:
            self._release(checks, lease)
            raise
        if refusal is None:
            self._open_tickets += 1
            self._idle.clear()
            return Ticket(identity, tuple(checks), lease)
        check = checks[refusal.index]
        retry_after = refusal.retry_after
        if check.kind in BUDGETS:
            retry_after = max(0.0, check.expires_at - now)
        refused = CallerLimitReached(identity, check, retry_after, await self._left(check, now))
        self._on_refused(refused)
        raise refused

    async def _left(self, check: Check, now: float) -> int | None:
        """What is left of a refused check, for the refusal's message (None when the store cannot say)."""
        try:
            used = await self._store.standing([check], now)
        except StoreUnavailable:
            return None
        return check.limit - used[0]

    async def settle(
        self, ticket: Ticket | None, tokens: int, micro_usd: int, served: Collection[str] = ("all",)
    ) -> None:
        """Correct the reservation to what the call really used and release its concurrency lease.

        `served`: the scopes of the model that served the call (`all`, `model:<id>`, `tier:<t>`); the
        checks of other scopes (a fallback that did not serve) are given back whole. Runs to its end even
        when the caller's task is cancelled meanwhile."""
        if ticket is None or ticket.settled:
            return
        deltas = []
        for check in ticket.checks:
            if check.scope not in served:
                deltas.append(0 if check.kind is LimitKind.CONCURRENT else -check.cost)
            elif check.kind is LimitKind.TOKENS_PER_MINUTE:
                deltas.append(tokens - check.cost)
            elif check.kind in BUDGETS:
                deltas.append(micro_usd - check.cost)
            else:
                deltas.append(0)
        await self._settle_once(ticket, deltas)

    async def refund(self, ticket: Ticket | None) -> None:
        """A call no provider served (refused before it was sent, or answered with an error status, which
        providers do not bill): give back its tokens and dollars; it still counts as a request."""
        if ticket is None or ticket.settled:
            return
        await self._settle_once(
            ticket,
            [
                -c.cost if c.kind is LimitKind.TOKENS_PER_MINUTE or c.kind in BUDGETS else 0
                for c in ticket.checks
            ],
        )

    async def keep(self, ticket: Ticket | None) -> None:
        """A call whose cost cannot be known (cancelled or timed out after it was sent): keep its worst
        case charged, release its concurrency lease."""
        if ticket is None or ticket.settled:
            return
        await self._settle_once(ticket, [0] * len(ticket.checks))

    async def _settle_once(self, ticket: Ticket, deltas: list[int]) -> None:
        ticket.settled = True
        task = self._background(self._settling, self._settle(ticket, deltas))
        await asyncio.shield(task)

    async def _settle(self, ticket: Ticket, deltas: list[int]) -> None:
        try:
            spent = await self._store.settle(ticket.checks, deltas, ticket.lease, self._clock())
        except StoreUnavailable as error:  # the leases lapse by themselves; budgets keep the reservation
            self._on_unavailable(error)
            return
        finally:
            self._open_tickets -= 1
        for check, amount in zip(ticket.checks, spent, strict=True):
            if check.kind in BUDGETS and check.scope == "all":
                self._on_budget(ticket.identity, check, amount)

    def _release(self, checks: Sequence[Check], lease: str) -> None:
        """Undo, in the background, a reservation whose outcome is unknown (a no-op if it never ran)."""

        async def release() -> None:
            for delay in RELEASE_BACKOFF:  # the store was unreachable a moment ago: give it time
                await asyncio.sleep(delay)
                try:
                    await self._store.settle(checks, [-check.cost for check in checks], lease, self._clock())
                except StoreUnavailable as error:
                    self._on_unavailable(error)
                else:
                    return
            # Given up: the charges stay until their windows end (the safe side), the lease mark lapses.

        self._background(self._releasing, release())

    def _background(
        self, tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        """Run `work` to its end whatever happens to the caller's task, kept in `tasks` until done."""
        task = asyncio.ensure_future(work)
        tasks.add(task)
        self._idle.clear()

        def done(finished: asyncio.Task[None]) -> None:
            tasks.discard(finished)
            if not self._open_tickets and not self._settling and not self._releasing:
                self._idle.set()

        task.add_done_callback(done)
        return task

    async def idle(self) -> None:
        """Return once every reservation made so far is settled or given back (tests and shutdown wait on
        this, instead of on time)."""
        await self._idle.wait()

    async def standing(self, identity: str, roles: Sequence[str], model: str, tier: str) -> list[Standing]:
        """Where the caller stands against each limit that applies to `model`."""
        now = self._clock()
        return await self._standing(self.checks(identity, roles, [(model, tier)], None, now), now)

    async def standing_all(
        self, identity: str, roles: Sequence[str], models: Collection[str]
    ) -> list[Standing]:
        """Where the caller stands against every limit configured for it, of the `models` it may use
        (the limits of other models are none of its business)."""
        now = self._clock()
        limits = self._policy.for_caller(identity, roles)
        scopes = [
            ("all", limits.all),
            *((f"model:{m}", scoped) for m, scoped in sorted(limits.models.items()) if m in models),
            *((f"tier:{tier}", scoped) for tier, scoped in sorted(limits.tiers.items())),
        ]
        return await self._standing(self._checks(identity, scopes, None, now), now)

    async def _standing(self, checks: list[Check], now: float) -> list[Standing]:
        if not checks:
            return []
        try:
            used = await self._store.standing(checks, now)
        except StoreUnavailable as error:
            self._on_unavailable(error)
            raise LimitsUnavailable() from None
        return [
            Standing(check, amount, reset_time(check, amount, now))
            for check, amount in zip(checks, used, strict=True)
        ]

    async def aclose(self) -> None:
        """Finish the settlements under way; stop retrying to give back lost reservations (they stay
        charged until their windows end: the safe side)."""
        for task in self._releasing:
            task.cancel()
        await asyncio.gather(*self._settling, *self._releasing, return_exceptions=True)
        await self._store.aclose()


@functools.lru_cache(maxsize=4)
def _calendar(day_number: int) -> tuple[str, float, str, float]:
    """The UTC day `day_number` (days since the epoch): its name and end, its month's name and end.
    The same for every call of a day: worked out once, not with four datetime conversions per call."""
    start = day_number * 86400.0
    return _day(start), _day_end(start), _month(start), _month_end(start)


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def _month(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def _day_end(now: float) -> float:
    return (math.floor(now / 86400) + 1) * 86400.0


def _month_end(now: float) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


def reset_time(check: Check, used: int, now: float) -> float | None:
    """When a check is whole again: a bucket when it has refilled, a budget when its window ends."""
    if check.kind is LimitKind.CONCURRENT:
        return None
    if check.kind in BUDGETS:
        return check.expires_at
    return now + used * MINUTE / check.limit


def micro_usd(usd: float) -> int:
    """Dollars as micro-dollars, rounded up: a cost is never undercounted."""
    return math.ceil(usd * MICRO - 1e-6)


NO_LIMITS = Policy(ScopedLimits(Limits(), {}, {}), {}, {})
