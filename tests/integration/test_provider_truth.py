"""What the providers say, passed on truthfully: each class of provider error with its own status and
reason, the provider's request id, the model that served, and the catalogue's capability flags — all
through the real gateway, the real SDKs and the emulators' real wire shapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import ANTHROPIC_KEY, GEMINI_KEY, MODELS, OPENAI_KEY, Emulators
from tests.helpers import Details, details_of, user

PROVIDERS = sorted(MODELS)
KEYS = (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY)
# The providers that name each request in a header (Gemini names a served response in `responseId`).
REQUEST_ID_PROVIDERS = ("anthropic", "openai")
CONTEXT_WINDOWS = {"openai": 1000000, "anthropic": 200000, "gemini": 1048576}


async def _complete_error(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, model: str, text: str, **fields: Any
) -> Details:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(llm_pb2.CompleteRequest(model=model, messages=user(text), **fields), timeout=10)
    return details_of(caught.value)


async def _stream_error(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, model: str, text: str
) -> tuple[list[str], Details]:
    deltas: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.Stream(llm_pb2.StreamRequest(model=model, messages=user(text)), timeout=10):
            deltas.append(event.delta)
    return deltas, details_of(caught.value)


# --- error classes --------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_exhausted_quota_is_resource_exhausted_and_never_retried(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    details = await _complete_error(stub, MODELS[provider], "hi [[emulate: fail=quota]]")

    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "QUOTA_EXHAUSTED"
    assert details.metadata["provider"] == provider
    assert details.metadata["model"] == MODELS[provider]
    assert len(emulators.completions(provider)) == 1


async def test_anthropic_billing_error_is_quota_exhausted(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    details = await _complete_error(stub, MODELS["anthropic"], "hi [[emulate: fail=billing]]")

    assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXHAUSTED")
    assert details.metadata["http_status"] == "402"
    assert len(emulators.completions("anthropic")) == 1


async def test_gemini_per_minute_quota_is_a_rate_limit_that_is_retried(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(
            model=MODELS["gemini"], messages=user("hi [[emulate: fail=rate_minute times=1 retry_after=0]]")
        ),
        timeout=10,
    )

    assert response.content == "emulator reply: hi"
    assert len(emulators.completions("gemini")) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_refused_key_is_unavailable_and_marks_the_provider_unhealthy(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    details = await _complete_error(stub, MODELS[provider], "hi [[emulate: fail=auth]]")
    health = await stub.CheckHealth(llm_pb2.CheckHealthRequest(), timeout=10)
    await stub.Complete(llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi")), timeout=10)
    healed = await stub.CheckHealth(llm_pb2.CheckHealthRequest(), timeout=10)

    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_AUTH_FAILED")
    assert len(emulators.completions(provider)) == 2  # the refused call was not retried
    assert not any(key in details.message + str(details.metadata) for key in KEYS)
    states = {p.provider: p for p in health.providers}
    assert states[provider].status == llm_pb2.HEALTH_STATUS_NOT_SERVING
    assert "key" in states[provider].error
    assert {p.provider: p.status for p in healed.providers}[provider] == llm_pb2.HEALTH_STATUS_SERVING


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_model_the_provider_no_longer_serves_is_model_retired(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    details = await _complete_error(stub, MODELS[provider], "hi [[emulate: fail=retired]]")

    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_RETIRED")
    assert details.metadata["model"] == MODELS[provider]
    assert len(emulators.completions(provider)) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_prompt_over_the_context_window_names_the_models_limit(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    details = await _complete_error(stub, MODELS[provider], "one two three [[emulate: context_window=2]]")

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED")
    assert details.metadata["context_window"] == str(CONTEXT_WINDOWS[provider])
    assert str(CONTEXT_WINDOWS[provider]) in details.message
    assert MODELS[provider] in details.message
    assert len(emulators.completions(provider)) == 1


@pytest.mark.parametrize("provider", REQUEST_ID_PROVIDERS)
async def test_provider_request_id_is_in_error_info(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, provider: str
) -> None:
    details = await _complete_error(stub, MODELS[provider], "hi [[emulate: status=400]]")

    assert details.metadata["provider_request_id"].startswith("req_")


@pytest.mark.parametrize("fault", ["fail=quota", "fail=auth", "fail=retired"])
async def test_quota_auth_and_retired_fail_over_to_the_next_model(
    start_gateway: Callable[..., Any], emulators: Emulators, fault: str
) -> None:
    app: App = await start_gateway(llm_fallbacks={MODELS["anthropic"]: [MODELS["gemini"]]})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        response = await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(
                model=MODELS["anthropic"], messages=user(f"hi [[emulate: {fault} on=anthropic]]")
            ),
            timeout=10,
        )

    assert response.model == MODELS["gemini"]
    assert len(emulators.completions("anthropic")) == 1


async def test_context_length_does_not_fail_over(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(llm_fallbacks={MODELS["anthropic"]: [MODELS["gemini"]]})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        details = await _complete_error(
            llm_pb2_grpc.LLMServiceStub(channel), MODELS["anthropic"], "a b c [[emulate: context_window=1]]"
        )

    assert details.reason == "CONTEXT_LENGTH_EXCEEDED"
    assert emulators.completions("gemini") == []


# --- errors inside a stream that began with HTTP 200 ------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("overloaded", grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE"),
        ("rate_limit", grpc.StatusCode.RESOURCE_EXHAUSTED, "PROVIDER_RATE_LIMITED"),
        ("invalid_request", grpc.StatusCode.INVALID_ARGUMENT, "PROVIDER_REJECTED_REQUEST"),
        ("quota", grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXHAUSTED"),
    ],
)
async def test_mid_stream_error_event_is_typed_as_the_same_error_at_the_call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    provider: str,
    kind: str,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    deltas, details = await _stream_error(
        stub, MODELS[provider], f"a b c d [[emulate: error_after=2 error={kind}]]"
    )

    assert "".join(deltas).startswith("emulator ")
    assert (details.code, details.reason) == (code, reason)
    assert details.metadata["model"] == MODELS[provider]
    if provider in REQUEST_ID_PROVIDERS:
        assert details.metadata["provider_request_id"].startswith("req_")


# --- the model that served ------------------------------------------------------------------------


SERVED = {
    "openai": "gpt-5.4-mini-2026-03-17",
    "anthropic": "claude-haiku-4-5-20251001",
    "gemini": "gemini-3.1-flash-lite-001",
}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_complete_reports_the_model_the_provider_says_served(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    emulators.gemini.served_as[MODELS["gemini"]] = SERVED["gemini"]

    response = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi")), timeout=10
    )

    assert response.model == MODELS[provider]
    assert response.served_model == SERVED[provider]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_stream_done_reports_the_model_the_provider_says_served(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    emulators.gemini.served_as[MODELS["gemini"]] = SERVED["gemini"]

    events = [
        e
        async for e in stub.Stream(
            llm_pb2.StreamRequest(model=MODELS[provider], messages=user("hi")), timeout=10
        )
    ]

    assert events[-1].done.model == MODELS[provider]
    assert events[-1].done.served_model == SERVED[provider]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_call_log_line_names_the_served_model_and_the_provider_request_id(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators, provider: str
) -> None:
    emulators.gemini.served_as[MODELS["gemini"]] = SERVED["gemini"]

    with structlog.testing.capture_logs() as logs:
        await stub.Complete(llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi")), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Complete(
                llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("hi [[emulate: fail=quota]]")),
                timeout=10,
            )

    served, failed = [entry for entry in logs if entry["event"] == "llm.call"]
    assert served["served_model"] == SERVED[provider]
    assert served["provider_request_id"]
    assert failed["error_reason"] == "QUOTA_EXHAUSTED"
    if provider in REQUEST_ID_PROVIDERS:
        assert failed["provider_request_id"].startswith("req_")


# --- capability flags -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "field"),
    [
        ("gpt-5.4-mini", {"temperature": 0.5}, "temperature"),
        ("gpt-5.4-mini", {"top_p": 0.5}, "top_p"),
        ("gpt-5.4-mini", {"stop": ["x"]}, "stop"),
        ("claude-haiku-4-5", {"temperature": 0.5}, "temperature"),
        ("gemini-3.5-flash", {"temperature": 0.5}, "temperature"),
    ],
)
async def test_field_the_model_does_not_accept_is_refused_before_any_provider_call(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    emulators: Emulators,
    model: str,
    fields: dict[str, Any],
    field: str,
) -> None:
    details = await _complete_error(stub, model, "hi", **fields)

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_BY_MODEL")
    assert model in details.violations[field]
    assert details.metadata["model"] == model
    assert all(emulators.completions(p) == [] for p in PROVIDERS)


async def test_final_assistant_turn_is_refused_for_a_model_that_refuses_prefill(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    messages = [*user("hi"), llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, content="Sure,")]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(llm_pb2.CompleteRequest(model="claude-opus-4-7", messages=messages), timeout=10)
    prefilled = await stub.Complete(
        llm_pb2.CompleteRequest(model="claude-sonnet-4-6", messages=messages), timeout=10
    )

    details = details_of(caught.value)
    assert details.reason == "UNSUPPORTED_BY_MODEL"
    assert "messages[1].role" in details.violations
    assert prefilled.content
    assert len(emulators.completions("anthropic")) == 1


async def test_whitespace_only_turn_is_refused_for_a_model_that_refuses_it(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    messages = [llm_pb2.Message(role=llm_pb2.ROLE_USER, content="  "), *user("hi")]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=messages), timeout=10)
    accepted = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS["openai"], messages=messages), timeout=10
    )

    assert "messages[0].content" in details_of(caught.value).violations
    assert accepted.content == "emulator reply: hi"
    assert emulators.completions("anthropic") == []


# --- the catalogue: retirement and overlay --------------------------------------------------------


async def test_list_models_marks_deprecated_models_with_their_retirement_date(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    response = await stub.ListModels(llm_pb2.ListModelsRequest(), timeout=10)

    models = {m.id: m for m in response.models}
    assert models["gpt-4.1-mini"].deprecated
    assert models["gpt-4.1-mini"].retirement_date == "2027-01-14"
    assert not models["gpt-5.4-mini"].deprecated
    assert models["gpt-5.4-mini"].retirement_date == ""


async def test_catalogue_overlay_adds_models_and_overrides_fields(
    start_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    overlay = tmp_path / "catalogue.toml"
    overlay.write_text(
        "[models.'gpt-5.4-mini']\ninput = 0.5\n\n"
        "[models.'gpt-private']\nprovider = 'openai'\ntier = 'fast'\ncontext_window = 8000\n"
        "max_output_tokens = 1000\ninput = 1\noutput = 2\nretires = 2027-06-30\n"
    )
    app: App = await start_gateway(
        llm_catalogue_path=str(overlay), allowed_models="gpt-5.4-mini,gpt-private,claude-haiku-4-5"
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        response = await llm_pb2_grpc.LLMServiceStub(channel).ListModels(
            llm_pb2.ListModelsRequest(), timeout=10
        )

    models = {m.id: m for m in response.models}
    assert models["gpt-5.4-mini"].input_usd_per_million == 0.5
    assert models["gpt-5.4-mini"].output_usd_per_million == 4.5  # the bundled value, not overridden
    assert models["gpt-private"].retirement_date == "2027-06-30"
    assert models["claude-haiku-4-5"].output_usd_per_million == 5.0


async def test_anthropic_input_plus_max_tokens_over_the_window_is_context_length_exceeded(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    details = await _complete_error(
        stub, MODELS["anthropic"], "a b c [[emulate: context_window=2000 reply=x]]", max_tokens=64000
    )

    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED")
    assert details.metadata["context_window"] == "200000"
