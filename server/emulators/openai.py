"""An emulator of the OpenAI Chat Completions API (`POST /v1/chat/completions`, JSON and SSE;
`GET /v1/models`), refusing what the real API refuses. The Responses API (`POST /v1/responses`) is
server/emulators/openai_responses.py, served by the same emulator (one key, one request log)."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

from server.emulators import openai_responses
from server.emulators.base import Directives, Emulator, Reply, count_tokens, parse_directives, plan_reply
from server.emulators.ratelimits import RateLimits, Refusal, go_duration
from server.emulators.scripting import (
    PlannedCall,
    ToolSpec,
    json_reply,
    plan_calls,
    result_reply,
    schema_problem,
    thinking_tokens,
)

REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
KNOWN_PARAMS = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "stream",
    "stream_options",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "metadata",
    "store",
    "service_tier",
    "modalities",
    "prediction",
    "audio",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
    "web_search_options",
}
# Chat Completions refuses function tools with any reasoning effort but "none" on gpt-5.2 and later, and
# those models' default effort counts: gpt-5.2 / 5.4 default to "none" (tools pass while the caller asks
# for no reasoning), gpt-5.5 and later to "medium" (tools fail even without reasoning_effort:
# BerriAI/litellm#34569, jeffdafoe/llm-memory-api#178, danny-avila/LibreChat#14355). Rows: (model
# prefix, default effort, message); the body is {"message", "type": "invalid_request_error", "param":
# "reasoning_effort", "code": null}.
TOOLS_WITH_EFFORT_REFUSED = (
    # openai/openai-openapi#541, pipecat-ai/pipecat#4043 (gpt-5.4), livekit/agents#5088 (5.2 and 5.4),
    # charmbracelet/crush#2913 (gpt-5.5).
    ("gpt-5.2", "none", "Please use /v1/responses instead."),
    ("gpt-5.4", "none", "Please use /v1/responses instead."),
    ("gpt-5.5", "medium", "Please use /v1/responses instead."),
    # GoogleChromeLabs/webmcp-tools#417, GEMISIS/leviath#333 (gpt-5.6-terra / -sol), BerriAI/litellm#34569.
    ("gpt-5.6", "medium", "To use function tools, use /v1/responses or set reasoning_effort to 'none'."),
    ("gpt-6", "medium", "To use function tools, use /v1/responses or set reasoning_effort to 'none'."),
)
FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls"}
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>[A-Za-z0-9+/=\s]*)", re.S)
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# The content part types each role may send.
PART_TYPES = {
    "user": {"text", "image_url", "input_audio", "file"},
    "assistant": {"text", "refusal"},
    "system": {"text"},
    "developer": {"text"},
    "tool": {"text"},
}
CACHE_GRANULARITY = 128
"""Cached prompt tokens come in steps of 128 once the prefix reaches 1024 (OpenAI prompt caching)."""
MODELS = (
    "gpt-5.5",
    "gpt-5.4",
    "gpt-5.4-mini",
    "gpt-5.4-nano",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5",
    "gpt-5-mini",
)
# The model each alias is served by, as the API names it in `model`.
SNAPSHOTS = {
    "gpt-5.5": "gpt-5.5-2026-04-23",
    "gpt-5.4-mini": "gpt-5.4-mini-2026-03-17",
    "gpt-5.4-nano": "gpt-5.4-nano-2026-03-17",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
}
# Shut down (openai SDK's ChatModel deprecation notes): the API answers 404 model_not_found.
RETIRED = frozenset(
    {"gpt-4-32k", "gpt-3.5-turbo-0613", "o1-preview", "o1-mini", "o1", "o3-mini", "o4-mini", "gpt-4.1-nano"}
)
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information "
    "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)
# In-stream error events by kind: (message, type, code).
STREAM_ERRORS = {
    "server": ("The server had an error while processing your request.", "server_error", None),
    "overloaded": ("The server had an error while processing your request.", "server_error", None),
    "rate_limit": ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    "invalid_request": ("Invalid request.", "invalid_request_error", None),
    "quota": (QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota"),
}
ERRORS = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    kind, default_code = ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    if code == "insufficient_quota":
        kind = code
    body = {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}
    return web.json_response(body, status=status, headers=headers)


def _problems(body: Any) -> tuple[str, str | None, str | None] | None:
    """The first rule the body breaks, as (message, param, code), or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None, None
    for key in body:
        if key not in KNOWN_PARAMS:
            return f"Unrecognized request argument supplied: {key}", key, None
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        return "you must provide a model parameter", "model", None
    if not isinstance(messages, list) or not messages:
        return (
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            "messages",
            "empty_array",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"Invalid value for 'messages[{index}].role'.", f"messages[{index}].role", "invalid_value"
        content = message.get("content")
        if not isinstance(content, str | list) and not (content is None and message["role"] == "assistant"):
            return (
                f"Invalid type for 'messages[{index}].content'.",
                f"messages[{index}].content",
                "invalid_type",
            )
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = body.get(name)
        if value is not None and (not isinstance(value, int | float) or not low <= value <= high):
            return f"Invalid '{name}': expected a number between {low} and {high}.", name, "invalid_value"
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            return f"Invalid '{name}': integer below minimum value (1).", name, "integer_below_min_value"
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        return "max_tokens and max_completion_tokens cannot both be set.", "max_tokens", None
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 4:
        return (
            "Invalid 'stop': array too long. Expected an array with maximum length 4.",
            "stop",
            "array_above_max_length",
        )
    if "stream_options" in body and not body.get("stream"):
        return (
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            None,
        )
    if (problem := _agent_problems(body, messages)) is not None:
        return problem
    if (problem := _tools_with_effort(body, model)) is not None:
        return problem
    if "reasoning_effort" in body and not model.startswith(REASONING_PREFIXES):
        return (
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
            "reasoning_effort",
            "unsupported_parameter",
        )
    if model.startswith(REASONING_PREFIXES):
        if "max_tokens" in body:
            return (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "max_tokens",
                "unsupported_parameter",
            )
        for name in ("temperature", "top_p"):
            if name in body and body[name] != 1:
                return (
                    f"Unsupported value: '{name}' does not support {body[name]} with this model. "
                    "Only the default (1) value is supported.",
                    name,
                    "unsupported_value",
                )
        if "stop" in body:
            return (
                "Unsupported parameter: 'stop' is not supported with this model.",
                "stop",
                "unsupported_parameter",
            )
    return None


def _tools_with_effort(body: dict[str, Any], model: str) -> tuple[str, str | None, str | None] | None:
    """Function tools with reasoning on a model whose Chat Completions refuses them (the table above)."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
    if not tools:
        return None
    for prefix, default, advice in TOOLS_WITH_EFFORT_REFUSED:
        if model == prefix or model.startswith((f"{prefix}-", f"{prefix}.")):
            if body.get("reasoning_effort", default) == "none":
                return None
            return (
                f"Function tools with reasoning_effort are not supported for {model} in "
                f"/v1/chat/completions. {advice}",
                "reasoning_effort",
                None,
            )
    return None


def _agent_problems(body: dict[str, Any], messages: list[Any]) -> tuple[str, str | None, str | None] | None:
    """Tools, tool choice, tool turns, content parts, response format and reasoning, as the API checks
    them."""
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "Invalid type for 'tools': expected an array.", "tools", "invalid_type"
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
                return (
                    f"Missing required parameter: '{where}.function'.",
                    f"{where}.function",
                    "missing_required_parameter",
                )
            name = function.get("name")
            if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
                return (
                    f"Invalid '{where}.function.name': string does not match pattern. Expected a string "
                    "that matches the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
                    f"{where}.function.name",
                    "invalid_value",
                )
            if name in names:
                return f"Invalid 'tools': duplicate function name '{name}'.", "tools", "invalid_value"
            names.append(name)
            parameters = function.get("parameters", {"type": "object"})
            if (problem := schema_problem(parameters, f"Invalid schema for function '{name}'")) is not None:
                return problem, f"{where}.function.parameters", "invalid_function_parameters"
            if function.get("strict") and (problem := _strict_problem(parameters, f"function '{name}'")):
                return problem, f"{where}.function.parameters", "invalid_function_parameters"
    choice = body.get("tool_choice")
    if choice is not None:
        if not names:
            return (
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                "tool_choice",
                None,
            )
        if isinstance(choice, str) and choice not in ("none", "auto", "required"):
            return (
                f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
                "tool_choice",
                "invalid_value",
            )
        if isinstance(choice, dict):
            named = (choice.get("function") or {}).get("name")
            if choice.get("type") != "function" or named not in names:
                return (
                    f"Invalid value for 'tool_choice': tool choice '{named}' not found in 'tools' parameter.",
                    "tool_choice",
                    None,
                )
    if "parallel_tool_calls" in body and not names:
        return (
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' "
            "are specified.",
            "parallel_tool_calls",
            None,
        )
    if (turn_problem := _turn_problems(messages)) is not None:
        return turn_problem
    if (format_problem := _format_problem(body.get("response_format"), messages)) is not None:
        return format_problem
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in EFFORTS:
        return (
            f"Invalid value: '{effort}'. Supported values are: {', '.join(repr(e) for e in EFFORTS)}.",
            "reasoning_effort",
            "invalid_value",
        )
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        return "Invalid type for 'seed': expected an integer.", "seed", "invalid_type"
    for name in ("user", "safety_identifier"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 64):
            return (
                f"Invalid '{name}': string too long. Expected a string with maximum length 64.",
                name,
                "string_above_max_length",
            )
    return None


def _turn_problems(messages: list[Any]) -> tuple[str, str | None, str | None] | None:
    """A tool message must answer a tool call of the assistant turn before it, and every call of that
    turn must be answered before the conversation goes on; content parts must suit their role."""
    pending: list[str] = []
    for index, message in enumerate(messages):
        role = message["role"]
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.",
                    f"messages.[{index}].role",
                    None,
                )
            pending.remove(call_id)
            continue
        if pending:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to "
                f"each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{', '.join(pending)}",
                "messages",
                None,
            )
        if role == "assistant":
            for number, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(call.get("id"), str):
                    where = f"messages[{index}].tool_calls[{number}]"
                    return (
                        f"Missing required parameter: '{where}.function'.",
                        where,
                        "missing_required_parameter",
                    )
                if not isinstance(function.get("arguments"), str):
                    where = f"messages[{index}].tool_calls[{number}].function.arguments"
                    return f"Invalid type for '{where}': expected a string.", where, "invalid_type"
                pending.append(call["id"])
        if (problem := _parts_problem(message.get("content"), role, index)) is not None:
            return problem
    if pending:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
            "'tool_call_id'. The following tool_call_ids did not have response messages: "
            + ", ".join(pending),
            "messages",
            None,
        )
    return None


def _parts_problem(content: Any, role: str, index: int) -> tuple[str, str | None, str | None] | None:
    if not isinstance(content, list):
        return None
    allowed = PART_TYPES.get(role, {"text"})
    for number, part in enumerate(content):
        where = f"messages[{index}].content[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            return (
                f"Invalid value: '{kind}'. Supported values are: "
                + ", ".join(repr(a) for a in sorted(allowed)),
                f"{where}.type",
                "invalid_value",
            )
        if kind == "image_url":
            url = (part.get("image_url") or {}).get("url")
            if not isinstance(url, str) or not (
                url.startswith(("http://", "https://")) or _data_url(url, IMAGE_TYPES)
            ):
                return (
                    f"Invalid '{where}.image_url.url'. Expected a base64-encoded data URL with an image MIME "
                    "type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=').",
                    f"{where}.image_url.url",
                    "invalid_value",
                )
        if kind == "file":
            data = (part.get("file") or {}).get("file_data")
            if not (part.get("file") or {}).get("file_id") and not _data_url(data, {"application/pdf"}):
                return (
                    f"Invalid '{where}.file.file_data'. Expected a base64-encoded data URL with a PDF.",
                    f"{where}.file.file_data",
                    "invalid_value",
                )
    return None


def _data_url(url: Any, types: set[str]) -> bool:
    """Whether `url` is `data:<one of types>;base64,<valid base64>`."""
    match = DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None or match.group("type") not in types:
        return False
    try:
        base64.b64decode(match.group("data"), validate=True)
    except ValueError:
        return False
    return True


def _format_problem(value: Any, messages: list[Any]) -> tuple[str, str | None, str | None] | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in ("text", "json_object", "json_schema"):
        return (
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            "response_format.type",
            "invalid_value",
        )
    if kind == "json_object" and not any("json" in _text(m.get("content")).lower() for m in messages):
        return (
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
            "'json_object'.",
            "messages",
            None,
        )
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or "name" not in spec:
            return (
                "Missing required parameter: 'response_format.json_schema.name'.",
                "response_format.json_schema.name",
                "missing_required_parameter",
            )
        if not isinstance(spec["name"], str) or not TOOL_NAME.fullmatch(spec["name"]):
            return (
                "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a "
                "string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                "response_format.json_schema.name",
                "invalid_value",
            )
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            return (
                "Invalid type for 'response_format.json_schema.schema': expected an object.",
                "response_format.json_schema.schema",
                "invalid_type",
            )
        if spec.get("strict") and (problem := _strict_problem(schema, f"response_format '{spec['name']}'")):
            return problem, "response_format", None
    return None


def _strict_problem(schema: Any, what: str, context: tuple[str, ...] = ()) -> str | None:
    """Structured Outputs' strict mode: every object closes its properties and requires all of them."""
    if not isinstance(schema, dict):
        return None
    where = f"Invalid schema for {what}: In context={context}, "
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return where + "'additionalProperties' is required to be supplied and to be false."
        properties = schema.get("properties") or {}
        missing = [name for name in properties if name not in (schema.get("required") or ())]
        if missing:
            return (
                where + "'required' is required to be supplied and to be an array including every key in "
                f"properties. Missing '{missing[0]}'."
            )
        for name, sub in properties.items():
            if (problem := _strict_problem(sub, what, (*context, "properties", name))) is not None:
                return problem
    if isinstance(schema.get("items"), dict):
        return _strict_problem(schema["items"], what, (*context, "items"))
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _not_found(model: str) -> web.Response:
    return _error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


class OpenAIEmulator(Emulator):
    name = "openai"
    request_id_header = "x-request-id"

    def rate_limit_headers(self, limits: RateLimits, key: str) -> dict[str, str]:
        return limits.openai_headers(key)

    def rate_limited(self, refusal: Refusal, model: str) -> web.Response:
        """OpenAI's 429 for a rate limit, as real callers quote it: `{"error": {"message": "Rate limit
        reached for gpt-4o in organization org-… on tokens per min (TPM): Limit 30000, Used 29937,
        Requested 385. Please try again in 644ms. Visit https://platform.openai.com/account/rate-limits to
        learn more.", ...}}` (https://github.com/BuilderIO/micro-agent/issues/86,
        https://github.com/FoundationAgents/MetaGPT/issues/523), with `"type": "tokens", "param": null,
        "code": "rate_limit_exceeded"` (the whole body in https://github.com/TheR1D/shell_gpt/issues/653);
        "requests per min (RPM)" and `"type": "requests"` for the request limit, by the same pattern."""
        kind, unit = ("requests", "RPM") if refusal.limit_name == "requests" else ("tokens", "TPM")
        message = (
            f"Rate limit reached for {model} in organization org-emulator on {kind} per min ({unit}): "
            f"Limit {refusal.limit}, Used {refusal.used}, Requested {refusal.requested}. Please try again in "
            f"{go_duration(refusal.retry_after)}. Visit https://platform.openai.com/account/rate-limits to "
            "learn more."
        )
        body = {"error": {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}}
        return web.json_response(body, status=429)

    def default_snapshots(self) -> dict[str, str]:
        return dict(SNAPSHOTS)

    def url_for(self, host: str, port: int) -> str:
        return f"http://{host}:{port}/v1"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._chat),
            web.post("/v1/responses", self._responses),
            web.get("/v1/models", self._models),
            # Azure OpenAI: the deployment (the model id) in the path, api-version in the query.
            web.post("/openai/deployments/{deployment}/chat/completions", self._azure_chat),
            web.get("/openai/models", self._models),
            # Azure OpenAI's Responses API: /openai/responses with an api-version (2025-03-01-preview or
            # later), or the v1 API /openai/v1/responses without one; the deployment goes in `model`.
            web.post("/openai/responses", self._azure_responses),
            web.post("/openai/v1/responses", self._azure_responses),
        ]

    def _authorised(self, request: web.Request) -> bool:
        """OpenAI takes `Authorization: Bearer <key>`, Azure OpenAI `api-key: <key>`."""
        return request.headers.get("Authorization", "") == f"Bearer {self.api_key}" or (
            request.path.startswith("/openai/") and request.headers.get("api-key") == self.api_key
        )

    def _refuse_key(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        masked = f"{given[:3]}{'*' * max(0, len(given) - 7)}{given[-4:]}" if len(given) > 7 else "***"
        return _error(
            401,
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if not self._authorised(request):
            return self._refuse_key(request)
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "openai"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})

    async def _azure_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if "api-version" not in request.query:
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        if isinstance(body, dict):
            body["model"] = request.match_info["deployment"]  # the deployment decides, whatever the body says
        return await self._answer(request, body)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if not self._authorised(request):
            return self._refuse_key(request)
        model = body.get("model") if isinstance(body, dict) else None
        if isinstance(model, str) and model in RETIRED:
            return _not_found(model)
        reasoning = isinstance(model, str) and model.startswith(REASONING_PREFIXES)
        return await openai_responses.answer(self, request, body, reasoning)

    async def _azure_responses(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/openai/responses" and not request.query.get("api-version", "") >= "2025-03-01":
            await self.record(request)
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        return await self._responses(request)

    def failure(self, request: web.Request, directives: Directives, model: str) -> web.Response:
        return self._failure(request, directives, model)

    def cached_tokens_of(self, scope: Any, items: list[Any], texts: list[str]) -> int:
        """Automatic prompt caching over input items: the longest prefix seen before, from 1024 tokens,
        in steps of 128."""
        prefixes = [
            ((scope, items[:end]), sum(count_tokens(t) for t in texts[:end]))
            for end in range(1, len(items) + 1)
        ]
        hit = self.prompt_cache.hit(prefixes)
        self.prompt_cache.remember(prefixes)
        return hit - hit % CACHE_GRANULARITY

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, await self.record(request))

    async def _answer(self, request: web.Request, body: Any) -> web.StreamResponse:
        if not self._authorised(request):
            return self._refuse_key(request)
        problem = _problems(body)
        if problem is not None:
            message, param, code = problem
            return _error(400, message, param=param, code=code)
        if body["model"] in RETIRED:
            return _not_found(body["model"])
        messages = body["messages"]
        last_user = next((_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
        last_user, directives = parse_directives(last_user)
        if self.should_fail(request, directives):
            return self._failure(request, directives, body["model"])
        stop = body.get("stop") or []
        calls = self._calls(body, directives)
        prompt_texts = [parse_directives(_text(m.get("content")))[0] for m in messages]
        prompt_texts += [json.dumps(m["tool_calls"]) for m in messages if m.get("tool_calls")]
        prompt_texts += [json.dumps(t) for t in body.get("tools") or ()]
        reply = plan_reply(
            prompt_texts,
            last_user,
            directives,
            max_tokens=body.get("max_completion_tokens", body.get("max_tokens")),
            stop=[stop] if isinstance(stop, str) else stop,
            text=_scripted_text(body, messages),
        )
        if calls:
            arguments = sum(count_tokens(c.arguments_json) for c in calls)
            reply = Reply(
                tokens=[], finish="tool_calls", prompt_tokens=reply.prompt_tokens, extra_tokens=arguments
            )
        if directives.context_window is not None and reply.prompt_tokens > directives.context_window:
            return _error(
                400,
                f"This model's maximum context length is {directives.context_window} tokens. However, "
                f"your messages resulted in {reply.prompt_tokens} tokens. Please reduce the length of the "
                "messages.",
                param="messages",
                code="context_length_exceeded",
            )
        max_output = body.get("max_completion_tokens", body.get("max_tokens")) or 0
        produced = reply.completion_tokens
        if (
            limited := self.over_rate_limit(request, body["model"], reply.prompt_tokens, max_output, produced)
        ) is not None:
            return limited
        reasoning = self._reasoning_tokens(body, directives)
        cached = self._cached_tokens(body, prompt_texts)
        completion = reply.completion_tokens + reasoning
        usage = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": reply.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        identity = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "created": int(time.time()),
            "model": self.served_as.get(body["model"], body["model"]),
            "system_fingerprint": "fp_emulator",
        }
        finish = FINISH.get(reply.finish, reply.finish)
        if not body.get("stream"):
            for _ in reply.tokens:
                await self.pace(directives)
            answer: dict[str, Any] = {
                "role": "assistant",
                "content": None if calls else reply.text,
                "refusal": None,
                "annotations": [],
            }
            if calls:
                answer["tool_calls"] = [_tool_call(call) for call in calls]
            choice = {"index": 0, "finish_reason": finish, "logprobs": None, "message": answer}
            reported = {} if directives.no_usage else {"usage": usage}
            return web.json_response(
                {**identity, "object": "chat.completion", "choices": [choice], **reported}
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        deltas = _call_deltas(calls) if calls else [{"content": token} for token in reply.tokens]
        return await self._stream(
            request, identity, deltas, finish, usage if include_usage else None, directives
        )

    def _calls(self, body: dict[str, Any], directives: Directives) -> list[PlannedCall]:
        """The tool calls to answer with: when tools are offered, the tool choice allows a call, and
        the last turn is the user's."""
        tools = [
            ToolSpec(t["function"]["name"], t["function"].get("parameters") or {})
            for t in body.get("tools") or ()
        ]
        choice = body.get("tool_choice", "auto")
        last = body["messages"][-1]["role"]
        if not tools or choice == "none" or last != "user" or (directives.no_tool and choice == "auto"):
            return []
        allowed = [choice["function"]["name"]] if isinstance(choice, dict) else None
        self._turn += 1
        return plan_calls(
            tools,
            allowed,
            directives,
            parallel=body.get("parallel_tool_calls", True) is not False,
            id_prefix="call_emu",
            turn=self._turn,
        )

    def _reasoning_tokens(self, body: dict[str, Any], directives: Directives) -> int:
        """Reasoning models think by the effort asked. Unlike the real API (medium by default), none
        without `reasoning_effort`: the counts of plain calls stay predictable for tests."""
        if directives.reasoning_tokens is not None:
            return directives.reasoning_tokens
        return thinking_tokens(body.get("reasoning_effort"))

    def _cached_tokens(self, body: dict[str, Any], prompt_texts: list[str]) -> int:
        """Automatic prompt caching: the longest prefix of messages seen before, from 1024 tokens, in
        steps of 128."""
        messages = body["messages"]
        prefixes = [
            ((body.get("tools"), messages[:end]), sum(count_tokens(t) for t in prompt_texts[:end]))
            for end in range(1, len(messages) + 1)
        ]
        hit = self.prompt_cache.hit(prefixes)
        self.prompt_cache.remember(prefixes)
        return hit - hit % CACHE_GRANULARITY

    def _failure(self, request: web.Request, directives: Directives, model: str) -> web.Response:
        """The directive's failure: a `fail` kind in the API's own shape, else the bare `status`."""
        match directives.fail:
            case "quota" | "billing":
                return _error(429, QUOTA_MESSAGE, code="insufficient_quota")
            case "auth":
                return self._refuse_key(request)
            case "retired":
                return _not_found(model)
        status = directives.status or 500
        return _error(
            status,
            self.failure_message(request, directives, f"emulated failure {status}"),
            headers=self.retry_headers(directives),
        )

    async def _stream(
        self,
        request: web.Request,
        identity: dict[str, Any],
        deltas: list[dict[str, Any]],
        finish: str,
        usage: dict[str, Any] | None,
        directives: Directives,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        extra = {"usage": None} if usage is not None else {}

        async def send(choices: list[dict[str, Any]], **more: Any) -> None:
            chunk = {**identity, "object": "chat.completion.chunk", "choices": choices, **extra, **more}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        async def send_error() -> None:
            message, kind, code = STREAM_ERRORS[directives.error or "server"]
            error = {"error": {"message": message, "type": kind, "param": None, "code": code}}
            await response.write(f"data: {json.dumps(error)}\n\n".encode())

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        with self.streaming():
            first = deltas[0] if deltas and "tool_calls" in deltas[0] else {"content": ""}
            await send([choice({"role": "assistant", **first, "refusal": None})])
            for index, delta in enumerate(deltas[1:] if "tool_calls" in first else deltas):
                if await self.interrupted(request, response, directives, index, send_error):
                    return response
                await self.pace(directives)
                await send([choice(delta)])
            await send([choice({}, finish)])
            if usage is not None and not directives.no_usage:
                await send([], usage=usage)
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response


def _tool_call(call: PlannedCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json},
    }


def _call_deltas(calls: list[PlannedCall]) -> list[dict[str, Any]]:
    """Stream deltas of tool calls as the API sends them: per call, one delta with its index, id, type
    and name and empty arguments, then the arguments in fragments."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        start = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append({"content": None, "tool_calls": [start]} if index == 0 else {"tool_calls": [start]})
        text = call.arguments_json
        for offset in range(0, len(text), 8):
            deltas.append(
                {"tool_calls": [{"index": index, "function": {"arguments": text[offset : offset + 8]}}]}
            )
    return deltas


def _scripted_text(body: dict[str, Any], messages: list[Any]) -> str | None:
    """The text a reply scripts: the answer to tool results when they end the conversation, JSON for a
    JSON response format, else None (the echo)."""
    if messages[-1]["role"] == "tool":
        names = {call["id"]: call["function"]["name"] for m in messages for call in m.get("tool_calls") or ()}
        results = []
        for message in reversed(messages):
            if message["role"] != "tool":
                break
            results.append((names.get(message["tool_call_id"], "?"), _text(message.get("content"))))
        return result_reply(results[::-1])
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return json_reply(response_format["json_schema"].get("schema", {}))
    if response_format.get("type") == "json_object":
        return json_reply(None)
    return None


error_response = _error
"""An error in the API's shape (`{"error": {"message", "type", "param", "code"}}`), for both wire APIs."""
strict_problem = _strict_problem
