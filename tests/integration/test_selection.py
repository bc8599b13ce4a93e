"""Model selection by tier and complexity, per-call cost, the context guard and the catalogue."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App, ConfigError, build_app
from server.config import load_catalogue
from server.core.catalogue import Tier
from server.core.errors import NoModelFits
from tests.conftest import MODELS, Emulators, make_settings
from tests.helpers import details_of, user

# The cheapest allowed model of each tier under the default allowlist and catalogue, pricing a typical
# call as three prompt tokens per completion token.
CHEAPEST = {
    llm_pb2.TIER_FAST: ("gemini-3.1-flash-lite", "gemini"),
    llm_pb2.TIER_BALANCED: ("gemini-3.5-flash", "gemini"),
    llm_pb2.TIER_PREMIUM: ("gemini-3.1-pro-preview", "gemini"),
}
COMPLEXITY_TIER = {
    llm_pb2.COMPLEXITY_SIMPLE: llm_pb2.TIER_FAST,
    llm_pb2.COMPLEXITY_MODERATE: llm_pb2.TIER_BALANCED,
    llm_pb2.COMPLEXITY_COMPLEX: llm_pb2.TIER_PREMIUM,
}


@pytest.mark.parametrize("tier", list(CHEAPEST))
async def test_select_model_by_tier_returns_the_cheapest_allowed_model(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, tier: llm_pb2.Tier.ValueType
) -> None:
    response = await stub.SelectModel(llm_pb2.SelectModelRequest(tier=tier), timeout=10)

    assert (response.model, response.provider) == CHEAPEST[tier]
    assert response.tier == tier
    assert response.reason


@pytest.mark.parametrize("complexity", list(COMPLEXITY_TIER))
async def test_select_model_by_complexity_maps_to_its_tier(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, complexity: llm_pb2.Complexity.ValueType
) -> None:
    response = await stub.SelectModel(llm_pb2.SelectModelRequest(complexity=complexity), timeout=10)

    assert response.tier == COMPLEXITY_TIER[complexity]
    assert (response.model, response.provider) == CHEAPEST[COMPLEXITY_TIER[complexity]]


async def test_select_model_without_tier_or_complexity_is_invalid(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SelectModel(llm_pb2.SelectModelRequest(), timeout=10)

    assert details_of(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT


async def test_tier_with_no_allowed_model_is_failed_precondition(start_gateway: Callable[..., Any]) -> None:
    app: App = await start_gateway(allowed_models="gpt-5.4-mini", llm_default_model="gpt-5.4-mini")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).SelectModel(
                llm_pb2.SelectModelRequest(tier=llm_pb2.TIER_PREMIUM), timeout=10
            )

    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.reason == "NO_MODEL_FOR_TIER"
    assert "premium" in details.message


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
async def test_complete_and_stream_route_by_tier_when_no_model_is_named(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, streamed: bool
) -> None:
    if streamed:
        events = [
            e
            async for e in stub.Stream(
                llm_pb2.StreamRequest(messages=user("hi"), tier=llm_pb2.TIER_PREMIUM), timeout=10
            )
        ]
        served = (events[-1].done.model, events[-1].done.provider)
    else:
        response = await stub.Complete(
            llm_pb2.CompleteRequest(messages=user("hi"), complexity=llm_pb2.COMPLEXITY_SIMPLE), timeout=10
        )
        served = (response.model, response.provider)

    assert served == (CHEAPEST[llm_pb2.TIER_PREMIUM] if streamed else CHEAPEST[llm_pb2.TIER_FAST])


async def test_explicit_model_wins_over_tier(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS["anthropic"], messages=user("hi"), tier=llm_pb2.TIER_PREMIUM),
        timeout=10,
    )

    assert response.model == MODELS["anthropic"]


async def test_unknown_tier_is_invalid(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(llm_pb2.CompleteRequest(messages=user("hi"), tier=42), timeout=10)  # type: ignore[arg-type]

    assert "tier" in details_of(caught.value).violations


async def test_complete_reports_cost_from_usage_and_catalogue(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    response = await stub.Complete(
        llm_pb2.CompleteRequest(model="gpt-5.4-mini", messages=user("a b c")), timeout=10
    )

    # 3 prompt tokens at $0.75/M + 5 completion tokens at $4.50/M
    assert response.cost_usd == pytest.approx((3 * 0.75 + 5 * 4.50) / 1e6)


async def test_stream_done_reports_cost(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    events = [
        e
        async for e in stub.Stream(
            llm_pb2.StreamRequest(model="claude-haiku-4-5", messages=user("a b")), timeout=10
        )
    ]

    # 2 prompt tokens at $1.00/M + 4 completion tokens at $5.00/M
    assert events[-1].done.cost_usd == pytest.approx((2 * 1.00 + 4 * 5.00) / 1e6)


async def test_get_metrics_reports_cost_per_provider_and_model(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    await stub.Complete(llm_pb2.CompleteRequest(model="gpt-5.4-mini", messages=user("a b c")), timeout=10)
    await stub.Complete(llm_pb2.CompleteRequest(model="gpt-5.4", messages=user("a b c")), timeout=10)

    response = await stub.GetMetrics(llm_pb2.GetMetricsRequest(), timeout=10)

    mini, full = (3 * 0.75 + 5 * 4.50) / 1e6, (3 * 2.50 + 5 * 15.00) / 1e6
    assert response.total_cost_usd == pytest.approx(mini + full)
    assert {p.provider: p.cost_usd for p in response.providers}["openai"] == pytest.approx(mini + full)
    by_model = {m.model: m for m in response.models}
    assert by_model["gpt-5.4-mini"].cost_usd == pytest.approx(mini)
    assert by_model["gpt-5.4"].cost_usd == pytest.approx(full)
    assert by_model["gpt-5.4"].provider == "openai"


async def test_list_models_carries_catalogue_facts(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    response = await stub.ListModels(llm_pb2.ListModelsRequest(), timeout=10)

    haiku = {m.id: m for m in response.models}["claude-haiku-4-5"]
    assert haiku.tier == llm_pb2.TIER_FAST
    assert haiku.max_output_tokens == 64000
    assert haiku.context_window == 200000
    assert (haiku.input_usd_per_million, haiku.output_usd_per_million) == (1.00, 5.00)
    assert haiku.cached_input_usd_per_million == pytest.approx(0.10)
    assert haiku.cache_write_usd_per_million == pytest.approx(1.25)
    assert haiku.capabilities.reasoning
    assert haiku.capabilities.stop_sequences
    assert not haiku.capabilities.temperature
    assert not haiku.deprecated


async def test_max_tokens_above_the_models_output_limit_is_refused_before_the_provider(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            llm_pb2.CompleteRequest(model="claude-haiku-4-5", messages=user("hi"), max_tokens=64001),
            timeout=10,
        )

    details = details_of(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "64000" in details.violations["max_tokens"]
    assert emulators.completions("anthropic") == []


# --- the catalogue file --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "[models.x]\nprovider='openai'\ntier='huge'\ncontext_window=1\nmax_output_tokens=1\ninput=1\noutput=1",
            "tier",
        ),
        (
            "[models.x]\nprovider='openai'\ntier='fast'\ncontext_window=1\nmax_output_tokens=1\ninput=-1\noutput=1",
            "input",
        ),
        (
            "[models.x]\nprovider='openai'\ntier='fast'\ncontext_window=1\nmax_output_tokens=5\ninput=1\noutput=1",
            "context_window",
        ),
        ("[models.x]\nprovider='openai'\ntier='fast'", "context_window"),
        ("models = [", "not valid TOML"),
    ],
)
def test_invalid_catalogue_is_refused_naming_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(content)

    with pytest.raises(ValueError, match=problem):
        load_catalogue(path)


def test_allowed_model_missing_from_the_catalogue_stops_the_start(
    emulators: Emulators, tmp_path: Path
) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(
        "[models.'gpt-5.4-mini']\nprovider='openai'\ntier='fast'\ncontext_window=10\nmax_output_tokens=5\n"
        "input=1\noutput=1\n"
    )
    settings = make_settings(
        emulators, allowed_models="gpt-5.4-mini,gpt-9-unlisted", llm_catalogue_path=str(path)
    )

    with pytest.raises(ConfigError, match=re.escape("'gpt-9-unlisted' is not in the model catalogue")):
        build_app(settings, port=0)


def test_allowed_model_of_an_unconfigured_provider_instance_stops_the_start(
    emulators: Emulators, tmp_path: Path
) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(
        "[models.'x-1']\nprovider='acme'\ntier='fast'\ncontext_window=10\nmax_output_tokens=5\n"
        "input=1\noutput=1\n"
    )
    settings = make_settings(emulators, allowed_models="gpt-5.4-mini,x-1", llm_catalogue_path=str(path))

    with pytest.raises(
        ConfigError, match=re.escape("'x-1' is served by provider 'acme', which is not configured")
    ):
        build_app(settings, port=0)


def test_selection_skips_models_whose_provider_is_not_configured() -> None:
    catalogue = load_catalogue(Path("server/catalogue.toml"))
    allowed = ["gemini-3.1-flash-lite", "gpt-5.4-mini", "claude-opus-4-7"]

    fast = catalogue.select(Tier.FAST, allowed, {"openai"})
    with pytest.raises(NoModelFits, match="no configured provider"):
        catalogue.select(Tier.PREMIUM, allowed, {"openai"})

    assert fast.model.id == "gpt-5.4-mini"
