"""The OpenAI Responses API (`POST /v1/responses`, JSON and SSE) for the OpenAI emulator: its replies in
the shapes and event order of recorded real traffic (pydantic/pydantic-ai
`tests/models/cassettes/test_openai_responses/`:
`test_openai_responses_thinking_with_tool_calls.yaml` for a reasoning item and a function call and
their replay, `test_openai_responses_phase_streamed_on_part_start.yaml` for the stream's events,
`test_openai_responses_thinking_part_iter.yaml` for reasoning summary events). Ids have the real shapes:
`resp_`, `rs_`, `msg_`, `fc_` and 50 hex digits, `call_` and 24 characters.

Stateless only, as the gateway uses it (`store: false`): the emulator keeps nothing, so an item replayed
without its content is refused as the API refuses it. The rules are in
server/emulators/openai_responses_rules.py.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.emulators.base import Directives, Reply, count_tokens, parse_directives, plan_reply
from server.emulators.openai_responses_rules import encrypt, problems
from server.emulators.scripting import (
    PlannedCall,
    ToolSpec,
    json_reply,
    plan_calls,
    result_reply,
    thinking_text,
    thinking_tokens,
)

if TYPE_CHECKING:
    from server.emulators.openai import OpenAIEmulator

INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
"""A planned reply's finish as `incomplete_details.reason` (openai/types/responses/response.py); `stop`
and `tool_calls` complete, any other `finish=` directive is passed through as a reason the gateway has not
seen."""
COMPLETE = frozenset({"stop", "tool_calls"})
# In-stream failures by kind: (error code, message), sent as an `error` event (type, code, message, param,
# sequence_number; openai/types/responses/response_error_event.py). `error=failed` sends a
# `response.failed` event instead (response_failed_event.py: the response, `status: failed`, its `error`).
STREAM_ERRORS = {
    "server": ("server_error", "The server had an error while processing your request."),
    "overloaded": ("server_error", "The server had an error while processing your request."),
    "rate_limit": ("rate_limit_exceeded", "Rate limit reached for requests."),
    "invalid_request": ("invalid_request_error", "Invalid request."),
    "quota": (
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
}  # fmt: skip


def new_id(prefix: str) -> str:
    """An item id in the real shape: the prefix and 50 hex digits (`rs_0fabc13a…`)."""
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:18]}"


def _call_prefix() -> str:
    """`call_` and 20 characters; plan_calls adds 4 digits (real call ids: `call_` and 24)."""
    return "call_" + uuid.uuid4().hex[:20]


# --- the replies ---------------------------------------------------------------------------------


def refusal(status: int, message: str, param: str | None, code: str | None) -> web.Response:
    """A refusal in the API's shape: every rule above is an `invalid_request_error`."""
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    items = body["input"]
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    return [i for i in items if i.get("type", "message") == "message"]


def prompt_texts(body: dict[str, Any]) -> list[str]:
    """Every text of the prompt, one entry per input item (tools last): what the emulator counts."""
    texts = [parse_directives(body.get("instructions") or "")[0]] if body.get("instructions") else []
    items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
    for item in items:
        match item.get("type", "message"):
            case "message":
                texts.append(parse_directives(_text(item.get("content")))[0])
            case "function_call":
                texts.append(f"{item.get('name')} {item.get('arguments')}")
            case "function_call_output":
                texts.append(str(item.get("output")))
            case _:
                texts.append("")
    return texts + [json.dumps(t) for t in body.get("tools") or ()]


def _scripted_text(body: dict[str, Any]) -> str | None:
    """The answer to the function call outputs that end the input, JSON for a JSON format, else None."""
    items = body["input"] if isinstance(body["input"], list) else []
    if items and items[-1].get("type") == "function_call_output":
        names = {i.get("call_id"): i.get("name") for i in items if i.get("type") == "function_call"}
        results = []
        for item in reversed(items):
            if item.get("type") != "function_call_output":
                break
            results.append((names.get(item.get("call_id"), "?"), str(item.get("output"))))
        return result_reply(results[::-1])
    fmt = ((body.get("text") or {}).get("format")) or {}
    if fmt.get("type") == "json_schema":
        return json_reply(fmt.get("schema", {}))
    if fmt.get("type") == "json_object":
        return json_reply(None)
    return None


def _calls(emulator: OpenAIEmulator, body: dict[str, Any], directives: Directives) -> list[PlannedCall]:
    """Tool calls when tools are offered, the choice allows one and the input ends with the user's turn."""
    tools = [ToolSpec(t["name"], t.get("parameters") or {}) for t in body.get("tools") or ()]
    choice = body.get("tool_choice", "auto")
    items = body["input"] if isinstance(body["input"], list) else [{"role": "user"}]
    last = items[-1]
    user_last = last.get("type", "message") == "message" and last.get("role") == "user"
    if not tools or choice == "none" or not user_last or (directives.no_tool and choice == "auto"):
        return []
    allowed = [choice["name"]] if isinstance(choice, dict) else None
    emulator._turn += 1
    return plan_calls(
        tools,
        allowed,
        directives,
        parallel=body.get("parallel_tool_calls", True) is not False,
        id_prefix=_call_prefix(),
        turn=emulator._turn,
    )


async def answer(
    emulator: OpenAIEmulator, request: web.Request, body: Any, reasoning_model: bool
) -> web.StreamResponse:
    """The emulator's answer to `POST /v1/responses`."""
    problem = problems(body, reasoning_model)
    if problem is not None:
        status, message, param, code = problem
        return refusal(status, message, param, code)
    messages = _messages(body)
    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    last_user, directives = parse_directives(last_user)
    if emulator.should_fail(request, directives):
        return emulator.failure(request, directives, body["model"])
    texts = prompt_texts(body)
    calls = _calls(emulator, body, directives)
    reply = plan_reply(
        texts, last_user, directives, max_tokens=body.get("max_output_tokens"), text=_scripted_text(body)
    )
    if calls:
        reply = Reply(
            tokens=[],
            finish="tool_calls",
            prompt_tokens=reply.prompt_tokens,
            extra_tokens=sum(count_tokens(c.arguments_json) for c in calls),
        )
    if directives.context_window is not None and reply.prompt_tokens > directives.context_window:
        return refusal(
            400,
            "Your input exceeds the context window of this model. Please adjust your input and try again.",
            "input",
            "context_length_exceeded",
        )
    # Per-key rate limits with OpenAI's headers and 429 body, as on /v1/chat/completions.
    limited = emulator.over_rate_limit(
        request,
        body["model"],
        reply.prompt_tokens,
        body.get("max_output_tokens") or 0,
        reply.completion_tokens,
    )
    if limited is not None:
        return limited
    reasoning = body.get("reasoning") or {}
    thinking = (
        directives.reasoning_tokens
        if directives.reasoning_tokens is not None
        else thinking_tokens(reasoning.get("effort"))
    )
    thinking = thinking if reasoning_model else 0
    output, deltas = _output(body, reply, calls, thinking)
    cached = emulator.cached_tokens_of(
        ("responses", body.get("tools")),
        body["input"] if isinstance(body["input"], list) else [body["input"]],
        texts,
    )
    completion = reply.completion_tokens + thinking
    usage = {
        "input_tokens": reply.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": thinking},
        "total_tokens": reply.prompt_tokens + completion,
    }
    incomplete = None if reply.finish in COMPLETE else INCOMPLETE.get(reply.finish, reply.finish)
    response = {
        "id": new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if incomplete else "completed",
        "background": False,
        "error": None,
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": emulator.served_as.get(body["model"], body["model"]),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "usage": None if directives.no_usage else usage,
    }
    if not body.get("stream"):
        for _ in reply.tokens:
            await emulator.pace(directives)
        return web.json_response(response)
    return await _stream(emulator, request, response, deltas, directives)


def _output(
    body: dict[str, Any], reply: Reply, calls: list[PlannedCall], thinking: int
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The output items (reasoning first, then the message or the function calls) and, per item, the
    deltas a stream sends for it."""
    items: list[dict[str, Any]] = []
    deltas: list[list[str]] = []
    followers: list[tuple[str, PlannedCall | None]] = (
        [(new_id("fc"), c) for c in calls] if calls else [(new_id("msg"), None)]
    )
    if thinking:
        text = thinking_text(thinking)
        wants_summary = (body.get("reasoning") or {}).get("summary") is not None
        encrypted = "reasoning.encrypted_content" in (body.get("include") or [])
        items.append(
            {
                "id": new_id("rs"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": text}] if wants_summary else [],
                "encrypted_content": encrypt(text, followers[0][0]) if encrypted else None,
            }
        )
        deltas.append(re.findall(r"\S+\s*", text) if wants_summary else [])
    for item_id, call in followers:
        if call is not None:
            items.append(
                {
                    "id": item_id,
                    "type": "function_call",
                    "status": "completed",
                    "arguments": call.arguments_json,
                    "call_id": call.id,
                    "name": call.name,
                }
            )
            text = call.arguments_json
            deltas.append([text[i : i + 8] for i in range(0, len(text), 8)])
        else:
            items.append(
                {
                    "id": item_id,
                    "type": "message",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "annotations": [], "logprobs": [], "text": reply.text}
                    ],
                    "role": "assistant",
                }
            )
            deltas.append(list(reply.tokens))
    return items, deltas


async def _stream(
    emulator: OpenAIEmulator,
    request: web.Request,
    final: dict[str, Any],
    deltas: list[list[str]],
    directives: Directives,
) -> web.StreamResponse:
    """The SSE events, in the real order: response.created, response.in_progress, then per output item
    output_item.added, its parts and deltas, output_item.done; then response.completed (or
    response.incomplete). Every event has its `sequence_number`."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    sequence = 0

    async def send(kind: str, **fields: Any) -> None:
        nonlocal sequence
        event = {"type": kind, **fields, "sequence_number": sequence}
        sequence += 1
        await response.write(f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode())

    async def send_error() -> None:
        if directives.error == "failed":  # the response fails: `response.failed` with its `error`
            error = {"code": "server_error", "message": STREAM_ERRORS["server"][1]}
            await send(
                "response.failed", response={**final, "status": "failed", "error": error, "usage": None}
            )
            return
        code, message = STREAM_ERRORS[directives.error or "server"]
        await send("error", code=code, message=message, param=None)

    opening = {**final, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    count = 0
    with emulator.streaming():
        await send("response.created", response=opening)
        await send("response.in_progress", response=opening)
        for index, (item, pieces) in enumerate(zip(final["output"], deltas, strict=True)):
            for step in _item_events(item, pieces, index):
                kind, fields = step()
                if kind.endswith(".delta"):  # faults and pacing fall between deltas, as in chat completions
                    if await emulator.interrupted(request, response, directives, count, send_error):
                        return response
                    await emulator.pace(directives)
                    count += 1
                await send(kind, **fields)
        closing = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        await send(closing, response=final)
        await response.write_eof()
    return response


Step = Callable[[], tuple[str, dict[str, Any]]]


def _item_events(item: dict[str, Any], pieces: list[str], index: int) -> list[Step]:
    """The events of one output item; deltas are the steps a fault directive may interrupt."""
    item_id = item["id"]
    kind = item["type"]
    events: list[Step] = []

    def fixed(name: str, **fields: Any) -> Step:
        return lambda: (name, fields)

    if kind == "reasoning":
        events.append(fixed("response.output_item.added", output_index=index, item={**item, "summary": []}))
        if pieces:
            part = {"type": "summary_text", "text": ""}
            events.append(
                fixed(
                    "response.reasoning_summary_part.added",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    part=part,
                )
            )
            events += [
                fixed(
                    "response.reasoning_summary_text.delta",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    delta=p,
                )
                for p in pieces
            ]
            text = "".join(pieces)
            events.append(
                fixed(
                    "response.reasoning_summary_text.done",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    text=text,
                )
            )
            events.append(
                fixed(
                    "response.reasoning_summary_part.done",
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    part={**part, "text": text},
                )
            )
    elif kind == "function_call":
        events.append(
            fixed(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
        )
        events += [
            fixed("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=p)
            for p in pieces
        ]
        events.append(
            fixed(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                arguments=item["arguments"],
            )
        )
    else:
        empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        events.append(
            fixed(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
        )
        events.append(
            fixed(
                "response.content_part.added",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part=empty,
            )
        )
        events += [
            fixed(
                "response.output_text.delta",
                item_id=item_id,
                output_index=index,
                content_index=0,
                delta=p,
                logprobs=[],
            )
            for p in pieces
        ]
        text = "".join(pieces)
        events.append(
            fixed(
                "response.output_text.done",
                item_id=item_id,
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            )
        )
        events.append(
            fixed(
                "response.content_part.done",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part={**empty, "text": text},
            )
        )
    events.append(fixed("response.output_item.done", output_index=index, item=item))
    return events
