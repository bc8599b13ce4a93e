"""A tool's schema is checked once per distinct text: its verdict is remembered (bounded), and a
remembered verdict is the same as a fresh one."""

from __future__ import annotations

import json

from server.core import validation
from server.core.types import Role
from server.core.validation import DraftMessage, DraftRequest, DraftTool, Limits, validate

LIMITS = Limits(
    max_request_bytes=100_000,
    max_messages=4,
    max_stop_sequences=2,
    max_stop_length=8,
    max_metadata_value_length=16,
)


def _violations(parameters_json: str) -> list[tuple[str, str]]:
    draft = DraftRequest(
        model="m",
        messages=[DraftMessage(Role.USER, "hello")],
        tools=[DraftTool("get_weather", "The weather.", parameters_json)],
    )
    return [(v.field, v.description) for v in validate(draft, LIMITS)]


def test_a_bad_schema_is_refused_alike_every_time() -> None:
    bad = json.dumps({"type": "object", "properties": {"city": {"type": "no-such-type"}}})
    first = _violations(bad)
    assert [field for field, _ in first] == ["tools[0].parameters_json"]
    assert _violations(bad) == first == _violations(bad)


def test_a_good_schema_passes_every_time_and_a_bad_one_beside_it_is_still_refused() -> None:
    good = json.dumps({"type": "object", "properties": {"city": {"type": "string"}}})
    assert _violations(good) == [] == _violations(good)
    assert _violations(good.replace('"string"', '"strin"')) != []
    assert _violations('{"type": "array"}') == [
        ("tools[0].parameters_json", 'must describe an object ("type": "object")')
    ]


def test_remembered_verdicts_are_bounded() -> None:
    for index in range(validation.SCHEMA_VERDICTS + 50):
        _violations(json.dumps({"type": "object", "description": f"schema {index}"}))
    assert len(validation._schema_verdicts) == validation.SCHEMA_VERDICTS
