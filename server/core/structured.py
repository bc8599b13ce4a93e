"""Structured output: the gateway's own check of an answer against the request's ResponseFormat.

Providers enforce schemas to different degrees (OpenAI strict mode, Anthropic and Gemini best effort),
so the gateway checks every JSON answer itself and tells the caller, rather than trusting the label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import exceptions, validators

from server.core.types import FinishReason, ResponseFormat, ResponseFormatType, StructuredOutput

MAX_ERROR_LENGTH = 300
"""An error quotes the offending value; long values are cut so the response stays small."""


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """What makes `schema` not a valid JSON Schema (by its own `$schema`, else the latest draft), or None."""
    try:
        validators.validator_for(schema).check_schema(dict(schema))
    except exceptions.SchemaError as error:
        return _shorten(f"{_path(error.absolute_path)}: {error.message}")
    return None


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
    validator = validators.validator_for(schema)(dict(schema))
    first = exceptions.best_match(validator.iter_errors(document))
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
