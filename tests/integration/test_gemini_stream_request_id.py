"""A Gemini stream that breaks after chunks that named their response (`responseId`) fails with that id
as the provider's request id (ErrorInfo `provider_request_id`): Gemini names a request nowhere else."""

from __future__ import annotations

import re

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.helpers import details_of, user


@pytest.mark.parametrize(
    "fault", ["drop_after=2", "error_after=2 error=overloaded"], ids=["cut", "error-event"]
)
async def test_a_gemini_stream_that_breaks_midway_names_the_response_it_was(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, fault: str
) -> None:
    request = llm_pb2.StreamRequest(
        model="gemini-3.5-flash", messages=user(f"one two three four five [[emulate: {fault}]]")
    )
    deltas: list[str] = []

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for event in stub.Stream(request, timeout=10):
            deltas.append(event.delta)

    details = details_of(failed.value)
    assert "".join(deltas)  # chunks (with their responseId) came before the break
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert re.fullmatch(r"[0-9a-f]{20}", details.metadata["provider_request_id"])  # the emulator's responseId
