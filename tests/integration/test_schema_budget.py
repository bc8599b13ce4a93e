"""A caller's JSON Schema never freezes the gateway nor makes it reach the network (issue #23, attacks 1
and 2 of docs/security.md): limits checked at request time, the answer check off the event loop within
a budget, no `$ref` ever fetched."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import MODELS
from tests.helpers import CountingListener, details_of, user

HEALTH_DEADLINE = 2.0
"""Seconds each health check may take: a blocked event loop misses it (the bomb below takes minutes on
the event loop without the budget)."""


def bomb(levels: int, root: str | None = None) -> dict[str, Any]:
    """The issue's schema: each level an `anyOf` of two `$ref`s to the level below, so checking an
    answer that fails at the bottom (0 is excluded there) doubles per level."""
    defs: dict[str, Any] = {"d0": {"type": "integer", "not": {"const": 0}}}
    for level in range(1, levels + 1):
        below = {"$ref": f"#/$defs/d{level - 1}"}
        defs[f"d{level}"] = {"anyOf": [below, below]}
    x = root or f"#/$defs/d{levels}"
    return {"type": "object", "properties": {"x": {"$ref": x}}, "required": ["x"], "$defs": defs}


def costly() -> dict[str, Any]:
    """Inside every request-time limit (10 levels: some 3000 subschemas), costly on a long answer."""
    schema = bomb(10)
    schema["properties"]["x"] = {"type": "object", "additionalProperties": {"$ref": "#/$defs/d10"}}
    return schema


COSTLY_ANSWER = json.dumps({"x": {f"k{i}": 0 for i in range(400)}}, separators=(",", ":"))
"""No `]` in it: the emulators' directive ends at the first `]`."""


def schema_format(schema: dict[str, Any]) -> llm_pb2.ResponseFormat:
    return llm_pb2.ResponseFormat(
        type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="answer", schema_json=json.dumps(schema)
    )


def ask(schema: dict[str, Any], reply: str = "{}") -> llm_pb2.CompleteRequest:
    return llm_pb2.CompleteRequest(
        model=MODELS["openai"],
        messages=user(f"answer [[emulate: reply='{reply}']]"),
        response_format=schema_format(schema),
    )


async def refusal(stub: llm_pb2_grpc.LLMServiceAsyncStub, request: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(request, timeout=20)
    return details_of(caught.value)


async def test_the_issues_2_to_the_n_bomb_is_refused_naming_the_limit(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    details = await refusal(stub, ask(bomb(22), '{"x":0}'))

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "INVALID_REQUEST"
    assert details.metadata["limits"] == "max_ref_depth"
    assert "max_ref_depth" in details.violations["response_format.schema_json"]


async def test_a_schema_that_expands_past_the_limit_is_refused_naming_it(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    details = await refusal(stub, ask(bomb(15), '{"x":0}'))

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.metadata["limits"] == "max_schema_expansion"


@pytest.mark.parametrize(
    ("schema", "limit"),
    [
        ({"type": "object", "description": "x" * 200_000}, "max_schema_bytes"),
        ({"type": "object", "properties": {"a": json.loads("[" * 70 + "]" * 70)}}, "max_schema_depth"),
        (
            {
                "type": "object",
                "properties": {f"p{i}": {"$ref": "#/$defs/s"} for i in range(300)},
                "$defs": {"s": {"type": "string"}},
            },
            "max_schema_refs",
        ),
    ],
)
async def test_a_tool_schema_over_a_limit_is_refused_naming_it(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, schema: dict[str, Any], limit: str
) -> None:
    request = llm_pb2.CompleteRequest(
        model=MODELS["openai"],
        messages=user("hi"),
        tools=[llm_pb2.Tool(name="lookup", parameters_json=json.dumps(schema))],
    )

    details = await refusal(stub, request)

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.metadata["limits"] == limit
    assert limit in details.violations["tools[0].parameters_json"]


async def test_a_recursive_schema_stays_accepted_and_checked(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    tree = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "child": {"$ref": "#"}},
        "required": ["name"],
    }
    answer = '{"name":"a","child":{"name":"b","child":{"name":3}}}'

    response = await stub.Complete(ask(tree, answer), timeout=20)

    assert response.structured_output.error == "$.child.child.name: 3 is not of type 'string'"
    assert response.structured_output.unchecked_reason == ""


async def test_an_answer_check_past_its_budget_says_not_checked_while_health_checks_answer(
    gateway: App, stub: llm_pb2_grpc.LLMServiceAsyncStub, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    calls = [asyncio.ensure_future(stub.Complete(ask(costly(), COSTLY_ANSWER), timeout=60)) for _ in range(3)]
    answered = 0
    while not all(call.done() for call in calls):
        # Raises DEADLINE_EXCEEDED (failing the test) if the event loop is held past the deadline.
        status = await health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_DEADLINE)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        answered += 1

    for response in await asyncio.gather(*calls):
        verdict = response.structured_output
        assert not verdict.valid
        assert verdict.unchecked_reason in ("SCHEMA_CHECK_BUDGET_EXCEEDED", "SCHEMA_CHECK_TIMEOUT")
        assert verdict.error.startswith("not checked: ")
    assert answered > 0


async def test_a_streamed_answer_past_the_budget_says_not_checked_in_done(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    request = llm_pb2.StreamRequest(
        model=MODELS["openai"],
        messages=user(f"answer [[emulate: reply='{COSTLY_ANSWER}']]"),
        response_format=schema_format(costly()),
    )

    events = [event async for event in stub.Stream(request, timeout=60)]

    verdict = events[-1].done.structured_output
    assert verdict.unchecked_reason in ("SCHEMA_CHECK_BUDGET_EXCEEDED", "SCHEMA_CHECK_TIMEOUT")


@pytest.mark.parametrize("where", ["response_format", "tool"])
@pytest.mark.parametrize(
    "ref", ["{url}/internal/secret.json", "{url}/internal/secret.json#/const", "secret.json"]
)
async def test_a_remote_ref_is_refused_and_never_fetched(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, where: str, ref: str
) -> None:
    async with CountingListener() as listener:
        schema: dict[str, Any] = {
            "$id": f"{listener.url}/schemas/root.json",
            "type": "object",
            "properties": {"x": {"$ref": ref.format(url=listener.url)}},
            "required": ["x"],
        }
        if where == "tool":
            request = llm_pb2.CompleteRequest(
                model=MODELS["openai"],
                messages=user("hi"),
                tools=[llm_pb2.Tool(name="lookup", parameters_json=json.dumps(schema))],
            )
        else:
            request = ask(schema, '{"x":0}')

        details = await refusal(stub, request)

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.metadata["limits"] == "local_refs_only"
    assert listener.connections == 0
    assert "LEAKED" not in details.message


async def test_a_ref_to_an_id_inside_the_schema_resolves_without_the_network(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
) -> None:
    async with CountingListener() as listener:
        schema = {
            "$id": f"{listener.url}/schemas/root.json",
            "type": "object",
            "properties": {"x": {"$ref": f"{listener.url}/schemas/item.json"}},
            "required": ["x"],
            "$defs": {"item": {"$id": f"{listener.url}/schemas/item.json", "type": "string"}},
        }

        response = await stub.Complete(ask(schema, '{"x":0}'), timeout=20)

    assert response.structured_output.error == "$.x: 0 is not of type 'string'"
    assert listener.connections == 0
