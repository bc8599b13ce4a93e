"""Caller cancellation reaches the provider; no stream or task outlives its RPC."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App, ConfigError, build_app
from server.core.errors import DeadlineExceeded
from server.core.types import Delta, RequestContext, Role, StreamSummary
from server.core.validation import DraftMessage, DraftRequest
from tests.conftest import MODELS, Emulators, make_settings
from tests.helpers import active_requests, calls_settled, open_streams_reach, user

LONG = " ".join(f"w{i}" for i in range(200))
"""A reply of 200 tokens: at 200 ms a token, a stream that ends by itself takes 40 s, far past the test's
guard, so a stream seen closed was closed by the gateway, not by its own end."""


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_cancelled_streams_close_their_provider_streams(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    emulator = emulators.by_provider(provider)
    request = llm_pb2.StreamRequest(
        model=MODELS[provider], messages=user(f"{LONG} [[emulate: token_delay_ms=200]]")
    )
    calls = [stub.Stream(request, timeout=60) for _ in range(100)]
    for call in calls:
        first = await anext(aiter(call))
        assert first.delta
    assert emulator.open_streams == 100

    for call in calls:
        call.cancel()
    await open_streams_reach(emulator, 0, timeout=20)

    assert len(emulator.stream_closed_at) == 100


async def test_deadline_closes_the_provider_stream(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    request = llm_pb2.StreamRequest(
        model=MODELS["openai"], messages=user(f"{LONG} [[emulate: token_delay_ms=200]]")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Stream(request, timeout=0.5):
            pass
    await open_streams_reach(emulators.openai, 0, timeout=20)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(emulators.openai.stream_closed_at) == 1


async def test_no_task_outlives_its_rpc(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    before = {t for t in asyncio.all_tasks() if not t.done()}
    request = llm_pb2.StreamRequest(
        model=MODELS["anthropic"], messages=user("a b c [[emulate: token_delay_ms=100]]")
    )
    calls = [stub.Stream(request, timeout=30) for _ in range(20)]
    for call in calls[:10]:
        await anext(aiter(call))
        call.cancel()
    for call in calls[10:]:
        assert [e async for e in call][-1].WhichOneof("event") == "done"

    # Not ours: the emulators' keep-alive connection handlers (the outside world) and grpc's own
    # wait for the next call.
    infrastructure = ("RequestHandler.start", "AioServer._request_registered_call")
    leftover = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    ours = {t for t in leftover if not any(name in repr(t) for name in infrastructure)}
    # A task of a just-ended RPC may still be unwinding: wait for those to end (a task that outlives its
    # RPC never does, and is still pending after the guard).
    if ours:
        _, pending = await asyncio.wait(ours, timeout=10)
        assert not pending, pending


FALLBACKS = {"claude-haiku-4-5": ["gpt-5.4-mini"]}


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_configured_failover_serves_from_the_fallback_and_says_so(
    start_gateway: Callable[..., Any], emulators: Emulators, streamed: bool
) -> None:
    app: App = await start_gateway(llm_fallbacks=FALLBACKS, llm_max_retries=1, metrics_port=0)
    text = "hi [[emulate: status=529 on=anthropic]]"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        if streamed:
            events = [
                e
                async for e in stub.Stream(
                    llm_pb2.StreamRequest(model="claude-haiku-4-5", messages=user(text)), timeout=10
                )
            ]
            served = (events[-1].done.model, events[-1].done.provider)
            content = "".join(e.delta for e in events)
        else:
            response = await stub.Complete(
                llm_pb2.CompleteRequest(model="claude-haiku-4-5", messages=user(text)), timeout=10
            )
            served, content = (response.model, response.provider), response.content

    assert served == ("gpt-5.4-mini", "openai")
    assert content == "emulator reply: hi"
    assert len(emulators.completions("anthropic")) == 2  # the first try and one retry
    assert len(emulators.completions("openai")) == 1
    assert app.metrics.failovers.labels("claude-haiku-4-5", "gpt-5.4-mini")._value.get() == 1


async def test_time_spent_on_a_model_before_failover_is_not_counted_as_gateway_overhead(
    start_gateway: Callable[..., Any],
) -> None:
    app: App = await start_gateway(llm_fallbacks=FALLBACKS, llm_max_retries=1)
    # The first model's provider asks for a 1 s wait before its retry, then fails again: the gateway
    # spends over a second on it, all of it the provider's, none of it overhead.
    text = "hi [[emulate: status=529 retry_after=1 on=anthropic]]"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(model="claude-haiku-4-5", messages=user(text)), timeout=30
        )

    sample = app.metrics.registry.get_sample_value
    assert sample("llm_gateway_overhead_seconds_count", {"method": "Complete"}) == 1
    overhead = sample("llm_gateway_overhead_seconds_sum", {"method": "Complete"})
    assert overhead is not None
    assert overhead < 0.5  # the provider's 1 s wait is not in it


async def test_caller_errors_do_not_fail_over(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(llm_fallbacks=FALLBACKS)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                llm_pb2.CompleteRequest(
                    model="claude-haiku-4-5",
                    messages=user("hi [[emulate: status=400 on=anthropic]]"),
                ),
                timeout=10,
            )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert emulators.completions("openai") == []


async def test_a_stream_that_fails_after_its_first_token_does_not_fail_over(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(llm_fallbacks=FALLBACKS)
    deltas = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for event in llm_pb2_grpc.LLMServiceStub(channel).Stream(
                llm_pb2.StreamRequest(
                    model="claude-haiku-4-5", messages=user("a b c [[emulate: drop_after=2]]")
                ),
                timeout=10,
            ):
                deltas.append(event.delta)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "".join(deltas) == "emulator reply: "
    assert emulators.completions("openai") == []


def test_fallback_outside_the_allowlist_stops_the_start(emulators: Emulators) -> None:
    settings = make_settings(emulators, llm_fallbacks={"gpt-5.4": ["gpt-4o"]})

    with pytest.raises(ConfigError, match="LLM_FALLBACKS names 'gpt-4o'"):
        build_app(settings, port=0)


# Three words of 300 kB: each delta is one 300 kB message, and the caller's channel keeps HTTP/2's 64 kB
# stream window (no BDP growth), so the gateway's write of the first one blocks until the caller reads.
_LARGE_REPLY = " ".join(["x" * 300_000] * 3)
_SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 65536)]


async def _start_unread_streams(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, count: int
) -> list[grpc.aio.UnaryStreamCall[llm_pb2.StreamRequest, llm_pb2.StreamResponse]]:
    """`count` streams with a large reply, started with no caller deadline and never read; returned
    once the provider has received each (so each holds an admission slot)."""
    request = llm_pb2.StreamRequest(model=MODELS["openai"], messages=user(_LARGE_REPLY))
    calls = [stub.Stream(request) for _ in range(count)]
    await asyncio.wait_for(emulators.openai.wait_for_requests(count), 30)
    return calls


async def test_streams_whose_callers_stop_reading_give_back_their_slots_at_the_deadline(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(
        llm_max_in_flight=2,
        llm_max_in_flight_per_caller=10,  # one caller here: the provider's limit is the one that bites
        llm_queue_timeout=0.05,
        llm_request_timeout=1.0,
        metrics_port=0,
    )
    assert app.metrics_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=_SMALL_WINDOW) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        unread = await _start_unread_streams(stub, emulators, 2)

        await calls_settled(app)
        in_flight = active_requests(app, "openai")
        third = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")), timeout=10
        )
        outcomes = []
        for call in unread:  # reading at last: what was written before the deadline, then its status
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
            outcomes.append((caught.value.code(), caught.value.details()))

    assert in_flight == 0
    assert third.content == "emulator reply: hi"
    assert (
        outcomes
        == [(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while the caller was not reading")] * 2
    )
    assert emulators.openai.open_streams == 0


async def test_cancelled_streams_whose_callers_stopped_reading_give_back_their_slots(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(
        llm_max_in_flight=2, llm_max_in_flight_per_caller=10, llm_queue_timeout=0.05, metrics_port=0
    )
    assert app.metrics_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=_SMALL_WINDOW) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        unread = await _start_unread_streams(stub, emulators, 2)

        for call in unread:
            call.cancel()
        await calls_settled(app)
        in_flight = active_requests(app, "openai")
        third = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")), timeout=10
        )

    assert in_flight == 0
    assert third.content == "emulator reply: hi"
    assert emulators.openai.open_streams == 0


async def test_the_gateway_ends_a_stream_whose_send_never_returns_at_the_deadline(
    start_gateway: Callable[..., Any],
) -> None:
    app: App = await start_gateway(
        llm_max_in_flight=1, llm_max_in_flight_per_caller=1, llm_request_timeout=0.5
    )
    draft = DraftRequest(model=MODELS["openai"], messages=[DraftMessage(Role.USER, "a b c")])
    ctx = RequestContext(trace_id="stalled")
    never = asyncio.Event()

    async def stalled(_event: Delta | StreamSummary) -> None:
        await never.wait()  # a caller whose flow-control window never opens

    received: list[Delta | StreamSummary] = []

    async def reading(event: Delta | StreamSummary) -> None:
        received.append(event)

    with pytest.raises(DeadlineExceeded, match="the caller was not reading"):
        await app.gateway.stream(draft, ctx, None, stalled)
    await app.gateway.stream(draft, ctx, None, reading)  # both limits are 1: the slot came back

    assert isinstance(received[-1], StreamSummary)
