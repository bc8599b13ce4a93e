"""Property-based fuzzing of every request field through the running server (a real `--demo` process).

Whatever a caller sends, the server answers with a status that is not UNKNOWN or INTERNAL, and keeps
serving. `make test` runs a short campaign; `make fuzz` a long one (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.integration.test_startup import BASE_ENV

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


def _server(log_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[grpc.Channel]:
    """A real `llm-gateway serve` process on a port it picks itself (0), and a blocking channel to it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--port", "0", "--metrics-port", "-1", *args],
        env=BASE_ENV | {"LLM_LOG_LEVEL": "info", "LLM_MAX_RETRIES": "0"} | (env or {}),
        stderr=subprocess.PIPE,
        text=True,
    )
    address: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        """Copy the server's log to a file (a full pipe would block it); note the address it serves on."""
        assert process.stderr is not None
        with log_path.open("w") as log:
            for line in process.stderr:
                log.write(line)
                if not address and '"serving"' in line:
                    address.append(json.loads(line)["address"])
                    ready.set()
        ready.set()  # the process ended

    threading.Thread(target=drain, daemon=True).start()
    assert ready.wait(60), "the gateway did not start within 60 s"
    assert address, f"the gateway exited during start:\n{log_path.read_text()}"
    channel = grpc.insecure_channel(address[0], options=[("grpc.max_send_message_length", 64 << 20)])
    grpc.channel_ready_future(channel).result(timeout=30)
    yield channel
    channel.close()
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    yield from _server(tmp_path_factory.mktemp("fuzz") / "server.log", "--demo")


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> llm_pb2_grpc.LLMServiceStub:
    return llm_pb2_grpc.LLMServiceStub(channel)


JWT_SECRET = "fuzz-campaign-hs256-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def secured_stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[llm_pb2_grpc.LLMServiceStub]:
    """A non-demo gateway with JWT authentication and roles; providers unreachable (nothing should get
    that far unless the token is valid)."""
    env = {
        "OPENAI_API_KEY": "sk-fuzz",
        "ANTHROPIC_API_KEY": "sk-ant-fuzz",
        "GOOGLE_API_KEY": "AIza-fuzz",
        **{f"{p}_BASE_URL": "http://127.0.0.1:9" for p in ("OPENAI", "ANTHROPIC", "GEMINI")},
        "LLM_ALLOW_PLAINTEXT": "true",
        "LLM_JWT_HS256_SECRET": JWT_SECRET,
        "LLM_ROLES": json.dumps({"agent": {"methods": ["Complete"], "models": ["gpt-5.4-mini"]}}),
        "LLM_HEALTH_INTERVAL": "3600",
    }
    for channel in _server(tmp_path_factory.mktemp("fuzz-jwt") / "server.log", env=env):
        yield llm_pb2_grpc.LLMServiceStub(channel)


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


# --- wire level: raw bytes into each RPC --------------------------------------------------------------

METHODS = [
    (method.name, method.server_streaming)
    for method in llm_pb2.DESCRIPTOR.services_by_name["LLMService"].methods
]
VALID_REQUEST = llm_pb2.CompleteRequest(
    model="gpt-5.4-mini", messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, content="hi")]
).SerializeToString()


@st.composite
def _wire_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid request with some bytes flipped, cut short or extended."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=2048))
    data = bytearray(VALID_REQUEST)
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(data) - 1))
        data[index] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) + draw(st.binary(max_size=16))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), payload=_wire_bytes())
def test_raw_bytes_into_any_rpc_never_get_unknown_or_internal(
    channel: grpc.Channel, method: tuple[str, bool], payload: bytes
) -> None:
    name, streaming = method
    path = f"/llm.v1.LLMService/{name}"
    if streaming:
        code = _status(
            lambda: list(
                channel.unary_stream(path, request_serializer=None, response_deserializer=None)(
                    payload, timeout=20
                )
            )
        )
    else:
        code = _status(
            lambda: channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                payload, timeout=20
            )
        )

    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


def test_the_server_still_serves_after_the_wire_campaign(stub: llm_pb2_grpc.LLMServiceStub) -> None:
    assert _serving(stub)


# --- JWT headers: forged, malformed and hostile tokens -------------------------------------------------

ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
HEADER = st.fixed_dictionaries(
    {"alg": st.sampled_from(["HS256", "HS512", "RS256", "ES256", "EdDSA", "none", "", "hs256"]) | JSON_VALUE},
    optional={"kid": JSON_VALUE, "typ": JSON_VALUE, "jku": ASCII, "x5u": ASCII, "crit": JSON_VALUE},
)
CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.text(max_size=200) | JSON_VALUE,
        "exp": st.integers(-(2**40), 2**40) | JSON_VALUE,
        "nbf": st.integers(-(2**40), 2**40) | JSON_VALUE,
        "iat": JSON_VALUE,
        "aud": JSON_VALUE,
        "iss": JSON_VALUE,
        "roles": JSON_VALUE | st.lists(st.text(max_size=80), max_size=40),
    },
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def _authorization(draw: st.DrawFn) -> str:
    """A header value: garbage, or a token with a fuzzed header and claims, signed with the real secret
    (so it gets past the signature to the claim checks) or with garbage."""
    if draw(st.integers(0, 4)) == 0:
        return draw(ASCII)
    header = _b64(json.dumps(draw(HEADER)).encode())
    claims = _b64(json.dumps(draw(CLAIMS)).encode())
    signed = f"{header}.{claims}"
    if draw(st.booleans()):
        signature = _b64(hmac.new(JWT_SECRET.encode(), signed.encode(), hashlib.sha256).digest())
    else:
        signature = _b64(draw(st.binary(max_size=64)))
    return draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", ""])) + f"{signed}.{signature}"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(authorization=_authorization())
def test_no_authorization_header_gets_unknown_or_internal(
    secured_stub: llm_pb2_grpc.LLMServiceStub, authorization: str
) -> None:
    request = llm_pb2.CompleteRequest(
        model="gpt-5.4-mini", messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, content="hi")]
    )

    code = _status(
        lambda: secured_stub.Complete(request, metadata=(("authorization", authorization),), timeout=20)
    )

    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.OK)
