"""The gateway's schema check stays a verdict whatever a caller's schema holds: a backtracking pattern
cannot freeze the server, a `$ref` to nowhere or a malformed `$schema` is reported, never raised."""

from __future__ import annotations

from typing import Any

import pytest

from server.core.structured import check_output, schema_problem
from server.core.types import FinishReason, ResponseFormat, ResponseFormatType


def _check(schema: dict[str, Any], answer: str) -> Any:
    response_format = ResponseFormat(ResponseFormatType.JSON_SCHEMA, "x", schema, False)
    return check_output(answer, response_format, FinishReason.STOP)


def test_a_backtracking_pattern_is_cut_off_and_reported_unchecked() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a|aa)+$"}}}
    verdict = _check(schema, '{"a": "' + "a" * 60 + '!"}')  # unbounded, this backtracks for hours

    assert verdict.valid is False
    assert "too long" in verdict.error


def test_patterns_still_check_values_and_property_names() -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "patternProperties": {"^x-": {"type": "integer"}},
    }

    assert _check(schema, '{"code": "ABC", "x-n": 1}').valid is True
    assert "does not match" in _check(schema, '{"code": "abc"}').error
    assert _check(schema, '{"code": "ABC", "x-n": "one"}').valid is False


def test_a_reference_to_nowhere_is_reported_not_raised() -> None:
    verdict = _check({"type": "object", "properties": {"a": {"$ref": "#/definitions/nope"}}}, '{"a": 1}')

    assert verdict.valid is False
    assert verdict.error.startswith("not checked")


@pytest.mark.parametrize("declared", [[], 5, {"x": 1}])
def test_a_malformed_schema_dialect_is_a_problem_not_an_exception(declared: object) -> None:
    assert schema_problem({"$schema": declared, "type": "object"}) is not None


def test_a_schema_nested_too_deeply_is_a_problem_not_an_exception() -> None:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(5000):
        schema = {"type": "object", "properties": {"a": schema}}

    assert schema_problem(schema) is not None
