"""Fairness: one caller cannot take every slot; past its own limit it is refused, others are not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import MODELS
from tests.helpers import details_of, user

SLOW = llm_pb2.StreamRequest(model=MODELS["openai"], messages=user("a b c [[emulate: token_delay_ms=100]]"))
HI = llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=user("hi"))


def _as(agent: str) -> tuple[tuple[str, str], ...]:
    return (("a2a-source-agent", agent),)


async def test_a_caller_at_its_limit_is_refused_while_another_gets_through(
    start_gateway: Callable[..., Any],
) -> None:
    app: App = await start_gateway(llm_max_in_flight_per_caller=2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        held = [stub.Stream(SLOW, metadata=_as("agent-a"), timeout=10) for _ in range(2)]
        for call in held:
            await anext(aiter(call))  # admitted: the call holds one of agent-a's slots

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Complete(HI, metadata=_as("agent-a"), timeout=10)
        other = await stub.Complete(HI, metadata=_as("agent-b"), timeout=10)
        for call in held:
            assert [e async for e in call][-1].WhichOneof("event") == "done"
        again = await stub.Complete(HI, metadata=_as("agent-a"), timeout=10)

    details = details_of(refused.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "CALLER_CONCURRENCY_LIMIT"
    assert details.metadata == {"caller": "agent-a", "limit": "2"}
    assert details.quota_violations == {
        "agent-a": "calls in flight per caller: at most 2 (LLM_MAX_IN_FLIGHT_PER_CALLER)"
    }
    assert (
        details.message == "agent-a has reached its limit of calls in flight (2); retry when one of them ends"
    )
    assert details.retry_delay == 1.0
    assert other.content == again.content == "emulator reply: hi"


async def test_callers_without_a_source_agent_share_one_limit(start_gateway: Callable[..., Any]) -> None:
    app: App = await start_gateway(llm_max_in_flight_per_caller=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        held = stub.Stream(SLOW, timeout=10)
        await anext(aiter(held))

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Complete(HI, timeout=10)
        held.cancel()

    details = details_of(refused.value)
    assert details.reason == "CALLER_CONCURRENCY_LIMIT"
    assert details.quota_violations == {
        "anonymous": "calls in flight per caller: at most 1 (LLM_MAX_IN_FLIGHT_PER_CALLER)"
    }


async def test_with_authentication_the_caller_is_the_token_subject_whatever_the_metadata_claims(
    start_gateway: Callable[..., Any],
) -> None:
    secret = "hs256-fairness-secret-that-is-long-enough-0123456789"
    app: App = await start_gateway(
        llm_max_in_flight_per_caller=1, llm_auth_disabled=False, llm_jwt_hs256_secret=secret
    )
    token = jwt.encode({"sub": "planner", "exp": int(time.time()) + 300}, secret, algorithm="HS256")
    bearer = ("authorization", f"Bearer {token}")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        held = stub.Stream(SLOW, metadata=(bearer, *_as("planner")), timeout=10)
        await anext(aiter(held))

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Complete(HI, metadata=(bearer, *_as("someone-else")), timeout=10)
        held.cancel()

    details = details_of(refused.value)
    assert details.reason == "CALLER_CONCURRENCY_LIMIT"
    assert details.metadata["caller"] == "planner"
