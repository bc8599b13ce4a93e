"""What the client's replies look like when printed: `print(reply.usage)` reads `prompt=3 completion=5
total=8 tokens`, `print(reply)` a one-line summary with the finish reason by name, and
`FinishReason(reply.finish_reason)` prints `STOP`.

The replies stay the generated protobuf messages (same types, fields, `repr()` and serialisation): the
messages are upb objects whose fields cannot be given a Python type of ours, so only their `str()` changes
(installed on the generated classes when `llm_grpc_client` is imported), and the finish reason's name
comes from `FinishReason`, an IntEnum equal to the proto's numbers.
"""

from __future__ import annotations

import enum
from typing import Any

from llm_grpc.v1 import llm_pb2


class FinishReason(enum.IntEnum):
    """`FinishReason(reply.finish_reason)`: equal to the proto's number, printed by its short name
    (`STOP`). The members are the proto's (tests/unit/test_packaging.py checks they stay so)."""

    UNSPECIFIED = llm_pb2.FINISH_REASON_UNSPECIFIED
    STOP = llm_pb2.FINISH_REASON_STOP
    LENGTH = llm_pb2.FINISH_REASON_LENGTH
    CONTENT_FILTER = llm_pb2.FINISH_REASON_CONTENT_FILTER
    TOOL_CALLS = llm_pb2.FINISH_REASON_TOOL_CALLS
    OTHER = llm_pb2.FINISH_REASON_OTHER

    def __str__(self) -> str:
        return self.name


def usage_text(usage: llm_pb2.Usage) -> str:
    """`prompt=3 completion=5 total=8 tokens`, with cached, cache-write and reasoning tokens when any."""
    extras = [
        f"{label} {count}"
        for label, count in (
            ("cached", usage.cached_input_tokens),
            ("cache write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        )
        if count
    ]
    if usage.usage_estimated:
        extras.append("estimated")
    detail = f" ({', '.join(extras)})" if extras else ""
    return (
        f"prompt={usage.prompt_tokens} completion={usage.completion_tokens} "
        f"total={usage.total_tokens} tokens{detail}"
    )


def reply_text(reply: llm_pb2.CompleteResponse | llm_pb2.StreamDone) -> str:
    """`STOP from openai/gpt-5.4-mini: prompt=1 completion=3 total=4 tokens, $0.0000013, 12 ms` (and the
    text of a CompleteResponse)."""
    cost = f"{reply.cost_usd:.10f}".rstrip("0").rstrip(".")
    summary = (
        f"{FinishReason(reply.finish_reason)} from {reply.provider}/{reply.model}: "
        f"{usage_text(reply.usage)}, ${cost}, {reply.latency_ms:.0f} ms"
    )
    content = getattr(reply, "content", None)
    return f"{summary}\n{content}" if content else summary


def install() -> None:
    """Readable `str()` of the replies the client returns (their `repr()` stays the protobuf text)."""
    classes: list[tuple[Any, Any]] = [
        (llm_pb2.Usage, usage_text),
        (llm_pb2.CompleteResponse, reply_text),
        (llm_pb2.StreamDone, reply_text),
    ]
    for cls, text in classes:
        cls.__str__ = text
