"""Soak: thousands of mixed calls with injected faults and cancellations, then nothing left behind.

`make test` runs a short version; `make soak` sets SOAK_CALLS for a long one. Bounded in count and time,
loopback only.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import MODELS, Emulators
from tests.helpers import active_requests, calls_settled, open_streams_reach, user

SOAK_CALLS = int(os.environ.get("SOAK_CALLS", "600"))
CONCURRENCY = 50
# (weight, directive, expected outcome)
FAULTS = [
    (60, "", "ok"),
    (10, "status=503 times=1", "ok"),  # retried to success
    (5, "status=429 retry_after=0", "RESOURCE_EXHAUSTED"),
    (5, "status=400", "INVALID_ARGUMENT"),
    (5, "drop_after=2", "UNAVAILABLE"),
    (5, "error_after=1", "UNAVAILABLE"),
    (10, "token_delay_ms=50", "cancel"),  # the caller goes away mid-stream
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _one(stub: llm_pb2_grpc.LLMServiceAsyncStub, index: int, rng: random.Random) -> str:
    weights = [w for w, _, _ in FAULTS]
    _, directive, expected = rng.choices(FAULTS, weights)[0]
    model = MODELS[rng.choice(sorted(MODELS))]
    text = f"soak {index} [[emulate: {directive}]]" if directive else f"soak {index}"
    metadata = (("a2a-trace-id", f"soak-{index}"),)
    streamed = expected in ("cancel", "UNAVAILABLE") or rng.random() < 0.5
    try:
        if not streamed:
            response = await stub.Complete(
                llm_pb2.CompleteRequest(model=model, messages=user(text)), metadata=metadata, timeout=20
            )
            assert response.content.startswith("emulator reply: soak")
            return "ok"
        call = stub.Stream(
            llm_pb2.StreamRequest(model=model, messages=user(text)), metadata=metadata, timeout=20
        )
        if expected == "cancel":
            await anext(aiter(call))
            call.cancel()
            return "cancel"
        events = [event async for event in call]
        assert events[-1].WhichOneof("event") == "done"
        return "ok"
    except grpc.aio.AioRpcError as error:
        outcome = error.code().name
    assert outcome == expected, (outcome, expected, directive)
    return outcome


async def test_soak_with_faults_and_cancellations_leaves_nothing_behind(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(
        llm_retry_base_delay=0.001, llm_retry_max_delay=0.002, llm_circuit_failures=1000
    )
    rng = random.Random(7)
    before_tasks = {t for t in asyncio.all_tasks() if not t.done()}
    rss_before = _rss_mb()
    outcomes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        queue = iter(range(SOAK_CALLS))

        async def worker() -> None:
            for index in queue:
                outcomes[await _one(stub, index, rng)] += 1

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), timeout=300)
        # Cancelled calls may still be unwinding: wait for their slots and provider streams to close.
        await calls_settled(app)
        for emulator in (emulators.openai, emulators.anthropic, emulators.gemini):
            await open_streams_reach(emulator, 0)

    assert sum(outcomes.values()) == SOAK_CALLS
    assert outcomes["ok"] > SOAK_CALLS // 2
    for provider in MODELS:
        assert active_requests(app, provider) == 0
    leftover = {t for t in asyncio.all_tasks() if not t.done()} - before_tasks - {asyncio.current_task()}
    infrastructure = ("RequestHandler.start", "AioServer._request_registered_call")
    ours = {t for t in leftover if not any(name in repr(t) for name in infrastructure)}
    if ours:  # tasks of just-ended calls may still be unwinding; one that outlives its call never ends
        _, pending = await asyncio.wait(ours, timeout=10)
        assert not pending, pending
    growth = _rss_mb() - rss_before
    print(f"soak: {SOAK_CALLS} calls {dict(outcomes)}; peak RSS grew {growth:.1f} MB")
    assert growth < 200


async def test_a_thousand_concurrent_streams_on_one_provider_all_complete(
    start_gateway: Callable[..., Any],
) -> None:
    # This one client stands for many callers: the per-caller limit (a quarter of LLM_MAX_IN_FLIGHT by
    # default) is not what is measured here.
    app: App = await start_gateway(llm_max_in_flight_per_caller=1000)

    async def one(stub: llm_pb2_grpc.LLMServiceAsyncStub, index: int) -> str:
        request = llm_pb2.StreamRequest(model=MODELS["openai"], messages=user(f"stream {index}"))
        events = [event async for event in stub.Stream(request, timeout=60)]
        assert events[-1].WhichOneof("event") == "done"
        return "".join(e.delta for e in events[:-1])

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        texts = await asyncio.gather(*(one(stub, i) for i in range(1000)))

    assert texts == [f"emulator reply: stream {i}" for i in range(1000)]
