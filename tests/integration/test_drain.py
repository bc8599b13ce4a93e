"""The drain notice: once the gateway starts stopping, the health service answers NOT_SERVING over a
connection that is already open (not "connection refused") while calls in flight run to their end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.helpers import details_of, user

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_answers_not_serving_over_an_open_channel_while_a_stream_is_live(
    start_gateway: Callable[..., Any],
) -> None:
    app: App = await start_gateway()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub, health = llm_pb2_grpc.LLMServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        stream = aiter(
            stub.Stream(
                llm_pb2.StreamRequest(
                    model="gpt-5.4-mini", messages=user("one two three [[emulate: token_delay_ms=300]]")
                )
            )
        )
        first = await anext(stream)
        watching = health.Watch(health_pb2.HealthCheckRequest(service=""))
        watch = aiter(watching)
        assert (await anext(watch)).status == SERVING

        stopping = asyncio.create_task(app.stop(grace=30, notice=30))
        changed = await anext(watch)  # the drain has started: no waiting on time
        live = app.drain.active
        checked = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        checked_service = await health.Check(
            health_pb2.HealthCheckRequest(service="llm.v1.LLMService"), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Complete(llm_pb2.CompleteRequest(messages=user("too late")), timeout=5)
        rest = [event async for event in stream]
        watching.cancel()  # an open Watch is a call in flight too: grpc's stop would wait for it
        await stopping

    assert changed.status == NOT_SERVING
    assert live == 1
    assert (checked.status, checked_service.status) == (NOT_SERVING, NOT_SERVING)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert details_of(refused.value).reason == "SERVER_DRAINING"
    text = first.delta + "".join(e.delta for e in rest if e.WhichOneof("event") == "delta")
    assert text == "emulator reply: one two three"
    assert rest[-1].WhichOneof("event") == "done"


async def test_the_listener_closes_as_soon_as_no_call_is_in_flight(start_gateway: Callable[..., Any]) -> None:
    app: App = await start_gateway()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        await llm_pb2_grpc.LLMServiceStub(channel).Complete(llm_pb2.CompleteRequest(messages=user("hi")))

    waited = await app.drain.notice(timeout=30)

    assert app.drain.active == 0
    assert waited < 30  # nothing in flight: the notice does not wait out its timeout
