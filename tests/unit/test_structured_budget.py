"""The answer check's own guards, below the request-time limits (which refuse these schemas first):
nothing fetched whatever reaches it, and a verdict of "not checked" past its budget."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from server.core.structured import OutputChecker, Unchecked, check_output
from server.core.types import FinishReason, ResponseFormat, ResponseFormatType
from tests.helpers import CountingListener


def _format(schema: Any) -> ResponseFormat:
    return ResponseFormat(ResponseFormatType.JSON_SCHEMA, "answer", schema)


async def test_a_remote_ref_that_reaches_the_check_is_not_fetched_and_not_quoted() -> None:
    async with CountingListener() as listener:
        schema = {"type": "object", "properties": {"x": {"$ref": f"{listener.url}/secret.json"}}}

        verdict = check_output('{"x": 0}', _format(schema), FinishReason.STOP)

    assert verdict is not None
    assert verdict.unchecked_reason == Unchecked.UNRESOLVABLE
    assert "LEAKED" not in verdict.error
    assert listener.connections == 0


def test_an_exponential_schema_stops_at_the_step_budget() -> None:
    defs: dict[str, object] = {"d0": {"type": "integer", "not": {"const": 0}}}
    for level in range(1, 31):
        defs[f"d{level}"] = {"anyOf": [{"$ref": f"#/$defs/d{level - 1}"}] * 2}
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/d30"}}, "$defs": defs}

    verdict = check_output('{"x": 0}', _format(schema), FinishReason.STOP, cpu_seconds=3600, steps=5000)

    assert verdict is not None
    assert verdict.unchecked_reason == Unchecked.BUDGET
    assert verdict.error.startswith("not checked: ")


def test_unique_items_on_a_long_array_of_objects_is_checked_in_one_pass() -> None:
    answer = json.dumps([{"a": i} for i in range(50_000)] + [{"a": 7}])

    verdict = check_output(answer, _format({"type": "array", "uniqueItems": True}), FinishReason.STOP)

    assert verdict is not None
    assert verdict.unchecked_reason == ""
    assert not verdict.valid
    assert "non-unique" in verdict.error


async def test_a_check_past_its_wait_is_stopped_and_frees_its_thread() -> None:
    checker = OutputChecker(workers=1, cpu_seconds=3600, steps=10**12, wait_seconds=0.05)
    defs: dict[str, object] = {"d0": {"type": "integer", "not": {"const": 0}}}
    for level in range(1, 41):  # 2^40 steps: days, were it not stopped
        defs[f"d{level}"] = {"anyOf": [{"$ref": f"#/$defs/d{level - 1}"}] * 2}
    schema = {"type": "object", "properties": {"x": {"$ref": "#/$defs/d40"}}, "$defs": defs}

    verdict = await checker.check('{"x": 0}', _format(schema), FinishReason.STOP)
    # The one worker is free again only once the abandoned check has stopped (else this misses its deadline).
    freed = await asyncio.wait_for(_idle(checker), 60)

    assert verdict is not None
    assert verdict.unchecked_reason == Unchecked.TIMEOUT
    assert freed
    checker.close()


async def _idle(checker: OutputChecker) -> bool:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(checker._pool, lambda: True)


def test_an_answer_nested_too_deeply_to_read_is_reported_not_checked() -> None:
    verdict = check_output("[" * 100_000 + "]" * 100_000, _format({"type": "array"}), FinishReason.STOP)

    assert verdict is not None
    assert verdict.unchecked_reason == Unchecked.NESTING
