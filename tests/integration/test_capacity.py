"""Upstream capacity through gRPC: a model on several deployments (provider instances), the providers'
rate limits counted before sending (configured, or learned from their headers), a fair queue when every
deployment is full, and refusal with UPSTREAM_CAPACITY before anything is sent.

Each deployment is its own emulator (its own key, as a second organisation would be), so each emulator's
counters (`RateLimits.served`, `.refused`) say what reached that deployment and whether the provider would
have answered 429."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from server.core.ports import Offer
from server.emulators.gemini import GeminiEmulator
from server.emulators.openai import OpenAIEmulator
from server.emulators.ratelimits import RateLimits
from server.limits.capacity_redis import RedisCapacityStore
from tests.conftest import Emulators
from tests.helpers import details_of, user
from tests.integration.test_limits import RedisServer, redis_server, store  # noqa: F401 (fixtures)

SECOND_KEY = "sk-test-second-org-0123456789abcdef"
SECOND_GEMINI_KEY = "AIzaSecond0123456789abcdefghijklm"
MODEL = "gpt-5.4-mini"


@pytest.fixture
async def second_openai(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAIEmulator]:
    """Another OpenAI organisation: its own emulator and key."""
    emulator = OpenAIEmulator(api_key=SECOND_KEY)
    await emulator.start()
    monkeypatch.setenv("SECOND_OPENAI_KEY", SECOND_KEY)
    yield emulator
    await emulator.stop()


def _two_openai(second: OpenAIEmulator, first: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    providers = [
        {
            "name": "openai-b",
            "kind": "openai",
            "base_url": second.base_url,
            "api_key_env": "SECOND_OPENAI_KEY",
        }
    ]
    deployments = {MODEL: [{"provider": "openai", **first}, {"provider": "openai-b", **other}]}
    return {"llm_providers": json.dumps(providers), "llm_deployments": json.dumps(deployments)}


def _posts(emulator: OpenAIEmulator) -> list[Any]:
    return [r for r in emulator.requests if r.method == "POST"]


async def _complete(
    app: App, text: str = "hi", agent: str = "agent-a", timeout: float = 10, max_tokens: int = 50
) -> llm_pb2.CompleteResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        reply: llm_pb2.CompleteResponse = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODEL, messages=user(text), max_tokens=max_tokens),
            metadata=(("a2a-source-agent", agent),),
            timeout=timeout,
        )
        return reply


def _last_user_text(body: dict[str, Any]) -> str:
    """The last message's text of a request body, on either OpenAI wire API (Chat Completions
    `messages`, the Responses API's `input`; content a string or a list of text parts)."""
    content = (body.get("messages") or body["input"])[-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


async def _refused(app: App, **kwargs: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _complete(app, **kwargs)
    return caught.value


async def test_calls_spread_over_deployments_and_name_the_instance_that_served(
    start_gateway: Callable[..., Any], emulators: Emulators, second_openai: OpenAIEmulator
) -> None:
    limits = {"requests_per_minute": 3}
    app: App = await start_gateway(**_two_openai(second_openai, limits, limits))

    served = [await _complete(app) for _ in range(6)]

    # Least loaded first: the two deployments take turns.
    assert sorted(r.provider for r in served) == ["openai"] * 3 + ["openai-b"] * 3
    assert all(r.content == "emulator reply: hi" for r in served)
    assert len(emulators.completions("openai")) == 3
    assert len(_posts(second_openai)) == 3
    requests = app.metrics.registry.get_sample_value(
        "llm_requests_total",
        {"provider": "openai-b", "model": MODEL, "method": "Complete", "status": "OK"},
    )
    assert requests == 3


async def test_weights_share_the_calls_while_both_have_headroom(
    start_gateway: Callable[..., Any], emulators: Emulators, second_openai: OpenAIEmulator
) -> None:
    app: App = await start_gateway(
        **_two_openai(
            second_openai,
            {"weight": 3, "requests_per_minute": 6},
            {"weight": 1, "requests_per_minute": 6},
        )
    )

    served = [(await _complete(app)).provider for _ in range(8)]

    # Headroom times weight: the heavier deployment takes the first four calls, until its headroom
    # (a third) times 3 no longer beats the other's; then they share.
    assert served[:4] == ["openai"] * 4
    assert served.count("openai") > served.count("openai-b") >= 2


async def test_every_deployment_full_refuses_before_sending_with_upstream_capacity(
    start_gateway: Callable[..., Any], emulators: Emulators, second_openai: OpenAIEmulator
) -> None:
    limits = {"requests_per_minute": 1}
    app: App = await start_gateway(**_two_openai(second_openai, limits, limits))
    await _complete(app)
    await _complete(app)

    # Capacity returns in a minute; the call has 5 s: refused at once, nothing sent.
    error = details_of(await _refused(app, timeout=5))

    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "UPSTREAM_CAPACITY"
    assert error.metadata["model"] == MODEL
    assert error.retry_delay is not None
    assert 55 < error.retry_delay <= 60  # the earliest reset: the bucket refills one request a minute
    assert len(emulators.completions("openai")) + len(_posts(second_openai)) == 2
    assert (
        app.metrics.registry.get_sample_value("llm_upstream_capacity_refusals_total", {"model": MODEL}) == 1
    )


async def test_limits_are_learned_from_the_providers_headers(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    second_openai: OpenAIEmulator,
    store: dict[str, Any],  # noqa: F811 (in process, and on a real redis-server)
) -> None:
    # Nothing configured: the first organisation allows 1 request a minute, and says so in its headers.
    emulators.openai.rate_limits = RateLimits(requests=1, tokens=100_000)
    app: App = await start_gateway(**_two_openai(second_openai, {"weight": 10}, {"weight": 1}) | store)

    first = await _complete(app)
    second = await _complete(app)

    assert first.provider == "openai"
    assert second.provider == "openai-b"  # the headers said the first had no request left
    assert emulators.openai.rate_limits.refused == 0
    states = {(s.provider): s for s in await app.gateway.capacity.states()}  # type: ignore[union-attr]
    assert states["openai"].limits[:2] == (1, 100_000)


async def test_a_429_cools_the_deployment_and_moves_the_call(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    monkeypatch: pytest.MonkeyPatch,
    store: dict[str, Any],  # noqa: F811 (in process, and on a real redis-server)
) -> None:
    # Gemini sends no rate-limit headers: a limit the gateway was not told of shows only as a 429.
    other = GeminiEmulator(api_key=SECOND_GEMINI_KEY)
    await other.start()
    monkeypatch.setenv("SECOND_GEMINI_KEY", SECOND_GEMINI_KEY)
    emulators.gemini.rate_limits = RateLimits(requests=1)
    model = "gemini-3.1-flash-lite"
    providers = [
        {"name": "gemini-b", "kind": "gemini", "base_url": other.base_url, "api_key_env": "SECOND_GEMINI_KEY"}
    ]
    deployments = {model: [{"provider": "gemini", "weight": 10}, {"provider": "gemini-b"}]}
    try:
        app: App = await start_gateway(
            llm_providers=json.dumps(providers), llm_deployments=json.dumps(deployments), **store
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = llm_pb2_grpc.LLMServiceStub(channel)
            replies = [
                await stub.Complete(llm_pb2.CompleteRequest(model=model, messages=user("hi")), timeout=10)
                for _ in range(3)
            ]
    finally:
        await other.stop()

    assert [r.provider for r in replies] == ["gemini", "gemini-b", "gemini-b"]
    assert emulators.gemini.rate_limits.refused == 1  # the one 429; then the deployment cooled down
    assert (
        app.metrics.registry.get_sample_value(
            "llm_upstream_rate_limited_total", {"model": model, "provider": "gemini"}
        )
        == 1
    )


async def test_the_queue_serves_callers_round_robin_and_caps_each_caller(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    # Room for two calls' reservations (prompt bound + max_tokens 400): the rest queue, and each settled
    # call (a few real tokens) gives back room for the next. Slow replies keep the first two in flight.
    deployments = {MODEL: [{"provider": "openai", "tokens_per_minute": 1000}]}
    app: App = await start_gateway(llm_deployments=json.dumps(deployments), llm_capacity_queue_per_caller=6)
    capacity = app.gateway.capacity
    assert capacity is not None

    async def call(agent: str, text: str) -> str:
        reply = await _complete(app, f"{text} [[emulate: token_delay_ms=20]]", agent, 60, 400)
        return reply.provider

    heavy = [asyncio.create_task(call("heavy", f"h{i}")) for i in range(8)]
    await capacity.queued(MODEL, 6)
    over_cap = details_of(await _refused(app, agent="heavy", timeout=60, max_tokens=400))
    light = [asyncio.create_task(call("light", f"l{i}")) for i in range(2)]
    await asyncio.gather(*heavy, *light)

    order = [_last_user_text(r.body).split()[0] for r in emulators.completions("openai")]
    assert over_cap.reason == "UPSTREAM_CAPACITY"
    assert len(order) == 10
    # FIFO alone would serve the light caller last (9th, 10th); the queue serves first the caller served
    # least lately: the light one, right after the two heavy calls that found room at once.
    assert {order[2], order[3]} == {"l0", "l1"}
    assert (
        app.metrics.registry.get_sample_value(
            "llm_upstream_queue_wait_seconds_count", {"model": MODEL, "outcome": "served"}
        )
        == 10  # two served at once (a wait of 0), eight from the queue
    )


async def test_replicas_share_one_deployments_limit_through_redis(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    second_openai: OpenAIEmulator,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    limits = {"requests_per_minute": 4}
    settings = _two_openai(second_openai, limits, limits) | {"llm_redis_url": redis_server.url}
    apps = [await start_gateway(**settings) for _ in range(3)]

    results = await asyncio.gather(
        *(_complete(apps[i % 3], timeout=5) for i in range(20)), return_exceptions=True
    )

    served = [r for r in results if isinstance(r, llm_pb2.CompleteResponse)]
    refused = [details_of(r).reason for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(served) == 8  # 4 a minute on each deployment, all replicas together
    assert refused == ["UPSTREAM_CAPACITY"] * 12
    assert len(emulators.completions("openai")) == len(_posts(second_openai)) == 4


async def test_redis_down_refuses_governed_calls_closed(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    second_openai: OpenAIEmulator,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    limits = {"requests_per_minute": 100}
    app: App = await start_gateway(
        **_two_openai(second_openai, limits, limits) | {"llm_redis_url": redis_server.url}
    )
    await _complete(app)

    redis_server.stop()
    down = details_of(await _refused(app))
    redis_server.start()
    after = await _complete(app)

    assert down.code == grpc.StatusCode.UNAVAILABLE
    assert down.reason == "CAPACITY_UNAVAILABLE"
    assert after.content == "emulator reply: hi"


async def test_streams_reserve_and_name_the_deployment_too(
    start_gateway: Callable[..., Any], emulators: Emulators, second_openai: OpenAIEmulator
) -> None:
    limits = {"requests_per_minute": 1}
    app: App = await start_gateway(**_two_openai(second_openai, limits, limits))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        request = llm_pb2.StreamRequest(model=MODEL, messages=user("a b"), max_tokens=20)
        done = [[e async for e in stub.Stream(request, timeout=10)][-1].done for _ in range(2)]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.Stream(request, timeout=5):
                pass

    assert sorted(d.provider for d in done) == ["openai", "openai-b"]
    assert details_of(refused.value).reason == "UPSTREAM_CAPACITY"


async def test_check_health_shows_each_deployments_limits_use_and_cooldown(
    start_gateway: Callable[..., Any], emulators: Emulators, second_openai: OpenAIEmulator
) -> None:
    app: App = await start_gateway(
        **_two_openai(
            second_openai,
            {"weight": 2, "requests_per_minute": 10, "tokens_per_minute": 10_000},
            {"input_tokens_per_minute": 5000, "output_tokens_per_minute": 1000},
        )
    )
    await _complete(app)  # the most headroom times weight: the first deployment
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        health = await llm_pb2_grpc.LLMServiceStub(channel).CheckHealth(
            llm_pb2.CheckHealthRequest(), timeout=10
        )

    by_provider = {d.provider: d for d in health.deployments}
    first, second = by_provider["openai"], by_provider["openai-b"]
    assert first.model == second.model == MODEL
    assert {(x.kind, x.limit, x.used) for x in first.limits} >= {("requests", 10, 1)}
    assert {x.kind for x in first.limits} == {"requests", "tokens"}
    assert {(x.kind, x.limit, x.used) for x in second.limits} == {
        ("input_tokens", 5000, 0),
        ("output_tokens", 1000, 0),
    }
    assert first.cooldown_seconds == second.cooldown_seconds == 0
    assert (
        app.metrics.registry.get_sample_value(
            "llm_upstream_capacity_limit", {"model": MODEL, "provider": "openai", "limit": "requests"}
        )
        == 10
    )


async def test_without_deployments_the_gateway_counts_no_capacity(
    start_gateway: Callable[..., Any],
) -> None:
    app: App = await start_gateway()

    reply = await _complete(app)

    assert app.gateway.capacity is None
    assert reply.provider == "openai"


async def test_a_model_out_of_capacity_fails_over_to_the_operators_fallback(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(
        llm_deployments=json.dumps({MODEL: [{"provider": "openai", "requests_per_minute": 1}]}),
        llm_fallbacks={MODEL: ["claude-haiku-4-5"]},
    )

    first = await _complete(app)
    second = await _complete(app)

    assert (first.provider, first.model) == ("openai", MODEL)
    assert (second.provider, second.model) == ("anthropic", "claude-haiku-4-5")
    assert len(emulators.completions("openai")) == 1


async def test_a_burst_on_limits_only_the_headers_tell_meets_no_429(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    # Nothing configured: one call probes the deployment, its answer's headers say 3 a minute, and the
    # rest of the burst is counted against that (no call is sent before the probe's answer).
    emulators.openai.rate_limits = RateLimits(requests=3)
    app: App = await start_gateway(llm_deployments=json.dumps({MODEL: [{"provider": "openai"}]}))

    results = await asyncio.gather(
        *(_complete(app, f"call {i}", timeout=5) for i in range(10)), return_exceptions=True
    )

    served = [r for r in results if isinstance(r, llm_pb2.CompleteResponse)]
    refused = {details_of(r).reason for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert emulators.openai.rate_limits.refused == 0
    assert len(served) == 3
    assert refused == {"UPSTREAM_CAPACITY"}


async def test_a_5xx_is_retried_with_a_fresh_reservation(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await start_gateway(
        llm_deployments=json.dumps({MODEL: [{"provider": "openai", "requests_per_minute": 2}]})
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        served = await stub.Complete(
            llm_pb2.CompleteRequest(model=MODEL, messages=user("x [[emulate: status=503 times=1]]")),
            metadata=(("a2a-trace-id", "retry-once"),),
            timeout=10,
        )
        # The failed attempt was sent, so it counts: the limit of 2 is used up.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Complete(llm_pb2.CompleteRequest(model=MODEL, messages=user("y")), timeout=5)

    assert served.content == "emulator reply: x"
    assert len(emulators.completions("openai")) == 2
    assert details_of(refused.value).reason == "UPSTREAM_CAPACITY"


async def test_a_token_limit_shared_by_replicas_meets_no_429(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # 1000 tokens a minute at the provider and in the configuration: each call reserves its prompt's bound
    # and max_tokens 100, and settles to the few tokens it really used, so more calls fit than the
    # reservations alone would allow, and none over what the provider counts.
    emulators.openai.rate_limits = RateLimits(tokens=1000)
    deployments = {MODEL: [{"provider": "openai", "tokens_per_minute": 1000}]}
    settings = {"llm_deployments": json.dumps(deployments), "llm_redis_url": redis_server.url}
    apps = [await start_gateway(**settings) for _ in range(3)]

    results = await asyncio.gather(
        *(_complete(apps[i % 3], f"call {i}", timeout=5, max_tokens=100) for i in range(40)),
        return_exceptions=True,
    )

    served = [r for r in results if isinstance(r, llm_pb2.CompleteResponse)]
    refused = {details_of(r).reason for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert emulators.openai.rate_limits.refused == 0
    assert len(served) == emulators.openai.rate_limits.served >= 8
    assert refused <= {"UPSTREAM_CAPACITY"}


async def test_a_dead_replicas_reservations_return_within_the_minute(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # A replica reserves the whole limit and dies without settling: nothing needs to clean up after it.
    shared = RedisCapacityStore.from_url(redis_server.url, 1.0)
    offer = Offer("llm:cap:{m}:p", 1.0, (3, 0, 0, 0))
    try:
        taken = [await shared.take([offer], (1, 0, 0, 0), 1000.0) for _ in range(3)]
        full = await shared.take([offer], (1, 0, 0, 0), 1000.0)
        later = await shared.take([offer], (1, 0, 0, 0), 1060.0)
    finally:
        await shared.aclose()

    assert [index for index, _ in taken] == [0, 0, 0]
    assert full[0] is None
    assert full[1] == pytest.approx(20.0)
    assert later == (0, 0.0)


async def test_anthropic_input_and_output_token_limits_are_counted_apart(
    start_gateway: Callable[..., Any], emulators: Emulators
) -> None:
    # Output tokens per minute are the tight limit: max_tokens 100 against 500 a minute.
    emulators.anthropic.rate_limits = RateLimits(input_tokens=10_000, output_tokens=500)
    model = "claude-haiku-4-5"
    deployments = {
        model: [{"provider": "anthropic", "input_tokens_per_minute": 10_000, "output_tokens_per_minute": 500}]
    }
    app: App = await start_gateway(llm_deployments=json.dumps(deployments))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        results = await asyncio.gather(
            *(
                stub.Complete(
                    llm_pb2.CompleteRequest(model=model, messages=user(f"call {i}"), max_tokens=100),
                    timeout=5,
                )
                for i in range(20)
            ),
            return_exceptions=True,
        )

    served = [r for r in results if isinstance(r, llm_pb2.CompleteResponse)]
    refused = {details_of(r).reason for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert emulators.anthropic.rate_limits.refused == 0
    assert len(served) >= 5  # each settles to the few tokens it produced, giving room back
    assert refused <= {"UPSTREAM_CAPACITY"}
