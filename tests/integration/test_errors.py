"""Every error a caller or a provider can cause arrives as a clear gRPC status with rich details."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import ANTHROPIC_KEY, GEMINI_KEY, MODELS, OPENAI_KEY, Emulators, FakeClock
from tests.helpers import details_of, user

PROVIDERS = sorted(MODELS)
KEYS = (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY)


async def _fail(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, request: llm_pb2.CompleteRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(request, timeout=10)
    return caught.value


async def _fail_stream(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, request: llm_pb2.StreamRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.Stream(request, timeout=10):
            pass
    return caught.value


# --- caller input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [llm_pb2.Message(role=llm_pb2.ROLE_UNSPECIFIED, content="hi")]}, "messages[0].role"),
        ({"messages": [llm_pb2.Message(role=7, content="hi")]}, "messages[0].role"),  # type: ignore[arg-type]
        ({"messages": [llm_pb2.Message(role=llm_pb2.ROLE_USER, content="  ")]}, "messages"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"model": "x" * 65}, "model"),
        ({"stop": [""]}, "stop[0]"),
        ({"messages": user("x" * 1_100_000)}, "messages"),
    ],
)
async def test_invalid_request_is_refused_with_field_violation(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, request_fields: dict[str, Any], field: str
) -> None:
    fields: dict[str, Any] = {"model": "gpt-5.4-mini", "messages": user("hi")} | request_fields
    error = await _fail(stub, llm_pb2.CompleteRequest(**fields))

    details = details_of(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_REQUEST"
    assert field in details.violations
    assert emulators.completions("openai") == []


async def test_invalid_stream_request_is_refused_before_any_event(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    error = await _fail_stream(stub, llm_pb2.StreamRequest(model="gpt-5.4-mini", messages=[]))

    assert details_of(error).code == grpc.StatusCode.INVALID_ARGUMENT


async def test_over_long_trace_id_is_refused(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            llm_pb2.CompleteRequest(messages=user("hi")), metadata=(("a2a-trace-id", "t" * 129),), timeout=10
        )

    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata.a2a-trace-id" in details.violations


# --- governance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_model_outside_allowlist_is_refused_before_any_provider_call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, streamed: bool
) -> None:
    if streamed:
        error = await _fail_stream(stub, llm_pb2.StreamRequest(model="gpt-4o", messages=user("hi")))
    else:
        error = await _fail(stub, llm_pb2.CompleteRequest(model="gpt-4o", messages=user("hi")))

    details = details_of(error)
    assert details.code == grpc.StatusCode.PERMISSION_DENIED
    assert details.reason == "MODEL_NOT_ALLOWED"
    assert details.metadata["model"] == "gpt-4o"
    assert "claude-sonnet-4-6" in details.metadata["allowed_models"].split(",")
    assert all(emulators.completions(p) == [] for p in PROVIDERS)


# --- provider errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(
    ("directive", "code"),
    [
        ("status=400", grpc.StatusCode.INVALID_ARGUMENT),
        ("status=500", grpc.StatusCode.UNAVAILABLE),
        ("status=503", grpc.StatusCode.UNAVAILABLE),
        ("status=429 retry_after=0", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_provider_error_maps_to_status(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    provider: str,
    streamed: bool,
    directive: str,
    code: grpc.StatusCode,
) -> None:
    text = f"hi [[emulate: {directive}]]"
    if streamed:
        error = await _fail_stream(stub, llm_pb2.StreamRequest(model=MODELS[provider], messages=user(text)))
    else:
        error = await _fail(stub, llm_pb2.CompleteRequest(model=MODELS[provider], messages=user(text)))

    details = details_of(error)
    assert details.code == code
    assert details.metadata["provider"] == provider
    assert provider in details.message


async def test_anthropic_overloaded_529_is_unavailable(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    error = await _fail(
        stub, llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=user("hi [[emulate: status=529]]"))
    )

    assert details_of(error).code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rate_limit_after_retries_is_resource_exhausted_with_retry_info(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    error = await _fail(
        stub,
        llm_pb2.CompleteRequest(
            model=MODELS[provider],
            messages=user("hi [[emulate: status=429 retry_after_ms=20 retry_after=0]]"),
        ),
    )

    details = details_of(error)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "PROVIDER_RATE_LIMITED"
    assert details.retry_delay is not None
    assert len(emulators.completions(provider)) == 4  # the first try and LLM_MAX_RETRIES=3 retries


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_transient_provider_failure_is_retried_to_success(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi [[emulate: status=503 times=2]]")),
        timeout=10,
    )

    assert response.content == "emulator reply: hi"
    assert len(emulators.completions(provider)) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_provider_refusing_gateway_key_is_unavailable_without_the_key(
    start_gateway: Callable[..., Any], emulators: Emulators, provider: str
) -> None:
    wrong = {"openai": "openai_api_key", "anthropic": "anthropic_api_key", "gemini": "google_api_key"}[
        provider
    ]
    app: App = await start_gateway(**{wrong: "sk-wrong-key-abcdefghijklmnop0123"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        error = await _fail(
            llm_pb2_grpc.LLMServiceStub(channel),
            llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi")),
        )

    details = details_of(error)
    assert details.code == grpc.StatusCode.UNAVAILABLE  # the operator's problem: another provider may serve
    assert details.reason == "PROVIDER_AUTH_FAILED"
    assert "key" in details.message
    everything = details.message + str(details.metadata) + str(error.trailing_metadata())
    assert "sk-wrong-key" not in everything
    assert not any(key in everything for key in KEYS)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unreachable_provider_is_unavailable(start_gateway: Callable[..., Any], provider: str) -> None:
    url = {"openai": "openai_base_url", "anthropic": "anthropic_base_url", "gemini": "gemini_base_url"}[
        provider
    ]
    app: App = await start_gateway(**{url: "http://127.0.0.1:9/v1", "llm_max_retries": 0})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        error = await _fail(
            llm_pb2_grpc.LLMServiceStub(channel),
            llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi")),
        )

    assert details_of(error).code == grpc.StatusCode.UNAVAILABLE


# --- deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_caller_deadline_bounds_the_call(stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            llm_pb2.CompleteRequest(
                model=MODELS[provider], messages=user("hi [[emulate: token_delay_ms=500]]")
            ),
            timeout=0.5,
        )

    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_request_timeout_setting_bounds_retries(start_gateway: Callable[..., Any]) -> None:
    app: App = await start_gateway(llm_request_timeout=0.3, llm_retry_base_delay=0.2, llm_retry_max_delay=0.2)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        error = await _fail(
            llm_pb2_grpc.LLMServiceStub(channel),
            llm_pb2.CompleteRequest(
                model=MODELS["openai"], messages=user("hi [[emulate: token_delay_ms=200]]")
            ),
        )

    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_retry_wait_past_the_deadline_gives_up_at_once(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    error = await _fail(
        stub,
        llm_pb2.CompleteRequest(
            model=MODELS["openai"], messages=user("hi [[emulate: status=429 retry_after=60]]")
        ),
    )

    details = details_of(error)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.retry_delay == 60
    assert len(emulators.completions("openai")) == 1


# --- streams that fail --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["drop_after=2", "error_after=2", "malformed_after=2"])
async def test_mid_stream_failure_delivers_tokens_then_unavailable(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str, fault: str
) -> None:
    deltas: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.Stream(
            llm_pb2.StreamRequest(model=MODELS[provider], messages=user(f"a b c d [[emulate: {fault}]]")),
            timeout=10,
        ):
            assert event.WhichOneof("event") == "delta"
            deltas.append(event.delta)

    assert "".join(deltas).startswith("emulator ")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert provider in (caught.value.details() or "")


# --- load shedding ------------------------------------------------------------------------------


async def test_calls_past_the_in_flight_limit_are_shed_with_resource_exhausted(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    # One caller here: its own limit (a quarter of LLM_MAX_IN_FLIGHT by default) must not be what refuses.
    app: App = await start_gateway(
        llm_max_in_flight=1, llm_queue_timeout=0.05, llm_max_in_flight_per_caller=10
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        slow = stub.Stream(
            llm_pb2.StreamRequest(
                model=MODELS["openai"], messages=user("hi [[emulate: token_delay_ms=300]]")
            ),
            timeout=10,
        )
        first = await anext(aiter(slow))  # the slow stream now holds the only slot
        error = await _fail(stub, llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")))
        other_provider = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["gemini"], messages=user("hi")), timeout=10
        )
        slow.cancel()

    details = details_of(error)
    assert first.delta
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "GATEWAY_OVERLOADED"
    assert details.metadata["limit"] == "1"
    assert details.retry_delay == 1.0
    assert len(emulators.completions("openai")) == 1
    assert other_provider.content == "emulator reply: hi"


# --- circuit breaking ---------------------------------------------------------------------------


async def test_circuit_opens_after_consecutive_failures_and_a_trial_call_closes_it(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    clock = FakeClock()
    app: App = await start_gateway(
        llm_circuit_failures=2, llm_circuit_cooldown=30, llm_max_retries=0, circuit_clock=clock
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        failing = llm_pb2.CompleteRequest(
            model=MODELS["anthropic"], messages=user("hi [[emulate: status=500]]")
        )
        for _ in range(2):
            assert (await _fail(stub, failing)).code() == grpc.StatusCode.UNAVAILABLE
        sent_before = len(emulators.completions("anthropic"))

        fast = details_of(
            await _fail(stub, llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=user("hi")))
        )
        health = await stub.CheckHealth(llm_pb2.CheckHealthRequest(), timeout=10)
        other = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")), timeout=10
        )
        clock.advance(31)  # the cool-down is over
        trial = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=user("hi")), timeout=10
        )
        after = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=user("hi")), timeout=10
        )

    assert fast.code == grpc.StatusCode.UNAVAILABLE
    assert fast.reason == "PROVIDER_CIRCUIT_OPEN"
    assert len(emulators.completions("anthropic")) == sent_before + 2  # the failing-fast call sent nothing
    states = {p.provider: p.status for p in health.providers}
    assert states["anthropic"] == llm_pb2.HEALTH_STATUS_NOT_SERVING
    assert other.provider == "openai"
    assert trial.content == after.content == "emulator reply: hi"


async def test_input_limits_are_configurable_and_named(start_gateway: Callable[..., Any]) -> None:
    app: App = await start_gateway(
        llm_max_stop_sequences=1,
        llm_max_metadata_value_length=16,
        llm_max_messages=2,
        llm_max_request_bytes=2048,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        too_many_stops = await _fail(stub, llm_pb2.CompleteRequest(messages=user("hi"), stop=["a", "b"]))
        too_many_messages = await _fail(stub, llm_pb2.CompleteRequest(messages=user("hi", system="s") * 2))
        too_big = await _fail(stub, llm_pb2.CompleteRequest(messages=user("x" * 3000)))
        with pytest.raises(grpc.aio.AioRpcError) as long_metadata:
            await stub.Complete(
                llm_pb2.CompleteRequest(messages=user("hi")),
                metadata=(("a2a-session-id", "s" * 17),),
                timeout=10,
            )

    assert "at most 1 stop" in details_of(too_many_stops).violations["stop"]
    assert "at most 2 messages" in details_of(too_many_messages).violations["messages"]
    assert "limit is 2048" in details_of(too_big).violations["messages"]
    assert "at most 16" in details_of(long_metadata.value).violations["metadata.a2a-session-id"]
