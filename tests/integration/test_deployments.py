"""Other deployments of a provider kind, against the emulators' routes for them: Azure OpenAI through the
SDK's AsyncAzureOpenAI, Claude on Vertex AI through AsyncAnthropicVertex, and an OpenAI-compatible
endpoint with its own models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.__main__ import verify_models
from server.app import App, ConfigError, check_settings
from tests.conftest import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Emulators, make_settings
from tests.helpers import details_of, user


def _azure(emulators: Emulators) -> dict[str, Any]:
    root = emulators.openai.base_url.removesuffix("/v1")
    return {
        "azure_openai_endpoint": root,
        "azure_openai_api_key": OPENAI_KEY,
        "openai_api_key": None,
        "openai_api_version": "2025-04-01-preview",  # the Responses API needs 2025-03-01-preview or later
    }


async def test_azure_openai_serves_openai_models_by_deployment(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(**_azure(emulators))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        reply = await stub.Complete(
            llm_pb2.CompleteRequest(model="gpt-5.4-mini", messages=user("hi")), timeout=10
        )
        events = [
            e
            async for e in stub.Stream(
                llm_pb2.StreamRequest(model="gpt-5.4", messages=user("a b")), timeout=10
            )
        ]

    assert reply.content == "emulator reply: hi"
    assert reply.provider == "openai"
    assert events[-1].done.usage.completion_tokens == 4
    calls = emulators.completions("openai")
    # OpenAI's own models are on the Responses API there too: the deployment is the body's `model`.
    assert [(c.path, c.body["model"]) for c in calls] == [
        ("/openai/responses", "gpt-5.4-mini"),
        ("/openai/responses", "gpt-5.4"),
    ]
    assert calls[0].query["api-version"] == "2025-04-01-preview"
    assert calls[0].headers["api-key"] == OPENAI_KEY
    assert "authorization" not in calls[0].headers


async def test_azure_openai_models_on_chat_completions_go_to_their_deployment(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(**_azure(emulators))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        reply = await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(model="gpt-4.1-mini", messages=user("hi")), timeout=10
        )

    assert reply.content == "emulator reply: hi"
    [sent] = emulators.completions("openai")
    assert sent.path == "/openai/deployments/gpt-4.1-mini/chat/completions"


def test_azure_at_an_api_version_without_the_responses_api_refuses_to_start(
    emulators: Emulators,
) -> None:
    settings = make_settings(emulators, **_azure(emulators) | {"openai_api_version": "2024-10-21"})

    with pytest.raises(ConfigError) as refused:
        check_settings(settings)

    assert "'gpt-5.5' is served on the Responses API" in str(refused.value)
    assert "2025-03-01-preview" in str(refused.value)


async def test_azure_openai_refusing_the_key_is_provider_auth_failed(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(
        **_azure(emulators) | {"azure_openai_api_key": "wrong-azure-key-0123456789"}
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                llm_pb2.CompleteRequest(model="gpt-5.4-mini", messages=user("hi")), timeout=10
            )

    details = details_of(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_AUTH_FAILED")
    assert "wrong-azure-key" not in details.message + str(details.metadata)


async def test_openai_compatible_endpoint_with_its_own_models(
    start_gateway: Callable[..., Any], emulators: Emulators, tmp_path: Path
) -> None:
    overlay = tmp_path / "catalogue.toml"
    overlay.write_text(
        "[models.'local-llama-70b']\nprovider = 'openai'\ntier = 'balanced'\ncontext_window = 131072\n"
        "max_output_tokens = 8192\ninput = 0\noutput = 0\ntemperature = true\n"
    )
    # An OpenAI-compatible server (vLLM, Ollama, a proxy): its base URL, its key, its own model list.
    app: App = await start_gateway(
        llm_catalogue_path=str(overlay),
        allowed_models="local-llama-70b",
        llm_default_model="local-llama-70b",  # no name prefix routes it: the catalogue's provider does
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        reply = await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(model="local-llama-70b", messages=user("hi"), temperature=0.2), timeout=10
        )

    assert (reply.provider, reply.model, reply.cost_usd) == ("openai", "local-llama-70b", 0.0)
    assert emulators.completions("openai")[-1].body["temperature"] == pytest.approx(0.2)


def _vertex(emulators: Emulators, token: str = ANTHROPIC_KEY) -> dict[str, Any]:
    return {
        "anthropic_vertex_project_id": "my-project",
        "cloud_ml_region": "europe-west1",
        "anthropic_vertex_access_token": token,
        "anthropic_api_key": None,
        "anthropic_base_url": f"{emulators.anthropic.base_url}/v1",
    }


async def test_claude_on_vertex_ai_serves_through_raw_predict(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(**_vertex(emulators))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        reply = await stub.Complete(
            llm_pb2.CompleteRequest(model="claude-haiku-4-5", messages=user("hi")), timeout=10
        )
        events = [
            e
            async for e in stub.Stream(
                llm_pb2.StreamRequest(model="claude-sonnet-4-6", messages=user("a b")), timeout=10
            )
        ]
        await app.health_monitor.probe_all()
        health = await stub.CheckHealth(llm_pb2.CheckHealthRequest(), timeout=10)

    assert (reply.content, reply.provider) == ("emulator reply: hi", "anthropic")
    assert events[-1].done.usage.completion_tokens == 4
    prefix = "/v1/projects/my-project/locations/europe-west1/publishers/anthropic/models"
    calls = emulators.completions("anthropic")
    assert f"{prefix}/claude-haiku-4-5:rawPredict" in [c.path for c in calls]
    assert f"{prefix}/claude-sonnet-4-6:streamRawPredict" in [c.path for c in calls]
    assert f"{prefix}/count-tokens:rawPredict" in [c.path for c in calls]  # the health probe
    assert {p.provider: p.status for p in health.providers}["anthropic"] == llm_pb2.HEALTH_STATUS_SERVING


async def test_claude_on_vertex_ai_refusing_the_token_is_provider_auth_failed(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(**_vertex(emulators, token="ya29.wrong-token-0123456789"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                llm_pb2.CompleteRequest(model="claude-haiku-4-5", messages=user("hi")), timeout=10
            )

    details = details_of(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_AUTH_FAILED")
    assert "ya29.wrong" not in details.message + str(details.metadata)


def _gemini_vertex(emulators: Emulators, token: str = GEMINI_KEY) -> dict[str, Any]:
    return {
        "google_genai_use_vertexai": True,
        "google_cloud_project": "my-project",
        "google_cloud_location": "europe-west4",
        "gemini_vertex_access_token": token,
        "google_api_key": None,
    }


async def test_gemini_on_vertex_ai_serves_through_the_project_and_location(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(**_gemini_vertex(emulators))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        reply = await stub.Complete(
            llm_pb2.CompleteRequest(model="gemini-3.1-flash-lite", messages=user("hi")), timeout=10
        )
        events = [
            e
            async for e in stub.Stream(
                llm_pb2.StreamRequest(model="gemini-3.5-flash", messages=user("a b")), timeout=10
            )
        ]
        await app.health_monitor.probe_all()
        health = await stub.CheckHealth(llm_pb2.CheckHealthRequest(), timeout=10)

    assert (reply.content, reply.provider) == ("emulator reply: hi", "gemini")
    assert events[-1].done.usage.completion_tokens == 4
    prefix = "/v1beta1/projects/my-project/locations/europe-west4/publishers/google/models"
    calls = emulators.completions("gemini")
    assert [c.path for c in calls] == [
        f"{prefix}/gemini-3.1-flash-lite:generateContent",
        f"{prefix}/gemini-3.5-flash:streamGenerateContent",
    ]
    assert calls[0].headers["authorization"] == f"Bearer {GEMINI_KEY}"
    assert {p.provider: p.status for p in health.providers}["gemini"] == llm_pb2.HEALTH_STATUS_SERVING


async def test_verify_lists_gemini_models_on_vertex_ai(emulators: Emulators) -> None:
    settings = make_settings(
        emulators,
        **_gemini_vertex(emulators),
        allowed_models="gemini-3.5-flash",
        llm_default_model="gemini-3.5-flash",
    )

    code, report = await verify_models(settings, timeout=10)

    assert (code, report) == (0, "gemini: gemini-3.5-flash: served")
