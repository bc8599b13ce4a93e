"""Property-based fuzzing of caller JSON Schemas through the running server (a real `--demo` process):
recursive schemas with `$ref`s (local, missing, remote, relative to a remote `$id`), `anyOf` / `allOf` /
`oneOf` / `not`, backtracking `pattern`s and 2^N bombs, as a response format and as tool parameters.

Whatever the schema, the call ends within its deadline (a frozen server misses it: DEADLINE_EXCEEDED),
with OK or INVALID_ARGUMENT, and the gateway opens no connection to the URL the schema names (a listener
on loopback counts them). `make test` runs a short campaign; `make fuzz` a long one (FUZZ_EXAMPLES).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.helpers import CountingListener
from tests.integration.test_fuzz import EXAMPLES, _server

CALL_DEADLINE = 20.0
"""Seconds a call may take: the answer check's wait (2 s) and the emulator's reply, with room for a busy
machine. A check that held the event loop would miss it."""
REMOTE = "http://remote.invalid"
"""Replaced by the counting listener's URL in each generated schema."""
PATTERNS = ["^(a+)+$", "(a|aa)+$", "(x+x+)+y", "^(\\w+\\s?)*$", "[a-z]*", "^\\d{3}$", "(?:(?:a*)*)*b"]
ANSWERS = [
    '{"x":0}',
    '{"x":"' + "a" * 40 + '!"}',
    '{"x":{"a":0,"b":{"a":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!"}}}',
    '{"x":true}',
    '{"x":null,"y":1}',
    "not json",
]
"""Model answers (the emulators' reply directive; no `]`, which would end it)."""

LEAF = st.one_of(
    st.sampled_from([{"type": "integer"}, {"type": "string"}, {"type": "object"}, {}]),
    st.sampled_from(PATTERNS).map(lambda p: {"type": "string", "pattern": p}),
    st.sampled_from(
        [
            {"$ref": "#"},
            {"$ref": "#/$defs/d0"},
            {"$ref": "#/$defs/d1"},
            {"$ref": "#/$defs/missing"},
            {"$ref": f"{REMOTE}/internal/secret.json"},
            {"$ref": "secret.json"},
            {"$ref": f"{REMOTE}/root.json#/$defs/d0"},
        ]
    ),
    st.integers(-2, 2).map(lambda v: {"const": v}),
)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    many = st.lists(children, min_size=1, max_size=4)
    return st.one_of(
        many.map(lambda xs: {"anyOf": xs}),
        many.map(lambda xs: {"allOf": xs}),
        many.map(lambda xs: {"oneOf": xs}),
        children.map(lambda c: {"not": c}),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3).map(
            lambda d: {"type": "object", "properties": d}
        ),
        children.map(lambda c: {"type": "object", "additionalProperties": c}),
        children.map(lambda c: {"type": "array", "items": c}),
    )


SUBSCHEMA = st.recursive(LEAF, _compound, max_leaves=24)


def _bomb(levels: int) -> dict[str, Any]:
    defs: dict[str, Any] = {"d0": {"type": "integer", "not": {"const": 0}}}
    for level in range(1, levels + 1):
        below = {"$ref": f"#/$defs/d{level - 1}"}
        defs[f"d{level}"] = {"anyOf": [below, below]}
    return {"type": "object", "properties": {"x": {"$ref": f"#/$defs/d{levels}"}}, "$defs": defs}


SCHEMA = st.one_of(
    st.builds(
        lambda x, defs, remote_id, dialect: {
            "type": "object",
            "properties": {"x": x},
            "$defs": defs,
            **({"$id": f"{REMOTE}/root.json"} if remote_id else {}),
            **({"$schema": dialect} if dialect else {}),
        },
        SUBSCHEMA,
        st.dictionaries(st.sampled_from(["d0", "d1", "d2"]), SUBSCHEMA, max_size=3),
        st.booleans(),
        st.sampled_from(
            [
                "",
                f"{REMOTE}/meta.json",
                "https://json-schema.org/draft/2020-12/schema",
                "http://json-schema.org/draft-07/schema#",
            ]
        ),
    ),
    st.integers(1, 30).map(_bomb),
)


@pytest.fixture(scope="module")
def listener() -> Iterator[CountingListener]:
    with CountingListener() as counting:
        yield counting


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[llm_pb2_grpc.LLMServiceStub]:
    for channel in _server(tmp_path_factory.mktemp("fuzz-schemas") / "server.log", "--demo"):
        yield llm_pb2_grpc.LLMServiceStub(channel)


def _request(schema_json: str, answer: str, as_tool: bool) -> llm_pb2.CompleteRequest:
    text = f"answer [[emulate: reply='{answer}' no_tool=1]]"
    request = llm_pb2.CompleteRequest(
        model="gpt-5.4-mini", messages=[llm_pb2.Message(role=llm_pb2.ROLE_USER, content=text)]
    )
    if as_tool:
        request.tools.add(name="lookup", parameters_json=schema_json)
    else:
        request.response_format.CopyFrom(
            llm_pb2.ResponseFormat(
                type=llm_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, name="answer", schema_json=schema_json
            )
        )
    return request


@settings(
    max_examples=max(20, EXAMPLES // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schema=SCHEMA, answer=st.sampled_from(ANSWERS), as_tool=st.booleans())
def test_no_schema_freezes_the_server_or_reaches_the_network(
    stub: llm_pb2_grpc.LLMServiceStub,
    listener: CountingListener,
    schema: dict[str, Any],
    answer: str,
    as_tool: bool,
) -> None:
    schema_json = json.dumps(schema).replace(REMOTE, listener.url)
    try:
        response = stub.Complete(_request(schema_json, answer, as_tool), timeout=CALL_DEADLINE)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
        response = None

    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, schema_json[:500])
    assert listener.connections == 0, schema_json[:500]
    if response is not None and response.HasField("structured_output"):
        assert "LEAKED" not in response.structured_output.error
