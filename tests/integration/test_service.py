"""ListModels, CheckHealth, the standard grpc.health.v1 service and server reflection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from server.config import DEFAULT_ALLOWED_MODELS
from tests.conftest import SAMPLING_MODELS, Emulators


async def test_list_models_returns_every_allowed_model_with_its_provider(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    response = await stub.ListModels(llm_pb2.ListModelsRequest(), timeout=10)

    models = {m.id: m.provider for m in response.models}
    assert list(models) == [*DEFAULT_ALLOWED_MODELS, SAMPLING_MODELS["openai"]]  # the tests' allowlist
    assert models["gpt-5.5"] == "openai"
    assert models["claude-sonnet-4-6"] == "anthropic"
    assert models["gemini-3.5-flash"] == "gemini"
    assert response.default_model == "gpt-5.4-mini"


async def test_list_models_follows_the_configured_allowlist(start_gateway: Callable[..., Any]) -> None:
    app: App = await start_gateway(
        allowed_models="gpt-5.4,gemini-3.5-flash", llm_default_model="gemini-3.5-flash"
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        response = await llm_pb2_grpc.LLMServiceStub(channel).ListModels(
            llm_pb2.ListModelsRequest(), timeout=10
        )

    assert [(m.id, m.provider) for m in response.models] == [
        ("gpt-5.4", "openai"),
        ("gemini-3.5-flash", "gemini"),
    ]
    assert response.default_model == "gemini-3.5-flash"


async def _health(app: App, stub: llm_pb2_grpc.LLMServiceAsyncStub) -> llm_pb2.CheckHealthResponse:
    """CheckHealth once every configured provider has been probed (a probe round run here and awaited,
    rather than waiting for the monitor's own)."""
    await app.health_monitor.probe_all()
    return await stub.CheckHealth(llm_pb2.CheckHealthRequest(), timeout=10)


async def test_check_health_reports_each_provider_from_the_probe(
    gateway: App, stub: llm_pb2_grpc.LLMServiceAsyncStub
) -> None:
    response = await _health(gateway, stub)

    assert response.status == llm_pb2.HEALTH_STATUS_SERVING
    assert sorted(p.provider for p in response.providers) == ["anthropic", "gemini", "openai"]
    for provider in response.providers:
        assert provider.status == llm_pb2.HEALTH_STATUS_SERVING
        assert provider.latency_ms > 0
        assert provider.check_time.seconds > 0
        assert provider.error == ""


async def test_check_health_reports_a_failing_provider(
    start_gateway: Callable[..., Any], refusing_url: str
) -> None:
    app: App = await start_gateway(anthropic_base_url=refusing_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        response = await _health(app, llm_pb2_grpc.LLMServiceStub(channel))

    states = {p.provider: p for p in response.providers}
    assert response.status == llm_pb2.HEALTH_STATUS_NOT_SERVING
    assert states["anthropic"].status == llm_pb2.HEALTH_STATUS_NOT_SERVING
    assert states["anthropic"].error
    assert states["openai"].status == llm_pb2.HEALTH_STATUS_SERVING


async def test_standard_health_service_reports_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    for service in ("", "llm.v1.LLMService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests() -> Any:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    services: list[str] = []
    async for response in reflection.ServerReflectionInfo(requests(), timeout=10):
        services = [s.name for s in response.list_services_response.service]
    assert "llm.v1.LLMService" in services
    assert "grpc.health.v1.Health" in services


async def test_check_health_follows_a_provider_going_down_and_coming_back(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    # Probe rounds are run by the test (`_health`), one after each change; the monitor's own would
    # come only after an hour.
    app: App = await start_gateway(llm_health_interval=3600)
    port = int(emulators.anthropic.base_url.rsplit(":", 1)[1])

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)

        async def anthropic_status() -> int:
            response = await _health(app, stub)
            return {p.provider: p.status for p in response.providers}["anthropic"]

        up = await anthropic_status()
        await emulators.anthropic.stop()
        down = await anthropic_status()
        await emulators.anthropic.start("127.0.0.1", port)
        back = await anthropic_status()

    assert (up, down, back) == (
        llm_pb2.HEALTH_STATUS_SERVING,
        llm_pb2.HEALTH_STATUS_NOT_SERVING,
        llm_pb2.HEALTH_STATUS_SERVING,
    )
