"""Upstream capacity's parts on their own: the header parsers, the stores' buckets, the fair queue."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from server.core.capacity import Capacity, Deployment, Dim, Learned, Need, Rates, UpstreamCapacity
from server.core.ports import Offer
from server.core.types import Usage
from server.limits.capacity_memory import MemoryCapacityStore
from server.providers.ratelimits import duration_seconds, learned_from, reset_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_openai_headers_are_learned() -> None:
    # Values as OpenAI sends them (community.openai.com/t/.../1268905).
    headers = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-limit-tokens": "160000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-remaining-tokens": "159976",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-reset-tokens": "9ms",
    }

    assert learned_from(headers) == [
        Learned(Dim.REQUESTS, 5000, 4999),
        Learned(Dim.TOKENS, 160000, 159976),
    ]


def test_anthropic_headers_are_learned_input_and_output_apart() -> None:
    # A recorded real response (cran/tidyllm
    # tests/testthat/claude/api.anthropic.com/v1/messages-e050b5-POST.R).
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "80000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "16000",
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "96000",
    }

    assert learned_from(headers) == [
        Learned(Dim.REQUESTS, 1000, 999),
        Learned(Dim.TOKENS, 96000, 96000),
        Learned(Dim.INPUT_TOKENS, 80000, 80000),
        Learned(Dim.OUTPUT_TOKENS, 16000, 16000),
    ]


def test_unreadable_or_partial_headers_teach_nothing() -> None:
    assert learned_from({"x-ratelimit-limit-requests": "5000"}) == []
    assert learned_from({"x-ratelimit-limit-requests": "many", "x-ratelimit-remaining-requests": "1"}) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3s", 3723.0), ("0.5s", 0.5), ("12ms", 0.012)],
)
def test_openai_reset_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


def test_anthropic_resets_are_rfc_3339_times() -> None:
    now = datetime.datetime(2025, 8, 21, 12, 40, 0, tzinfo=datetime.UTC)

    assert reset_seconds("2025-08-21T12:40:59Z", now) == pytest.approx(59)
    assert reset_seconds("later", now) is None


async def test_a_bucket_refills_over_the_minute_and_learns_the_providers_count() -> None:
    store, clock = MemoryCapacityStore(), Clock()
    offer = Offer("k", 1.0, (2, 0, 0, 0))

    assert (await store.take([offer], (1, 0, 0, 0), clock.now))[0] == 0
    assert (await store.take([offer], (1, 0, 0, 0), clock.now))[0] == 0
    index, wait = await store.take([offer], (1, 0, 0, 0), clock.now)
    clock.now += 30
    after_half = await store.take([offer], (1, 0, 0, 0), clock.now)

    assert index is None
    assert wait == pytest.approx(30)  # one request's worth refills in 60 s / 2
    assert after_half == (0, 0.0)
    other = Offer("other", 1.0, (0, 0, 0, 0))
    await store.learn(other, int(Dim.TOKENS), 1000, 0, clock.now)  # the provider says: all used
    assert (await store.take([other], (0, 1, 0, 0), clock.now))[0] is None


def _capacity(limit: int, clock: Clock, per_caller: int = 10) -> Capacity:
    plans = {"m": [Deployment("p", rates=Rates(tokens=limit))]}
    return Capacity(plans, MemoryCapacityStore(), max_queued_per_caller=per_caller, clock=clock)


async def test_the_queue_serves_first_the_caller_served_least_lately_and_each_in_order() -> None:
    clock = Clock()
    capacity = _capacity(100, clock)
    first = await capacity.acquire("m", Need(50, 50), "heavy", asyncio.get_running_loop().time() + 600)
    served: list[str] = []

    async def wait(caller: str, name: str) -> None:
        lease = await capacity.acquire("m", Need(50, 50), caller, asyncio.get_running_loop().time() + 600)
        served.append(name)
        await capacity.settle(lease, Usage())  # uses nothing: the next one fits

    tasks = [asyncio.create_task(wait("heavy", f"h{i}")) for i in range(3)]
    await capacity.queued("m", 3)
    tasks.append(asyncio.create_task(wait("light", "l0")))
    await capacity.queued("m", 4)
    await capacity.release(first)
    await asyncio.gather(*tasks)

    # heavy already holds a grant: light's first call goes before heavy's queued ones, each FIFO.
    assert served == ["l0", "h0", "h1", "h2"]


async def test_callers_served_alike_take_turns() -> None:
    capacity = _capacity(100, Clock())
    loop = asyncio.get_running_loop()
    first = await capacity.acquire("m", Need(50, 50), "x", loop.time() + 600)
    served: list[str] = []

    async def wait(caller: str, name: str) -> None:
        lease = await capacity.acquire("m", Need(50, 50), caller, loop.time() + 600)
        served.append(name)
        await capacity.settle(lease, Usage())

    tasks = []
    for index, name in enumerate(("a0", "a1", "b0", "b1")):
        tasks.append(asyncio.create_task(wait(name[0], name)))
        await capacity.queued("m", index + 1)
    await capacity.release(first)
    await asyncio.gather(*tasks)

    assert served == ["a0", "b0", "a1", "b1"]


async def test_a_caller_past_its_queue_cap_and_a_hopeless_wait_are_refused_at_once() -> None:
    clock = Clock()
    capacity = _capacity(100, clock, per_caller=1)
    loop = asyncio.get_running_loop()
    await capacity.acquire("m", Need(50, 50), "a", loop.time() + 600)
    queued = asyncio.create_task(capacity.acquire("m", Need(50, 50), "a", loop.time() + 600))
    await capacity.queued("m", 1)

    with pytest.raises(UpstreamCapacity) as over_cap:
        await capacity.acquire("m", Need(50, 50), "a", loop.time() + 600)
    with pytest.raises(UpstreamCapacity) as hopeless:
        await capacity.acquire("m", Need(50, 50), "b", loop.time() + 5)  # a minute to refill

    assert "queued" in over_cap.value.message
    assert hopeless.value.retry_after > 5
    queued.cancel()
    await capacity.aclose()


async def test_a_caller_that_gives_up_while_queued_holds_nothing() -> None:
    capacity = _capacity(100, Clock())
    loop = asyncio.get_running_loop()
    first = await capacity.acquire("m", Need(50, 50), "a", loop.time() + 600)
    gone = asyncio.create_task(capacity.acquire("m", Need(50, 50), "b", loop.time() + 600))
    await capacity.queued("m", 1)
    after = asyncio.create_task(capacity.acquire("m", Need(50, 50), "c", loop.time() + 600))
    await capacity.queued("m", 2)

    gone.cancel()
    await capacity.release(first)
    lease = await after

    assert lease.provider == "p"
    assert capacity.queue_lengths()["m"] == 0
    await capacity.aclose()
