"""Redaction through the real logging chain (`configure_logging`): what reaches stderr is JSON with every
key scrubbed, wherever in the event the key was."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import structlog

from server.observability.redact import REDACTED, Redactor
from server.providers.registry import SPECS
from tests.conftest import RenderedLogs

CONFIGURED = "my-own-proxy-secret-0123456789"
"""A configured secret of no known key shape: only the exact-value scrub catches it."""
OPENAI_SHAPED = "sk-proj-abcdefghijklmnopqrstuvwx"

Configure = Callable[[Redactor], RenderedLogs]


def _redactor() -> Redactor:
    """As the gateway builds it: the configured secrets, and every provider spec's key shape."""
    return Redactor([CONFIGURED], [spec.key_pattern for spec in SPECS.values()])


def _lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_a_configured_secret_and_a_key_shape_in_the_event_are_scrubbed(rendered_logs: Configure) -> None:
    read = rendered_logs(_redactor())

    structlog.get_logger("test").warning(
        "provider.error", message=f"refused key {CONFIGURED}", detail=f"Incorrect API key: {OPENAI_SHAPED}"
    )

    output = read()
    assert CONFIGURED not in output
    assert OPENAI_SHAPED not in output
    [line] = _lines(output)
    assert line["event"] == "provider.error"
    assert line["message"] == f"refused key {REDACTED}"
    assert line["level"] == "warning"


def test_values_bound_in_contextvars_are_scrubbed(rendered_logs: Configure) -> None:
    read = rendered_logs(_redactor())

    with structlog.contextvars.bound_contextvars(source_agent=f"agent {CONFIGURED}"):
        structlog.get_logger("test").info("call")

    [line] = _lines(read())
    assert line["source_agent"] == f"agent {REDACTED}"


def test_an_exception_traceback_is_rendered_and_scrubbed(rendered_logs: Configure) -> None:
    read = rendered_logs(_redactor())

    try:
        raise RuntimeError(f"header x-api-key: {CONFIGURED}")
    except RuntimeError:
        structlog.get_logger("test").exception("bug")

    output = read()
    [line] = _lines(output)
    assert "RuntimeError" in line["exception"]
    assert CONFIGURED not in output


def test_keys_nested_in_structured_values_are_scrubbed(rendered_logs: Configure) -> None:
    read = rendered_logs(_redactor())

    structlog.get_logger("test").info(
        "request", headers={"authorization": f"Bearer {CONFIGURED}"}, keys=[OPENAI_SHAPED]
    )

    output = read()
    assert CONFIGURED not in output
    assert OPENAI_SHAPED not in output
    [line] = _lines(output)
    assert line["keys"] == [REDACTED]


def test_a_library_warning_becomes_one_scrubbed_log_line(rendered_logs: Configure) -> None:
    read = rendered_logs(_redactor())

    warnings.warn_explicit(f"key {CONFIGURED} is short", UserWarning, "lib.py", 7)

    [line] = _lines(read())
    assert line["event"] == "library.warning"
    assert line["warning"] == f"key {REDACTED} is short"
    assert line["source"] == "lib.py:7"
