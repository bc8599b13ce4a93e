"""The call pipeline and provider instances, through the public gRPC surface: every RPC counted and
logged once with its final code and origin (refused ones too), provider error metrics only for what the
provider caused, and two endpoints of one provider kind served as two instances."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App, ConfigError, build_app, check_settings
from server.config import Settings
from server.emulators.openai import OpenAIEmulator
from tests.conftest import MODELS, Emulators, make_settings
from tests.helpers import user

SECOND_KEY = "sk-second-endpoint-0123456789"


async def _samples(app: App, name: str) -> list[dict[str, str]]:
    """The labels of every sample of `name` with value 1 or more, from the gateway's /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{app.metrics_port}/metrics") as response,
    ):
        text = await response.text()
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found += [dict(sample.labels)] * int(sample.value)
    return found


@pytest.fixture
async def app(start_gateway: Callable[..., Any]) -> App:
    started: App = await start_gateway(metrics_port=0)
    return started


@pytest.fixture
async def stub(app: App) -> AsyncIterator[llm_pb2_grpc.LLMServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield llm_pb2_grpc.LLMServiceStub(channel)


async def test_every_rpc_is_counted_once_with_its_final_code_and_origin(
    app: App, stub: llm_pb2_grpc.LLMServiceAsyncStub
) -> None:
    await stub.Complete(llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")), timeout=10)
    await stub.ListModels(llm_pb2.ListModelsRequest(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Complete(llm_pb2.CompleteRequest(model="not-allowed", messages=user("hi")), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi [[emulate: status=400]]")),
            timeout=10,
        )

    calls = await _samples(app, "llm_calls_total")

    assert sorted((c["method"], c["code"], c["origin"]) for c in calls) == [
        ("Complete", "INVALID_ARGUMENT", "provider"),
        ("Complete", "OK", ""),
        ("Complete", "PERMISSION_DENIED", "caller"),
        ("ListModels", "OK", ""),
    ]
    assert await _samples(app, "llm_refusals_total") == [
        {"method": "Complete", "reason": "MODEL_NOT_ALLOWED"}
    ]


async def test_a_malformed_request_is_counted_and_logged_as_the_callers(
    app: App, stub: llm_pb2_grpc.LLMServiceAsyncStub
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        raw = channel.unary_unary(
            "/llm.v1.LLMService/Complete", request_serializer=None, response_deserializer=None
        )
        with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw(b"\xff\xff\xff", timeout=10)

    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (line,) = [entry for entry in logs if entry["event"] == "llm.call"]
    assert (line["status"], line["origin"], line["error_reason"]) == (
        "INVALID_ARGUMENT",
        "caller",
        "MALFORMED_REQUEST",
    )
    assert await _samples(app, "llm_calls_total") == [
        {"method": "Complete", "code": "INVALID_ARGUMENT", "origin": "caller"}
    ]


async def test_a_call_refused_during_the_drain_is_counted_and_logged_as_the_gateways(
    app: App, stub: llm_pb2_grpc.LLMServiceAsyncStub
) -> None:
    await app.drain.notice(timeout=0)  # what App.stop does first
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Complete(llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")), timeout=10)

    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    (line,) = [entry for entry in logs if entry["event"] == "llm.call"]
    assert (line["origin"], line["error_reason"]) == ("gateway", "SERVER_DRAINING")
    assert await _samples(app, "llm_calls_total") == [
        {"method": "Complete", "code": "UNAVAILABLE", "origin": "gateway"}
    ]
    assert await _samples(app, "llm_refusals_total") == [{"method": "Complete", "reason": "SERVER_DRAINING"}]


async def test_provider_error_metrics_count_only_what_the_provider_caused(
    app: App, stub: llm_pb2_grpc.LLMServiceAsyncStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Complete(llm_pb2.CompleteRequest(model="not-allowed", messages=user("hi")), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Complete(llm_pb2.CompleteRequest(model=MODELS["openai"], messages=[]), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi [[emulate: fail=quota]]")),
            timeout=10,
        )

    errors = await _samples(app, "llm_errors_total")

    assert errors == [{"provider": "openai", "model": MODELS["openai"], "error_type": "quota_exhausted"}]


async def test_a_refused_call_gets_one_log_line_with_its_reason_and_the_callers_context(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    with (
        capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
        pytest.raises(grpc.aio.AioRpcError),
    ):
        await stub.Complete(
            llm_pb2.CompleteRequest(model="not-allowed", messages=user("hi")),
            metadata=(("a2a-trace-id", "trace-refused"),),
            timeout=10,
        )

    (line,) = [entry for entry in logs if entry["event"] == "llm.call"]
    assert line["status"] == "PERMISSION_DENIED"
    assert line["origin"] == "caller"
    assert line["error_reason"] == "MODEL_NOT_ALLOWED"
    assert line["method"] == "Complete"
    assert line["trace_id"] == "trace-refused"


# --- provider instances -----------------------------------------------------------------------------


@pytest.fixture
async def second_openai() -> AsyncIterator[OpenAIEmulator]:
    emulator = OpenAIEmulator(api_key=SECOND_KEY)
    await emulator.start()
    yield emulator
    await emulator.stop()


def _local_model_catalogue(tmp_path: Path, provider: str) -> Path:
    path = tmp_path / "catalogue.toml"
    path.write_text(
        f"[models.'local-llama']\nprovider='{provider}'\ntier='fast'\ncontext_window=8192\n"
        "max_output_tokens=1024\ninput=0\noutput=0\n"
    )
    return path


async def test_two_endpoints_of_one_kind_are_two_instances_each_serving_its_models(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    second_openai: OpenAIEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SECOND_OPENAI_KEY", SECOND_KEY)
    app: App = await start_gateway(
        llm_providers=f'[{{"name": "local", "kind": "openai", "base_url": "{second_openai.base_url}", '
        '"api_key_env": "SECOND_OPENAI_KEY"}]',
        llm_catalogue_path=str(_local_model_catalogue(tmp_path, "local")),
        allowed_models=f"{MODELS['openai']},local-llama",
        llm_default_model=MODELS["openai"],
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        local = await stub.Complete(
            llm_pb2.CompleteRequest(model="local-llama", messages=user("hi")), timeout=10
        )
        standard = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")), timeout=10
        )

    assert (local.provider, standard.provider) == ("local", "openai")
    assert [r.body["model"] for r in second_openai.requests if r.method == "POST"] == ["local-llama"]
    assert [r.body["model"] for r in emulators.completions("openai")] == [MODELS["openai"]]
    assert second_openai.requests[-1].headers["authorization"] == f"Bearer {SECOND_KEY}"


def test_an_instance_without_its_key_stops_the_start_naming_the_variable(
    emulators: Emulators, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SECOND_OPENAI_KEY", raising=False)
    settings = make_settings(
        emulators,
        llm_providers='[{"name": "local", "kind": "openai", "api_key_env": "SECOND_OPENAI_KEY"}]',
        llm_catalogue_path=str(_local_model_catalogue(tmp_path, "local")),
        allowed_models=f"{MODELS['openai']},local-llama",
        llm_default_model=MODELS["openai"],
    )

    with pytest.raises(ConfigError, match="SECOND_OPENAI_KEY is not set, but ALLOWED_MODELS has local-llama"):
        build_app(settings, port=0)


def test_an_instance_of_an_unknown_kind_stops_the_start(emulators: Emulators) -> None:
    settings = make_settings(
        emulators, llm_providers='[{"name": "x", "kind": "mistral", "api_key_env": "X_KEY"}]'
    )

    with pytest.raises(ConfigError, match="unknown kind 'mistral'"):
        build_app(settings, port=0)


def test_roles_naming_an_unknown_method_or_a_model_outside_the_allowlist_stop_the_start(
    emulators: Emulators,
) -> None:
    settings = make_settings(
        emulators,
        llm_auth_disabled=False,
        llm_jwt_hs256_secret="a-long-enough-test-secret-for-hs256-signing!",
        llm_roles='{"agent": {"methods": ["Complet"], "models": ["gpt-9"]}}',
    )

    with pytest.raises(ConfigError) as refused:
        build_app(settings, port=0)

    assert "names unknown method 'Complet'" in str(refused.value)
    assert "names model 'gpt-9', which is not in ALLOWED_MODELS" in str(refused.value)


async def test_the_otel_genai_metric_names_are_exposed_beside_the_seed_names(
    app: App, stub: llm_pb2_grpc.LLMServiceAsyncStub
) -> None:
    await stub.Complete(llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("a b c")), timeout=10)
    async for _ in stub.Stream(
        llm_pb2.StreamRequest(model=MODELS["gemini"], messages=user("hi")), timeout=10
    ):
        pass

    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": MODELS["openai"],
    }
    tokens = await _samples(app, "gen_ai_client_token_usage_count")
    durations = await _samples(app, "gen_ai_client_operation_duration_seconds_count")
    first_tokens = await _samples(app, "gen_ai_server_time_to_first_token_seconds_count")

    assert genai | {"gen_ai_token_type": "input"} in tokens
    assert genai | {"gen_ai_token_type": "output"} in tokens
    assert genai | {"error_type": ""} in durations
    assert first_tokens == [
        {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "gemini",
            "gen_ai_request_model": MODELS["gemini"],
        }
    ]


PROVIDERS_DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def test_openai_itself_beside_an_azure_resource_is_two_instances_as_docs_providers_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = PROVIDERS_DOC.read_text()
    entry = text[text.index('`{"name": "openai-direct"') + 1 :].split("`", 1)[0]
    environment = {
        "OPENAI_DIRECT_KEY": "sk-direct",
        "AZURE_OPENAI_ENDPOINT": "https://my-resource.openai.azure.com",
        "AZURE_OPENAI_API_KEY": "azure-key",
        "OPENAI_API_VERSION": "2025-04-01-preview",  # as the doc's Azure lines say (Responses API)
        "LLM_PROVIDERS": f"[{' '.join(entry.split())}]",
        "LLM_CATALOGUE_PATH": str(_local_model_catalogue(tmp_path, "openai-direct")),
        "ALLOWED_MODELS": f"{MODELS['openai']},local-llama",
        "LLM_DEFAULT_MODEL": MODELS["openai"],
        "LLM_ALLOW_PLAINTEXT": "true",
        "LLM_AUTH_DISABLED": "true",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings()

    plan = check_settings(settings)

    assert "Not done yet: several instances" not in text
    assert "One instance per provider kind" not in text
    assert {name: plan.instances[name].spec.kind for name in plan.needed} == {
        "openai": "openai",
        "openai-direct": "openai",
    }
    assert plan.instances["openai"].azure_endpoint == "https://my-resource.openai.azure.com"
    assert plan.instances["openai-direct"].base_url is None
