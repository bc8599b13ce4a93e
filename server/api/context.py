"""A2A context from gRPC metadata: `a2a-trace-id` (or a W3C `traceparent`), `a2a-source-agent`,
`a2a-session-id`. A call without a trace id gets a fresh one."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from server.core.types import RequestContext
from server.core.validation import check_context_value

TRACE_ID_KEY = "a2a-trace-id"
SOURCE_AGENT_KEY = "a2a-source-agent"
SESSION_ID_KEY = "a2a-session-id"
TRACEPARENT_KEY = "traceparent"

# version-traceid-parentid-flags; an all-zero trace id is invalid per W3C Trace Context.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>(?!0{32})[0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def new_trace_id() -> str:
    """A fresh trace id: what `uuid.uuid4().hex` gives (32 hex digits, version 4, RFC 4122 variant),
    without building the UUID object on every call that brings none (a third of the time)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant 10xx
    return raw.hex()


def context_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None, max_value_length: int = 128
) -> RequestContext:
    """Build the call's RequestContext; raises InvalidRequest for an over-long or unprintable value."""
    values: dict[str, str] = {}
    for key, value in metadata or ():
        if key in (TRACE_ID_KEY, SOURCE_AGENT_KEY, SESSION_ID_KEY, TRACEPARENT_KEY) and isinstance(
            value, str
        ):
            values.setdefault(key, value)
    trace_id = values.get(TRACE_ID_KEY, "")
    if not trace_id and (match := _TRACEPARENT.match(values.get(TRACEPARENT_KEY, ""))):
        trace_id = match.group("trace")
    for key in (TRACE_ID_KEY, SOURCE_AGENT_KEY, SESSION_ID_KEY):
        if key in values:
            check_context_value(f"metadata.{key}", values[key], max_value_length)
    return RequestContext(
        trace_id=trace_id or new_trace_id(),
        source_agent=values.get(SOURCE_AGENT_KEY, ""),
        session_id=values.get(SESSION_ID_KEY, ""),
    )
