"""Upstream capacity: a model served by several deployments (provider instances, weighted), the
providers' own rate limits on each (requests, tokens, input and output tokens per minute: configured,
and learned from the providers' response headers), shared by every replica through a `CapacityStore`,
and a fair queue when every deployment of a model is at its limit.

    call ──▶ acquire(model, need, caller, give_up_at)
               │  one atomic store operation: among the deployments not cooling down whose every limit
               │  fits the call's need, charge the one with the most headroom (times its weight)
               ├─ granted ─────────────────────────────▶ Lease (its deployment serves the call)
               └─ none fits ─▶ the model's fair queue: FIFO per caller; across callers, the one served
                               least in the last minute first (round robin among equals),
                               at most `max_queued_per_caller` waiting per caller; one pump per model
                               retries the head when capacity returns (the earliest reset, or a local
                               settle/refund pokes it); a waiter whose give-up time comes before the
                               earliest reset is refused at once
                               ──▶ UpstreamCapacity (RESOURCE_EXHAUSTED, RetryInfo = earliest reset)

The limits are counted as the providers describe theirs, a bucket refilled continuously over a minute
(GCRA: the bucket's "theoretical arrival time" per limit), so reservations expire by themselves: a
replica that dies mid-call never holds capacity longer than the minute it would have refilled in.

A model with no deployments configured is not governed: `plan_for` is one dict lookup and the call goes
its old way (the default configuration costs nothing else per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from server.core.errors import Code, GatewayError
from server.core.limits import StoreUnavailable
from server.core.ports import CapacityStore, Clock, Offer
from server.core.types import ProviderName, Usage

WINDOW_S = 60.0
"""The providers' limits are per minute (OpenAI RPM/TPM, Anthropic RPM/ITPM/OTPM, Gemini RPM/TPM)."""

COOLDOWN_S = 1.0
"""A deployment's cooldown after a 429 that says no Retry-After (OpenAI's 429s may not: their message
names the wait, "Please try again in 644ms", which is not parsed)."""

MAX_TRACKED_CALLERS = 10_000
"""Callers whose recent grants the queues remember (the least recently served are forgotten first)."""

LEARNED_FOR_S = 540.0
"""Limits learned from headers are trusted this long without an answer renewing them (the stores keep
them 600 s); then the next call probes again."""

POLL_S = 1.0
"""The longest a queued call waits before the pump looks at the store again: other replicas' refunds
free capacity before the reset the store predicted."""


class Dim(enum.IntEnum):
    """The limits a deployment may have, in the order offers carry them."""

    REQUESTS = 0
    TOKENS = 1
    INPUT_TOKENS = 2
    OUTPUT_TOKENS = 3


DIMS = tuple(Dim)


@dataclass(slots=True, frozen=True)
class Rates:
    """A deployment's limits per minute; None: not configured (then learned from headers, if sent)."""

    requests: int | None = None
    tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    def as_tuple(self) -> tuple[int, int, int, int]:
        """Per Dim; 0 where not configured (the store then uses a learned limit, or none)."""
        return (self.requests or 0, self.tokens or 0, self.input_tokens or 0, self.output_tokens or 0)


@dataclass(slots=True, frozen=True)
class Deployment:
    provider: ProviderName
    weight: float = 1.0
    rates: Rates = field(default_factory=Rates)


@dataclass(slots=True, frozen=True)
class Need:
    """What one call reserves: one request, an upper bound of its prompt and its max_tokens."""

    input_tokens: int
    output_tokens: int

    def costs(self) -> tuple[int, int, int, int]:
        return (1, self.input_tokens + self.output_tokens, self.input_tokens, self.output_tokens)


@dataclass(slots=True, frozen=True)
class Learned:
    """What a provider's rate-limit headers said of one limit (server/providers/ratelimits.py)."""

    dim: Dim
    limit: int
    remaining: int


class UpstreamCapacity(GatewayError):
    """Every deployment of the model is at its providers' rate limit, and the call's deadline ends before
    capacity returns (or the caller already has its cap of calls queued). Nothing was sent."""

    reason = "UPSTREAM_CAPACITY"
    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, model: str, retry_after: float, why: str) -> None:
        self.model = model
        self.retry_after = max(retry_after, 0.001)
        super().__init__(
            f"every deployment of {model} is at its provider rate limit: {why}; "
            f"capacity returns in {self.retry_after:.3g}s"
        )

    def metadata(self) -> dict[str, str]:
        return {"model": self.model, "retry_after_s": f"{self.retry_after:.3f}"}


class CapacityUnavailable(GatewayError):
    """The shared capacity store (Redis) is unreachable: no replica can know what the others sent, so
    calls to governed models are refused (fail closed) rather than risk the providers' 429s."""

    reason = "CAPACITY_UNAVAILABLE"
    code = Code.UNAVAILABLE

    def __init__(self, model: str) -> None:
        self.model = model
        self.retry_after = 1.0
        super().__init__(
            f"the gateway cannot count {model}'s upstream rate limits (its Redis is unreachable); "
            "refusing rather than sending past them"
        )

    def metadata(self) -> dict[str, str]:
        return {"model": self.model}


@dataclass(slots=True)
class Lease:
    """Capacity held on one deployment for one call."""

    model: str
    deployment: Deployment
    offer: Offer
    costs: tuple[int, int, int, int]
    settled: bool = False
    granted_at: float = 0.0
    """Event-loop time the capacity was granted: a call's own duration is measured from it."""
    probe: bool = False
    """Sent to learn the deployment's limits from the provider's headers (none configured or known)."""

    @property
    def provider(self) -> ProviderName:
        return self.deployment.provider


@dataclass(slots=True, frozen=True)
class DeploymentState:
    """Where one deployment stands (CheckHealth, metrics)."""

    model: str
    provider: ProviderName
    limits: tuple[int, int, int, int]
    """Per Dim; 0: none known."""
    used: tuple[int, int, int, int]
    cooling_for: float
    """Seconds until a cooldown after a 429 ends (0: none)."""


class CapacityObserver:
    """What capacity reports (metrics implement it; the default does nothing)."""

    def queued(self, model: str, length: int) -> None: ...

    def waited(self, model: str, seconds: float, outcome: str) -> None: ...

    def refused(self, model: str) -> None: ...

    def rate_limited(self, model: str, provider: ProviderName) -> None: ...

    def deployment(self, state: DeploymentState) -> None: ...

    def known(self, model: str, provider: ProviderName) -> None:
        """A configured deployment, at start (label children are made up front)."""


@dataclass(slots=True, eq=False)
class _Waiter:
    caller: str
    need: Need
    give_up_at: float
    """Event-loop time after which the call cannot be served in its deadline."""
    future: asyncio.Future[Lease]


class _Queue:
    """One model's waiting calls: FIFO per caller, callers served round robin."""

    __slots__ = ("callers", "poke", "pump")

    def __init__(self) -> None:
        self.callers: OrderedDict[str, deque[_Waiter]] = OrderedDict()
        self.poke = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self.callers.values())

    def head(self, share: Callable[[str], float]) -> _Waiter | None:
        """The oldest call of the caller served least lately (`share`); among equals, the round's order
        (a caller just served goes to the back)."""
        if not self.callers:
            return None
        return self.callers[min(self.callers, key=share)][0]

    def served(self, waiter: _Waiter) -> None:
        """Take `waiter` off; its caller goes to the back of the round."""
        waiting = self.callers.pop(waiter.caller)
        waiting.remove(waiter)
        if waiting:
            self.callers[waiter.caller] = waiting

    def remove(self, waiter: _Waiter) -> None:
        waiting = self.callers.get(waiter.caller)
        if waiting is not None and waiter in waiting:
            waiting.remove(waiter)
            if not waiting:
                del self.callers[waiter.caller]


class Capacity:
    def __init__(
        self,
        plans: Mapping[str, Sequence[Deployment]],
        store: CapacityStore,
        *,
        max_queued_per_caller: int = 100,
        observer: CapacityObserver | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._plans = {model: tuple(deployments) for model, deployments in plans.items() if deployments}
        self._offers = {
            model: tuple(
                Offer(f"llm:cap:{{{model}}}:{d.provider}", d.weight, d.rates.as_tuple()) for d in deployments
            )
            for model, deployments in self._plans.items()
        }
        for model, deployments in self._plans.items():
            for deployment in deployments:
                (observer or CapacityObserver()).known(model, deployment.provider)
        self._store = store
        self._max_queued = max_queued_per_caller
        self._observer = observer or CapacityObserver()
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        self._queue_changed = asyncio.Event()
        self._known: dict[str, float] = {
            offer.key: float("inf")
            for offers in self._offers.values()
            for offer in offers
            if any(offer.limits)
        }
        """Offer key → when its limits were last learned (inf: configured). Others are probed first."""
        self._probing: set[str] = set()
        """Offers with a probe in flight: no other call of this replica goes there before it answers."""
        self._shares: dict[tuple[str, str], tuple[float, float]] = {}
        """(model, caller) → (grants, decaying over the window; when last updated): who was served lately,
        so that a queue serves first the callers that got least (bounded: the oldest entries go)."""
        self._need_s: dict[str, float] = {}
        """Per model: a moving average of how long a served call took (the time a queued call needs)."""

    def plan_for(self, model: str) -> tuple[Deployment, ...] | None:
        """The model's deployments when its capacity is governed, else None (one dict lookup)."""
        return self._plans.get(model)

    async def acquire(self, model: str, need: Need, caller: str, deadline: float) -> Lease:
        """Capacity on one of the model's deployments for a call that must end by `deadline` (event-loop
        time): at once when there is some and nobody is queued, else in the model's fair queue."""
        loop = asyncio.get_running_loop()
        give_up_at = deadline - self._need_s.get(model, 0.0)
        queue = self._queues.get(model)
        if queue is None or not queue.callers:
            lease, retry_after = await self._take(model, need)
            if lease is not None:
                self._observer.waited(model, 0.0, "served")
                self._served(model, caller)
                return lease
            if loop.time() + retry_after > give_up_at:
                self._observer.refused(model)
                self._observer.waited(model, 0.0, "refused")
                raise UpstreamCapacity(model, retry_after, "the call's deadline ends before then")
        queue = self._queues.setdefault(model, _Queue())
        waiting = queue.callers.get(caller)
        if waiting is not None and len(waiting) >= self._max_queued:
            self._observer.refused(model)
            raise UpstreamCapacity(
                model, POLL_S, f"the caller already has {self._max_queued} calls queued for it"
            )
        waiter = _Waiter(caller, need, give_up_at, loop.create_future())
        queue.callers.setdefault(caller, deque()).append(waiter)
        self._observer.queued(model, len(queue))
        self._queue_changed.set()
        if queue.pump is None or queue.pump.done():
            queue.pump = asyncio.create_task(self._pump(model, queue))
        queue.poke.set()
        started = loop.time()
        try:
            lease = await waiter.future
        except UpstreamCapacity:
            self._observer.waited(model, loop.time() - started, "refused")
            raise
        except BaseException:
            queue.remove(waiter)
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                await self.release(waiter.future.result())  # granted as the caller gave up
            raise
        finally:
            self._observer.queued(model, len(queue))
        self._observer.waited(model, loop.time() - started, "served")
        return lease

    def _share(self, model: str, caller: str) -> float:
        score, at = self._shares.get((model, caller), (0.0, 0.0))
        return score * math.exp(-max(self._clock() - at, 0.0) / WINDOW_S) if score else 0.0

    def _served(self, model: str, caller: str) -> None:
        key = (model, caller)
        score = self._share(model, caller) + 1
        self._shares.pop(key, None)
        self._shares[key] = (score, self._clock())
        if len(self._shares) > MAX_TRACKED_CALLERS:
            del self._shares[next(iter(self._shares))]

    async def _pump(self, model: str, queue: _Queue) -> None:
        """Serve the model's queue head by head while anyone waits."""
        loop = asyncio.get_running_loop()
        while (waiter := queue.head(lambda caller: self._share(model, caller))) is not None:
            if waiter.future.done():  # cancelled by its caller
                queue.remove(waiter)
                continue
            try:
                lease, retry_after = await self._take(model, waiter.need)
            except Exception as error:  # the store failed (CapacityUnavailable): every waiter hears it
                for waiting in list(queue.callers.values()):
                    for each in waiting:
                        if not each.future.done():
                            each.future.set_exception(error)
                queue.callers.clear()
                queue.pump = None
                return
            if lease is not None:
                queue.served(waiter)
                self._served(model, waiter.caller)
                if waiter.future.done():
                    await self.release(lease)
                else:
                    waiter.future.set_result(lease)
                continue
            now = loop.time()
            self._refuse_hopeless(model, queue, now + retry_after, retry_after)
            queue.poke.clear()
            try:
                async with asyncio.timeout(min(retry_after, POLL_S)):
                    await queue.poke.wait()
            except TimeoutError:
                pass
        queue.pump = None

    def _refuse_hopeless(self, model: str, queue: _Queue, returns_at: float, retry_after: float) -> None:
        """Refuse now every waiter that must give up before capacity returns."""
        for waiting in list(queue.callers.values()):
            for waiter in list(waiting):
                if waiter.give_up_at < returns_at:
                    queue.remove(waiter)
                    if not waiter.future.done():
                        self._observer.refused(model)
                        waiter.future.set_exception(
                            UpstreamCapacity(model, retry_after, "the call's deadline ends before then")
                        )

    async def _take(self, model: str, need: Need) -> tuple[Lease | None, float]:
        """A deployment with room, charged. A deployment whose limits are neither configured nor known
        takes one call at a time (per replica) until an answer's headers say them: so the calls a
        provider can refuse before its headers are learned are at most one per replica (a provider that
        sends none is then known to have none the gateway can learn)."""
        costs = need.costs()
        offers = self._offers[model]
        now = self._clock()
        eligible = [
            i
            for i, offer in enumerate(offers)
            if self._known_at(offer, now) or offer.key not in self._probing
        ]
        if not eligible:
            return None, POLL_S
        try:
            index, retry_after = await self._store.take([offers[i] for i in eligible], costs, now)
        except StoreUnavailable:
            raise CapacityUnavailable(model) from None
        if index is None:
            return None, retry_after
        chosen = eligible[index]
        offer = offers[chosen]
        probe = not self._known_at(offer, now)
        if probe:
            self._probing.add(offer.key)
        granted = asyncio.get_running_loop().time()
        return Lease(model, self._plans[model][chosen], offer, costs, granted_at=granted, probe=probe), 0.0

    def _known_at(self, offer: Offer, now: float) -> bool:
        return now - self._known.get(offer.key, -LEARNED_FOR_S) < LEARNED_FOR_S

    def _probe_ended(self, lease: Lease, *, learned: bool) -> None:
        if lease.probe:
            lease.probe = False
            self._probing.discard(lease.offer.key)
            if learned:
                self._known[lease.offer.key] = self._clock()
            if queue := self._queues.get(lease.model):
                queue.poke.set()

    async def settle(self, lease: Lease, usage: Usage) -> None:
        """The call was served: correct the reservation to what the provider counted."""
        if lease.settled:
            return
        lease.settled = True
        seconds = asyncio.get_running_loop().time() - lease.granted_at
        used = (1, usage.total_tokens, usage.prompt_tokens, usage.completion_tokens)
        previous = self._need_s.get(lease.model)
        self._need_s[lease.model] = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        await self._adjust(lease, tuple(u - c for u, c in zip(used, lease.costs, strict=True)))

    async def release(self, lease: Lease, *, sent: bool = False) -> None:
        """The call was not served by this deployment: all back when nothing was sent; when a request was
        sent (and failed), its request stays counted and its tokens come back but for the prompt."""
        if lease.settled:
            return
        lease.settled = True
        self._probe_ended(lease, learned=False)
        output = lease.costs[Dim.OUTPUT_TOKENS]
        back = [0, -output, 0, -output] if sent else [-cost for cost in lease.costs]
        await self._adjust(lease, back)

    async def _adjust(self, lease: Lease, deltas: Sequence[int]) -> None:
        if any(deltas):
            with contextlib.suppress(StoreUnavailable):  # the bucket refills within the minute anyway
                await self._store.adjust(lease.offer, deltas, self._clock())
            if any(delta < 0 for delta in deltas) and (queue := self._queues.get(lease.model)):
                queue.poke.set()

    async def rate_limited(self, lease: Lease, retry_after: float | None) -> None:
        """The provider answered 429: the deployment cools down until its reset (the provider's
        Retry-After, else the full window), and no queued call is sent to it until then."""
        self._observer.rate_limited(lease.model, lease.provider)
        with contextlib.suppress(StoreUnavailable):
            await self._store.cool(lease.offer, self._clock() + (retry_after or COOLDOWN_S), self._clock())

    async def learn(self, lease: Lease, learned: Sequence[Learned]) -> None:
        """Bring the shared count up to what the provider says is used (never down: other replicas' calls
        in flight are not in the provider's count yet)."""
        now = self._clock()
        if learned and self._known.get(lease.offer.key) != float("inf"):
            self._known[lease.offer.key] = now  # each answer's headers renew what was learned
        self._probe_ended(lease, learned=True)
        with contextlib.suppress(StoreUnavailable):
            for each in learned:
                await self._store.learn(lease.offer, int(each.dim), each.limit, each.remaining, now)

    async def states(self) -> list[DeploymentState]:
        """Every deployment's limits and use (and the metrics' gauges set to them); none when the store
        cannot be reached."""
        now = self._clock()
        states = []
        for model, offers in self._offers.items():
            for deployment, offer in zip(self._plans[model], offers, strict=True):
                try:
                    limits, used, cooling = await self._store.usage(offer, now)
                except StoreUnavailable:
                    return []
                state = DeploymentState(model, deployment.provider, limits, used, cooling)
                self._observer.deployment(state)
                states.append(state)
        return states

    def queue_lengths(self) -> dict[str, int]:
        return {model: len(queue) for model, queue in self._queues.items()}

    async def queued(self, model: str, count: int) -> None:
        """Return once `count` calls wait for the model (tests and benchmarks wait on this, not a timer)."""
        while (queue := self._queues.get(model)) is None or len(queue) < count:
            self._queue_changed.clear()
            await self._queue_changed.wait()

    async def aclose(self) -> None:
        for queue in self._queues.values():
            if queue.pump is not None:
                queue.pump.cancel()
        await self._store.aclose()
