"""Reservations bound the bill (issue #23 attack 3, issue #22 item 5): a call reserves the most it can be
billed (cache writes, the long-prompt tier, every byte the caller sent), so racing calls never end with
a budget's `used` past its `limit`, on the in-process store and on a real redis-server."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from server.config import DEFAULT_ALLOWED_MODELS
from tests.conftest import MODELS, SAMPLING_MODELS
from tests.helpers import details_of, user
from tests.integration.test_limits import FakeClock, RedisServer

HAIKU = "claude-haiku-4-5"
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF"
ALLOWED = ",".join(dict.fromkeys((*DEFAULT_ALLOWED_MODELS, SAMPLING_MODELS["openai"], "gpt-5.4", HAIKU)))
PROPERTY_EXAMPLES = int(os.environ.get("RESERVATION_EXAMPLES", "6"))


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "memory":
        yield {}
        return
    server = RedisServer()
    server.start()
    yield {"llm_redis_url": server.url}
    server.close()


@pytest.fixture
def limited(start_gateway: Callable[..., Any], store: dict[str, Any], tmp_path: Path) -> Callable[..., Any]:
    async def start(policy: dict[str, Any], **settings: Any) -> App:
        path = tmp_path / "limits.json"
        path.write_text(json.dumps(policy))
        app: App = await start_gateway(clock=FakeClock(), llm_limits_file=path, **store, **settings)
        return app

    return start


def words(count: int, salt: str) -> str:
    """`count` emulator tokens (one per word) in about 2 bytes each."""
    return f"{salt} " + "a " * (count - 1)


async def used_usd(stub: llm_pb2_grpc.LLMServiceAsyncStub, agent: str) -> tuple[float, float]:
    quota = await stub.GetQuota(
        llm_pb2.GetQuotaRequest(), metadata=(("a2a-source-agent", agent),), timeout=10
    )
    (budget,) = [q for q in quota.quotas if q.kind == llm_pb2.QUOTA_KIND_USD_PER_DAY]
    return budget.used, budget.limit


async def settled(calls: list[Any]) -> tuple[list[Any], list[grpc.aio.AioRpcError]]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    served = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(served) + len(refused) == len(results), [r for r in results if isinstance(r, BaseException)]
    return served, refused


# --- the scenario ---------------------------------------------------------------------------


async def test_four_racing_cache_writing_calls_never_overspend_the_budget(
    limited: Callable[..., Any],
) -> None:
    """The issue's numbers: each call's prompt bound is clamped to Haiku's 200K window; at the input
    price that reserved $0.20 a call (four fit in $0.85), but each was billed $0.2375 as a cache write."""
    app: App = await limited({"default": {"usd_per_day": 0.85}}, llm_max_request_bytes=4 << 20)

    async def call(index: int) -> Any:
        # The reply waits 2 s before its one token, so that all four reserve before any settles.
        text = words(190_000, f"doc{index}") + " [[emulate: token_delay_ms=2000]]"
        message = llm_pb2.Message(role=llm_pb2.ROLE_USER, content=text, cache_breakpoint=True)
        request = llm_pb2.StreamRequest(model=HAIKU, messages=[message], max_tokens=1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stream = llm_pb2_grpc.LLMServiceStub(channel).Stream(
                request, metadata=(("a2a-source-agent", "agent-a"),), timeout=60
            )
            return [event async for event in stream][-1].done

    served, refused = await settled([call(i) for i in range(4)])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        used, limit = await used_usd(llm_pb2_grpc.LLMServiceStub(channel), "agent-a")

    assert served, "no call was served"
    assert all(done.usage.cache_write_tokens > 0 for done in served)  # each was billed as a cache write
    assert {details_of(e).reason for e in refused} == {"BUDGET_EXCEEDED"}
    assert used <= limit
    assert used == pytest.approx(sum(done.cost_usd for done in served), abs=len(served) * 1e-6)


# --- every byte counts ---------------------------------------------------------------------------


def _document(title: str) -> llm_pb2.Message:
    part = llm_pb2.ContentPart(document=llm_pb2.Document(data=PDF, mime_type="application/pdf", title=title))
    return llm_pb2.Message(role=llm_pb2.ROLE_USER, parts=[llm_pb2.ContentPart(text="read it"), part])


def _signed_call(signature: bytes) -> list[llm_pb2.Message]:
    call = llm_pb2.ToolCall(id="call_1", name="lookup", arguments_json="{}", signature=signature)
    return [
        llm_pb2.Message(role=llm_pb2.ROLE_USER, content="look it up"),
        llm_pb2.Message(role=llm_pb2.ROLE_ASSISTANT, tool_calls=[call]),
        llm_pb2.Message(role=llm_pb2.ROLE_TOOL, tool_call_id="call_1", content="42"),
    ]


def _image_url(url: str) -> list[llm_pb2.Message]:
    image = llm_pb2.ContentPart(image=llm_pb2.Image(url=url, mime_type="image/png"))
    return [llm_pb2.Message(role=llm_pb2.ROLE_USER, parts=[llm_pb2.ContentPart(text="see"), image])]


BIG = 3 * 1024 * 1024
OVERSIZED = {
    "document_title": ([_document("t" * BIG)], "messages"),
    "tool_call_signature": (_signed_call(b"s" * BIG), "messages"),
    "image_url": (_image_url("https://example.com/" + "u" * BIG), "messages"),
}


@pytest.mark.parametrize("field", sorted(OVERSIZED))
async def test_every_field_counts_toward_the_request_size_limit(
    start_gateway: Callable[..., Any], field: str
) -> None:
    app: App = await start_gateway()
    messages, violation = OVERSIZED[field]
    request = llm_pb2.CompleteRequest(model=HAIKU, messages=messages)
    if field == "tool_call_signature":
        request.tools.add(name="lookup")

    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{app.port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(request, timeout=30)

    details = details_of(caught.value)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "request content is" in details.violations[violation]


@pytest.mark.parametrize(
    "messages",
    [[_document("t" * 300_000)], _signed_call(b"s" * 300_000)],
    ids=["document_title", "tool_call_signature"],
)
async def test_every_field_counts_toward_the_reserved_tokens(
    limited: Callable[..., Any], messages: list[llm_pb2.Message]
) -> None:
    app: App = await limited({"default": {"tokens_per_minute": 200_000}})
    request = llm_pb2.CompleteRequest(model=HAIKU, messages=messages, max_tokens=16)
    if messages[-1].role == llm_pb2.ROLE_TOOL:
        request.tools.add(name="lookup")

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                request, metadata=(("a2a-source-agent", "agent-a"),), timeout=30
            )

    details = details_of(caught.value)
    assert details.reason == "TOKEN_RATE_LIMIT_EXCEEDED"
    assert "this call's worst case" in details.message


# --- long-prompt price tiers -------------------------------------------------------------------------


async def test_list_models_shows_the_long_prompt_tiers(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    models = {m.id: m for m in (await stub.ListModels(llm_pb2.ListModelsRequest(), timeout=10)).models}

    tier = models["gpt-5.4"].long_prompt
    assert (tier.above_prompt_tokens, tier.input_usd_per_million, tier.output_usd_per_million) == (
        272_000,
        5.00,
        22.50,
    )
    assert tier.cached_input_usd_per_million == 0.50
    pro = models["gemini-3.1-pro-preview"].long_prompt
    assert (pro.above_prompt_tokens, pro.input_usd_per_million, pro.output_usd_per_million) == (
        200_000,
        4.00,
        18.00,
    )
    assert not models[HAIKU].HasField("long_prompt")


async def test_a_prompt_past_the_threshold_is_priced_at_the_tier_for_the_whole_call(
    start_gateway: Callable[..., Any],
) -> None:
    app: App = await start_gateway(llm_max_request_bytes=4 << 20, allowed_models=ALLOWED)
    request = llm_pb2.CompleteRequest(model="gpt-5.4", messages=user(words(280_000, "long")), max_tokens=16)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        response = await llm_pb2_grpc.LLMServiceStub(channel).Complete(request, timeout=60)

    usage = response.usage
    assert usage.prompt_tokens > 272_000
    expected = (usage.prompt_tokens * 5.00 + usage.completion_tokens * 22.50) / 1e6
    assert response.cost_usd == pytest.approx(expected)


async def test_a_prompt_below_the_threshold_keeps_the_standard_price(
    start_gateway: Callable[..., Any],
) -> None:
    app: App = await start_gateway(allowed_models=ALLOWED)
    request = llm_pb2.CompleteRequest(model="gpt-5.4", messages=user("short question"), max_tokens=16)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        response = await llm_pb2_grpc.LLMServiceStub(channel).Complete(request, timeout=30)

    usage = response.usage
    assert response.cost_usd == pytest.approx(
        (usage.prompt_tokens * 2.50 + usage.completion_tokens * 15.0) / 1e6
    )


async def test_a_reservation_prices_a_long_prompt_bound_at_the_tier(limited: Callable[..., Any]) -> None:
    # 600K bytes of prompt may be 600K tokens: $3.00 at the tier's $5, $1.50 at the standard $2.50.
    app: App = await limited(
        {"default": {"usd_per_day": 2.0}}, llm_max_request_bytes=4 << 20, allowed_models=ALLOWED
    )
    request = llm_pb2.CompleteRequest(model="gpt-5.4", messages=user(words(300_000, "long")), max_tokens=16)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                request, metadata=(("a2a-source-agent", "agent-a"),), timeout=60
            )

    details = details_of(caught.value)
    assert details.reason == "BUDGET_EXCEEDED"
    assert "this call's worst case ($3.0" in details.message


# --- the property: racing calls never end past the budget -----------------------------------------


CALL = st.fixed_dictionaries(
    {
        "model": st.sampled_from([HAIKU, MODELS["openai"], MODELS["gemini"], "gpt-5.4"]),
        "tokens": st.sampled_from([5, 2_000, 60_000, 190_000]),
        "max_tokens": st.sampled_from([16, 200]),
        "cache": st.booleans(),
        "stream": st.booleans(),
        "title": st.sampled_from(["", "t" * 20_000]),
    }
)
_agents = itertools.count()


async def _one_call(stub: llm_pb2_grpc.LLMServiceAsyncStub, agent: str, spec: dict[str, Any]) -> float:
    parts = [llm_pb2.ContentPart(text=words(spec["tokens"], f"{agent}-{time.monotonic_ns()}"))]
    if spec["title"]:
        parts.append(
            llm_pb2.ContentPart(
                document=llm_pb2.Document(data=PDF, mime_type="application/pdf", title=spec["title"])
            )
        )
    message = llm_pb2.Message(role=llm_pb2.ROLE_USER, parts=parts, cache_breakpoint=spec["cache"])
    metadata = (("a2a-source-agent", agent),)
    if spec["stream"]:
        request = llm_pb2.StreamRequest(
            model=spec["model"], messages=[message], max_tokens=spec["max_tokens"]
        )
        events = [e async for e in stub.Stream(request, metadata=metadata, timeout=60)]
        return float(events[-1].done.cost_usd)
    unary = llm_pb2.CompleteRequest(model=spec["model"], messages=[message], max_tokens=spec["max_tokens"])
    return float((await stub.Complete(unary, metadata=metadata, timeout=60)).cost_usd)


async def test_racing_calls_of_any_mix_never_end_past_the_budget(limited: Callable[..., Any]) -> None:
    app: App = await limited(
        {"default": {"usd_per_day": 0.85}},
        llm_max_request_bytes=4 << 20,
        allowed_models=ALLOWED,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)

        @settings(
            max_examples=PROPERTY_EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(calls=st.lists(CALL, min_size=2, max_size=8))
        def run(calls: list[dict[str, Any]]) -> None:
            agent = f"agent-{next(_agents)}"  # a fresh budget per example
            future = asyncio.run_coroutine_threadsafe(check(agent, calls), loop)
            future.result(timeout=300)

        async def check(agent: str, calls: list[dict[str, Any]]) -> None:
            served, refused = await settled([_one_call(stub, agent, spec) for spec in calls])
            used, limit = await used_usd(stub, agent)
            assert {details_of(e).reason for e in refused} <= {"BUDGET_EXCEEDED"}
            assert used <= limit + 1e-9
            assert sum(served) <= limit + 1e-9

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(run)
