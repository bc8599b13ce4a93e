"""Caller cancellation reaches the provider; no stream or task outlives its RPC."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.conftest import MODELS, Emulators
from tests.helpers import user


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_cancelled_streams_close_their_provider_streams_within_a_second(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    emulator = emulators.by_provider(provider)
    request = llm_pb2.StreamRequest(
        model=MODELS[provider], messages=user("a b c d e f g h [[emulate: token_delay_ms=300]]")
    )
    calls = [stub.Stream(request, timeout=30) for _ in range(100)]
    for call in calls:
        first = await anext(aiter(call))
        assert first.delta
    assert emulator.open_streams == 100

    cancelled_at = time.monotonic()
    for call in calls:
        call.cancel()
    for _ in range(100):
        if emulator.open_streams == 0:
            break
        await asyncio.sleep(0.01)

    assert emulator.open_streams == 0
    assert len(emulator.stream_closed_at) == 100
    assert max(emulator.stream_closed_at) - cancelled_at < 1.0


async def test_deadline_closes_the_provider_stream(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    request = llm_pb2.StreamRequest(
        model=MODELS["openai"], messages=user("a b c d e f g h [[emulate: token_delay_ms=200]]")
    )
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Stream(request, timeout=0.5):
            pass
    for _ in range(100):
        if emulators.openai.open_streams == 0:
            break
        await asyncio.sleep(0.01)

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert emulators.openai.open_streams == 0
    assert emulators.openai.stream_closed_at[-1] - started < 1.5


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
    await asyncio.sleep(0.2)

    leftover = {t for t in asyncio.all_tasks() if not t.done()} - before - {asyncio.current_task()}
    # Not ours: the emulators' keep-alive connection handlers (the outside world) and grpc's own
    # wait for the next call.
    infrastructure = ("RequestHandler.start", "AioServer._request_registered_call")
    ours = {t for t in leftover if not any(name in repr(t) for name in infrastructure)}
    assert not ours, ours
