"""Structured output: the gateway's own check of an answer against the request's ResponseFormat.

Providers enforce schemas to different degrees (OpenAI strict mode, Anthropic and Gemini best effort),
so the gateway checks every JSON answer itself and tells the caller, rather than trusting the label.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

import regex
from jsonschema import exceptions, validators

from server.core.types import FinishReason, ResponseFormat, ResponseFormatType, StructuredOutput

MAX_ERROR_LENGTH = 300
"""An error quotes the offending value; long values are cut so the response stays small."""


PATTERN_TIMEOUT = 0.02
"""Seconds one `pattern` may take on one value: a caller's regex must not freeze the server (Python's
`re` backtracks without bound and holds the event loop; the `regex` module's matching stops in time)."""
CHECK_BUDGET = 0.25
"""Seconds all of one answer's pattern matching may take; past it the answer is reported unchecked."""

_deadline: ContextVar[float] = ContextVar("llm_grpc_schema_deadline", default=0.0)


class _TooSlow(Exception):
    """The schema's patterns took longer to check than the budget allows."""


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """What makes `schema` not a valid JSON Schema (by its own `$schema`, else the latest draft), or None.
    Whatever the caller sent, the answer is a message, never an exception."""
    try:
        validators.validator_for(schema).check_schema(dict(schema))
    except exceptions.SchemaError as error:
        return _shorten(f"{_path(error.absolute_path)}: {error.message}")
    except RecursionError:
        return "nested too deeply"
    except Exception as error:  # a malformed `$schema` (a list, a number) and the like
        return _shorten(f"cannot be read as a JSON Schema ({type(error).__name__})")
    return None


def _search(pattern: str, text: str) -> bool:
    if time.monotonic() > _deadline.get():
        raise _TooSlow
    try:
        return regex.search(pattern, text, timeout=PATTERN_TIMEOUT) is not None
    except TimeoutError:
        raise _TooSlow from None


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[exceptions.ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield exceptions.ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[exceptions.ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if _search(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


@functools.cache
def _bounded(draft: type[Any]) -> type[Any]:
    """The draft's validator with pattern matching that stops in time."""
    extended: type[Any] = validators.extend(  # type: ignore[no-untyped-call]
        draft, {"pattern": _pattern, "patternProperties": _pattern_properties}
    )
    return extended


def check_output(
    text: str, response_format: ResponseFormat | None, finish_reason: FinishReason
) -> StructuredOutput | None:
    """The check of an answer for a JSON response format; None for free text, and for a turn that ended
    in tool calls (it is not the answer yet: the answer comes after the tool results)."""
    if response_format is None or response_format.type is ResponseFormatType.TEXT:
        return None
    if finish_reason is FinishReason.TOOL_CALLS:
        return None
    try:
        document = json.loads(text)
    except ValueError as error:
        return StructuredOutput(valid=False, error=_shorten(f"the answer is not JSON: {error}"))
    if response_format.type is ResponseFormatType.JSON_OBJECT or response_format.schema is None:
        if isinstance(document, dict):
            return StructuredOutput(valid=True)
        return StructuredOutput(valid=False, error="the answer is JSON but not an object")
    schema = response_format.schema
    token = _deadline.set(time.monotonic() + CHECK_BUDGET)
    try:
        validator = _bounded(validators.validator_for(schema))(dict(schema))
        first = exceptions.best_match(validator.iter_errors(document))
    except _TooSlow:
        return StructuredOutput(
            valid=False, error="not checked: the schema's patterns took too long to match"
        )
    except RecursionError:
        return StructuredOutput(
            valid=False, error="not checked: the answer or the schema is nested too deeply"
        )
    except Exception as error:  # e.g. a `$ref` that resolves nowhere: the answer stays, unchecked
        return StructuredOutput(valid=False, error=_shorten(f"not checked: {type(error).__name__}: {error}"))
    finally:
        _deadline.reset(token)
    if first is None:
        return StructuredOutput(valid=True)
    return StructuredOutput(valid=False, error=_shorten(f"{_path(first.absolute_path)}: {first.message}"))


def _path(parts: Any) -> str:
    """A JSONPath-like location: `$`, `$.user.age`, `$.items[2]`."""
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _shorten(message: str) -> str:
    return message if len(message) <= MAX_ERROR_LENGTH else message[: MAX_ERROR_LENGTH - 1] + "…"
