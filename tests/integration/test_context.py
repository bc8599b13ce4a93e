"""A2A context: metadata in, trace id back out, and the headers every provider request carries."""

from __future__ import annotations

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.conftest import MODELS, Emulators
from tests.helpers import user

A2A = (("a2a-trace-id", "trace-123"), ("a2a-source-agent", "planner"), ("a2a-session-id", "session-9"))


@pytest.mark.parametrize("provider", sorted(MODELS))
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_a2a_context_reaches_the_provider_as_headers(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str, streamed: bool
) -> None:
    if streamed:
        async for _ in stub.Stream(
            llm_pb2.StreamRequest(model=MODELS[provider], messages=user("hi")), metadata=A2A, timeout=10
        ):
            pass
    else:
        await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi")), metadata=A2A, timeout=10
        )

    headers = emulators.completions(provider)[-1].headers
    assert headers["x-trace-id"] == "trace-123"
    assert headers["x-source-agent"] == "planner"
    assert headers["x-session-id"] == "session-9"


async def test_trace_id_is_returned_in_body_and_trailing_metadata(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    call = stub.Complete(llm_pb2.CompleteRequest(messages=user("hi")), metadata=A2A, timeout=10)
    response = await call

    assert response.trace_id == "trace-123"
    # A unary call's trace id rides the trailers (sent with the response in grpc's one final batch), not
    # an initial-metadata batch of its own (docs/api.md).
    assert ("a2a-trace-id", "trace-123") in tuple(await call.trailing_metadata())
    assert "a2a-trace-id" not in dict(await call.initial_metadata())


async def test_a_refused_unary_call_carries_the_trace_id_in_its_trailers(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    call = stub.Complete(llm_pb2.CompleteRequest(model="no-such-model", messages=user("hi")), metadata=A2A)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call

    trailers: dict[str, object] = dict(caught.value.trailing_metadata() or ())  # type: ignore[arg-type]
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert trailers["a2a-trace-id"] == "trace-123"
    assert "grpc-status-details-bin" in trailers


async def test_stream_done_and_initial_metadata_carry_the_trace_id(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    call = stub.Stream(llm_pb2.StreamRequest(messages=user("hi")), metadata=A2A, timeout=10)
    events = [event async for event in call]

    assert events[-1].done.trace_id == "trace-123"
    assert ("a2a-trace-id", "trace-123") in tuple(await call.initial_metadata())


async def test_missing_trace_id_is_generated_and_sent_to_the_provider(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    first = await stub.Complete(llm_pb2.CompleteRequest(messages=user("hi")), timeout=10)
    second = await stub.Complete(llm_pb2.CompleteRequest(messages=user("hi")), timeout=10)

    assert len(first.trace_id) == 32
    assert first.trace_id != second.trace_id
    assert emulators.completions("openai")[0].headers["x-trace-id"] == first.trace_id


async def test_w3c_traceparent_supplies_the_trace_id(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    response = await stub.Complete(
        llm_pb2.CompleteRequest(messages=user("hi")), metadata=(("traceparent", traceparent),), timeout=10
    )

    assert response.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a2a_trace_id_wins_over_traceparent(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    metadata = (
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("a2a-trace-id", "mine"),
    )

    response = await stub.Complete(
        llm_pb2.CompleteRequest(messages=user("hi")), metadata=metadata, timeout=10
    )

    assert response.trace_id == "mine"
