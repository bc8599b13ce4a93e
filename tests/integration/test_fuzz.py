"""Property-based fuzzing of every request field through the running server (a real `--demo` process).

Whatever a caller sends, the server answers with a status that is not UNKNOWN or INTERNAL, and keeps
serving. `make test` runs a short campaign; `make fuzz` a long one (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.integration.test_startup import BASE_ENV, _free_port

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=200) | st.sampled_from(
    ["", " ", "\x00", "x" * 2_000_000, "gpt-5.4-mini", "claude-haiku-4-5", "gemini-3.1-flash-lite"]
)
MESSAGE = st.builds(
    lambda role, content: llm_pb2.Message(role=role, content=content), st.integers(0, 7), TEXT
)
METADATA_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
METADATA = st.lists(
    st.tuples(
        st.sampled_from(["a2a-trace-id", "a2a-source-agent", "a2a-session-id", "traceparent", "x-junk"]),
        METADATA_VALUE,
    ),
    max_size=4,
)


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[llm_pb2_grpc.LLMServiceStub]:
    port = _free_port()
    log_path: Path = tmp_path_factory.mktemp("fuzz") / "server.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--demo", "--port", str(port), "--metrics-port", "-1"],
            env=BASE_ENV | {"LLM_LOG_LEVEL": "error", "LLM_MAX_RETRIES": "0"},
            stderr=log_file,
        )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=30)
    yield llm_pb2_grpc.LLMServiceStub(channel)
    channel.close()
    process.terminate()
    process.wait(timeout=30)


def _status(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def _serving(stub: llm_pb2_grpc.LLMServiceStub) -> bool:
    reply = stub.Complete(
        llm_pb2.CompleteRequest(messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, content="still there?")]),
        timeout=10,
    )
    return bool(reply.content == "emulator reply: still there?")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=TEXT,
    messages=st.lists(MESSAGE, max_size=5),
    temperature=st.none() | FLOATS,
    max_tokens=st.none() | INT32,
    top_p=st.none() | FLOATS,
    stop=st.lists(TEXT, max_size=20),
    tier=st.integers(0, 9),
    complexity=st.integers(0, 9),
    metadata=METADATA,
    streamed=st.booleans(),
)
def test_no_request_crashes_the_server_or_gets_unknown_or_internal(
    stub: llm_pb2_grpc.LLMServiceStub,
    model: str,
    messages: list[llm_pb2.Message],
    temperature: float | None,
    max_tokens: int | None,
    top_p: float | None,
    stop: list[str],
    tier: int,
    complexity: int,
    metadata: list[tuple[str, str | bytes]],
    streamed: bool,
) -> None:
    pairs = tuple(metadata)
    fields: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "top_p": top_p,
        "stop": stop,
        "tier": tier,
        "complexity": complexity,
    }
    if streamed:
        code = _status(lambda: list(stub.Stream(llm_pb2.StreamRequest(**fields), metadata=pairs, timeout=20)))
    else:
        code = _status(lambda: stub.Complete(llm_pb2.CompleteRequest(**fields), metadata=pairs, timeout=20))

    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def test_the_server_still_serves_after_the_campaign(stub: llm_pb2_grpc.LLMServiceStub) -> None:
    assert _serving(stub)
