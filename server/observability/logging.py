"""structlog setup: JSON lines (or console), A2A context from contextvars, secrets redacted last."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from server.observability.redact import Redactor


class RedactProcessor:
    """Scrubs every string of the event (exception text included, and strings nested in dicts, lists and
    tuples: a logged header map is as likely to hold a key as a message) just before rendering."""

    def __init__(self, redactor: Redactor) -> None:
        self._redact = redactor

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        # One check of all the strings together (nested ones included): the usual line has nothing to
        # redact, and a secret or key shape in any string is in their join too (a NUL is in no secret).
        if self._redact.clean("\0".join(_strings(event.values()))):
            return event
        for key, value in event.items():
            event[key] = self._scrub(value)
        return event

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, Mapping):
            return {key: self._scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(item) for item in value]
        return value


def resolve_format(fmt: str, stream: TextIO) -> str:
    """`auto` is `console` when `stream` is a terminal (a person is reading), else `json`."""
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


_SCALARS = (int, float, bool, type(None))
"""Types of a log value that hold no string (most of the canonical line's values)."""


def _strings(values: Iterable[Any]) -> list[str]:
    """Every string among `values`, and in the dicts, lists and tuples among them, as `_scrub` visits.
    A list built in one loop rather than a generator: the canonical line has a dozen values, most of
    them numbers (docs/benchmarks.md: gathering its strings 3.2-4.3 µs -> 1.2-1.6 µs)."""
    found: list[str] = []
    for value in values:
        kind = type(value)
        if kind is str:
            found.append(value)
        elif kind in _SCALARS:
            continue
        elif isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            found += _strings(value.values())
        elif isinstance(value, list | tuple):
            found += _strings(value)
    return found


def configure_logging(level: str, fmt: str, redactor: Redactor) -> None:
    """Configure structlog once at start. `fmt` is `json`, `console` or `auto` (see resolve_format)."""
    fmt = resolve_format(fmt, sys.stderr)
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            RedactProcessor(redactor),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    warnings.showwarning = _log_warning


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """Library warnings (PyJWT's key-length warning, deprecations) become one redacted structured log
    line instead of raw text on stderr."""
    structlog.get_logger("llm_grpc.warnings").warning(
        "library.warning", category=category.__name__, warning=str(message), source=f"{filename}:{lineno}"
    )
