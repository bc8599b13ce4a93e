"""An emulator of the Gemini Developer API: `POST models/{model}:generateContent`,
`:streamGenerateContent?alt=sse` and `GET models`, camelCase JSON as the real API speaks it, refusing
what the real API refuses, errors in Google's shape ({"error": {"code", "message", "status", "details"}}).

Besides the shared directives, `finish=prompt_blocked` answers as Gemini does for a prompt it blocks
outright: `promptFeedback.blockReason` and no candidates.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from server.emulators import gemini_rules as thinking_rules
from server.emulators.base import Directives, Emulator, Reply, count_tokens, parse_directives, plan_reply
from server.emulators.gemini_rules import (
    call_key,
    parts_text,
    request_problem,
    responses_of,
    signature_problem,
)
from server.emulators.ratelimits import Refusal
from server.emulators.scripting import (
    PlannedCall,
    ToolSpec,
    json_reply,
    plan_calls,
    result_reply,
    sign,
    thinking_text,
    thinking_tokens,
)

# google-genai 3.x calls /v1 by default, older SDKs and the API reference /v1beta: both are served.
API_VERSIONS = ("/v1", "/v1beta")
VERTEX = "/v1beta1"
"""The API version google-genai speaks to Vertex AI."""
PUBLISHER = "publishers/google/models"
MODELS = ("gemini-3.1-flash-lite", "gemini-3.5-flash", "gemini-3.1-pro-preview")
# Shut down: the API answers 404 NOT_FOUND ("models/... is not found for API version ...").
RETIRED = frozenset(
    {"gemini-1.0-pro", "gemini-1.5-pro", "gemini-1.5-flash", "gemini-2.0-flash-exp", "gemini-2.0-flash"}
    | {"gemini-2.5-flash", "gemini-2.5-pro"}
)
# The model version each alias is served by, as the API names it in `modelVersion`.
SNAPSHOTS = {"gemini-flash-latest": "gemini-3.5-flash", "gemini-flash-lite-latest": "gemini-3.1-flash-lite"}
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information on "
    "this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
LEVEL_EFFORT = {"MINIMAL": "minimal", "LOW": "low", "MEDIUM": "medium", "HIGH": "high", "XHIGH": "xhigh"}
CACHE_MINIMUM = 1024
"""Implicit caching: the fewest prompt tokens the API caches."""
KEY_INVALID = "API key not valid. Please pass a valid API key."
NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def _error(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status, headers=headers)


def _bad_request(field: str, description: str) -> web.Response:
    """400 INVALID_ARGUMENT with a google.rpc.BadRequest naming the field, as the API reports bad values."""
    violation = {"field": field, "description": description}
    detail = {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
    return _error(400, f"* GenerateContentRequest.{field}: {description}\n", [detail])


def _key_invalid() -> web.Response:
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
    return _error(400, KEY_INVALID, [info])


OPAQUE = {"args", "response", "parameters", "parametersJsonSchema", "responseSchema", "responseJsonSchema"}
"""Fields whose value is the caller's data (arguments, results, schemas): their keys are kept as sent."""


def _camel_case(value: Any) -> Any:
    """The request with every field name in camelCase: the API reads proto JSON, which takes a field's
    JSON name or its proto name (the SDK sends some of each, e.g. `include_thoughts`)."""
    if isinstance(value, list):
        return [_camel_case(item) for item in value]
    if not isinstance(value, dict):
        return value
    renamed: dict[str, Any] = {}
    for key, item in value.items():
        head, *rest = key.split("_")
        name = head + "".join(word[:1].upper() + word[1:] for word in rest)
        renamed[name] = item if name in OPAQUE else _camel_case(item)
    return renamed


class GeminiEmulator(Emulator):
    name = "gemini"

    def rate_limited(self, refusal: Refusal, model: str) -> web.Response:
        """Gemini's 429 for a per-minute quota: RESOURCE_EXHAUSTED with a QuotaFailure naming the
        per-minute quota and a RetryInfo (`_quota_details`); no rate-limit headers, on any answer
        (ai.google.dev/gemini-api/docs/rate-limits lists the limits; the API reports none in headers)."""
        delay = Directives(retry_after=f"{max(refusal.retry_after, 0.001):.3f}".rstrip("0").rstrip("."))
        return _error(429, QUOTA_MESSAGE, _quota_details(model, per_day=False, directives=delay))

    def routes(self) -> list[web.RouteDef]:
        generate = [web.post(f"{version}/models/{{call}}", self._generate) for version in API_VERSIONS]
        vertex = [
            # Gemini on Vertex AI: a project and a location in the path, an OAuth bearer token.
            web.post(
                f"{VERTEX}/projects/{{project}}/locations/{{location}}/{PUBLISHER}/{{call}}", self._generate
            ),
            web.get(f"{VERTEX}/{PUBLISHER}", self._models),
        ]
        return generate + [web.get(f"{version}/models", self._models) for version in API_VERSIONS] + vertex

    def default_snapshots(self) -> dict[str, str]:
        return dict(SNAPSHOTS)

    def _refusal(self, request: web.Request) -> web.Response | None:
        """Gemini answers a missing key with 403 and a wrong one with 400 API_KEY_INVALID; Vertex AI a
        wrong token with 401 UNAUTHENTICATED."""
        if request.path.startswith(f"{VERTEX}/"):
            if request.headers.get("Authorization") == f"Bearer {self.api_key}":
                return None
            return _error(401, "Request had invalid authentication credentials.")
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key is None:
            return _error(403, NO_KEY)
        return None if key == self.api_key else _key_invalid()

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            size = int(request.query.get("pageSize") or 0) or 50  # 0 or unset: the default size
            start = int(request.query.get("pageToken") or 0)
            if size < 0 or start < 0:
                raise ValueError
        except ValueError:
            return _error(400, "Invalid value for pageSize or pageToken.")
        page = MODELS[start : start + size]
        if request.path.startswith(f"{VERTEX}/"):  # Vertex lists publisher models
            body: dict[str, Any] = {"publisherModels": [{"name": f"{PUBLISHER}/{m}"} for m in page]}
        else:
            body = {"models": [_model(m) for m in page]}
        if start + size < len(MODELS):
            body["nextPageToken"] = str(start + size)
        return web.json_response(body)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if (refusal := self._refusal(request)) is not None:
            return refusal
        model, _, method = request.match_info["call"].partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return _error(404, f"Method not found: {method}")
        if not model.startswith("gemini-") or model in RETIRED:
            return _error(404, _not_found(model, request.path.split("/")[1], method))
        body = _camel_case(body)
        if (problem := request_problem(body)) is not None:
            return _bad_request(*problem)
        # What each model's thinking takes (levels, stopping): server/emulators/gemini_rules.py.
        if (refused := thinking_rules.thinking_problem(model, body.get("generationConfig", {}))) is not None:
            return _error(400, refused)
        contents = body["contents"]
        last_user = next((parts_text(c) for c in reversed(contents) if c.get("role", "user") == "user"), "")
        last_user, directives = parse_directives(last_user)
        if self.should_fail(request, directives):
            return self._failure(request, directives, model, request.path.split("/")[1], method)
        if model.startswith("gemini-3") and (problem := signature_problem(contents)) is not None:
            return _bad_request(*problem)
        config = body.get("generationConfig", {})
        texts = [parse_directives(parts_text(c))[0] for c in contents]
        texts += [json.dumps(p) for c in contents for p in c["parts"] if "text" not in p]
        texts += [json.dumps(t) for t in body.get("tools") or ()]
        texts += [parts_text(body["systemInstruction"])] if "systemInstruction" in body else []
        reply = plan_reply(
            texts,
            last_user,
            directives,
            max_tokens=config.get("maxOutputTokens"),
            stop=config.get("stopSequences", []),
            text=_scripted_text(body),
        )
        max_output = config.get("maxOutputTokens") or 0
        limited = self.over_rate_limit(
            request, model, reply.prompt_tokens, max_output, reply.completion_tokens
        )
        if limited is not None:
            return limited
        calls = self._calls(body, directives)
        if calls:
            arguments = sum(count_tokens(json.dumps(c.arguments)) for c in calls)
            reply = Reply(tokens=[], finish="stop", prompt_tokens=reply.prompt_tokens, extra_tokens=arguments)
        if directives.context_window is not None and reply.prompt_tokens > directives.context_window:
            return _error(
                400,
                f"The input token count ({reply.prompt_tokens}) exceeds the maximum number of tokens "
                f"allowed ({directives.context_window}).",
            )
        thinking = config.get("thinkingConfig") or {}
        thought = directives.reasoning_tokens or _thought_tokens(thinking)
        turn = Turn(
            reply=reply,
            calls=calls,
            thought=thinking_text(thought) if thinking.get("includeThoughts") and thought else "",
            thought_tokens=thought,
            cached=min(self._cached(body), reply.prompt_tokens),
        )
        identity = {"modelVersion": self.served_as.get(model, model), "responseId": uuid.uuid4().hex[:20]}
        if method == "generateContent":
            for _ in reply.tokens:
                await self.pace(directives)
            return web.json_response(turn.response(turn.all_parts(), last=True) | identity)
        if request.query.get("alt") != "sse":
            # Without alt=sse the real API streams one JSON array; every SDK asks for SSE.
            return _error(400, "this emulator streams only with alt=sse")
        return await self._stream(request, turn, identity, directives)

    def _calls(self, body: dict[str, Any], directives: Directives) -> list[PlannedCall]:
        """Function calls to answer with: when functions are declared, the mode allows calling them,
        and the last turn is the user's own words (not function responses)."""
        tools = [
            ToolSpec(d["name"], d.get("parametersJsonSchema") or d.get("parameters") or {})
            for t in body.get("tools") or ()
            for d in t.get("functionDeclarations") or ()
        ]
        config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode = str(config.get("mode", "AUTO")).upper()
        last = body["contents"][-1]
        if not tools or mode == "NONE" or last.get("role", "user") != "user" or responses_of(last):
            return []
        if directives.no_tool and mode in ("AUTO", "MODE_UNSPECIFIED"):
            return []
        self._turn += 1
        return plan_calls(
            tools,
            config.get("allowedFunctionNames"),
            directives,
            parallel=True,
            id_prefix="",
            turn=self._turn,
        )

    def _cached(self, body: dict[str, Any]) -> int:
        """Implicit caching: the longest prefix of contents (after tools and the system instruction)
        seen before, from 1024 tokens."""
        head = (body.get("tools"), body.get("systemInstruction"))
        contents = body["contents"]
        counted = [
            count_tokens(parts_text(c))
            + sum(count_tokens(json.dumps(p)) for p in c["parts"] if "text" not in p)
            for c in contents
        ]
        extra = sum(count_tokens(json.dumps(t)) for t in body.get("tools") or ())
        extra += count_tokens(parts_text(body["systemInstruction"])) if "systemInstruction" in body else 0
        prefixes = [((head, contents[:end]), extra + sum(counted[:end])) for end in range(len(contents) + 1)]
        hit = self.prompt_cache.hit(prefixes)
        self.prompt_cache.remember(prefixes)
        return hit

    def _failure(
        self, request: web.Request, directives: Directives, model: str, version: str, method: str
    ) -> web.Response:
        """The directive's failure in Google's shape: a `fail` kind as the API sends it, else the bare
        `status` (429 carries a RetryInfo when a delay is set)."""
        match directives.fail:
            case "quota" | "billing":
                return _error(429, QUOTA_MESSAGE, _quota_details(model, per_day=True, directives=directives))
            case "rate_minute":
                return _error(429, QUOTA_MESSAGE, _quota_details(model, per_day=False, directives=directives))
            case "auth":
                return _key_invalid()
            case "retired":
                return _error(404, _not_found(model, version, method))
        assert directives.status is not None
        details: list[dict[str, Any]] = []
        if directives.status == 429 and directives.retry_after is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{directives.retry_after}s",
                }
            )
        messages = {
            429: "You exceeded your current quota, please check your plan and billing details.",
            500: "An internal error has occurred. Please retry or report in the troubleshooting guide.",
            503: "The model is overloaded. Please try again later.",
        }
        message = self.failure_message(
            request, directives, messages.get(directives.status, f"emulated failure {directives.status}")
        )
        return _error(directives.status, message, details, self.retry_headers(directives))

    async def _stream(
        self, request: web.Request, turn: Turn, identity: dict[str, str], directives: Directives
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(chunk: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())

        async def send_error() -> None:
            await send({"error": _stream_error(directives.error or "overloaded", identity["modelVersion"])})

        with self.streaming():
            chunks = [] if turn.reply.finish == "prompt_blocked" else turn.chunks()
            sent = 0
            for index, parts in enumerate(chunks):
                if await self.interrupted(request, response, directives, index, send_error):
                    return response
                await self.pace(directives)
                sent += sum(1 for p in parts if "text" in p and not p.get("thought"))
                await send(turn.response(parts, last=index == len(chunks) - 1, sent=sent) | identity)
            if not chunks:
                await send(turn.response([], last=True) | identity)
            await response.write_eof()
        return response


def _thought_tokens(thinking: dict[str, Any]) -> int:
    """Tokens the emulator thinks: by level or budget; none without a thinking config (unlike the real
    Gemini 3, which thinks by default: the counts of plain calls stay predictable for tests)."""
    if "thinkingLevel" in thinking:
        return thinking_tokens(LEVEL_EFFORT.get(str(thinking["thinkingLevel"]).upper()))
    budget = thinking.get("thinkingBudget")
    if budget == -1:
        return thinking_tokens("medium")
    return thinking_tokens(budget=budget) if budget else 0


@dataclass(slots=True)
class Turn:
    """A planned answer: text (or function calls), thoughts shown or not, and its usage."""

    reply: Reply
    calls: list[PlannedCall]
    thought: str
    """Thought summary text, when includeThoughts asks for it."""
    thought_tokens: int
    cached: int

    def thought_parts(self) -> list[dict[str, Any]]:
        return [{"text": self.thought, "thought": True}] if self.thought else []

    def call_parts(self) -> list[dict[str, Any]]:
        """Function calls; the first carries the signature the next request must send back."""
        parts: list[dict[str, Any]] = []
        for index, call in enumerate(self.calls):
            part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
            if index == 0:
                part["thoughtSignature"] = sign(call_key(part["functionCall"]))
            parts.append(part)
        return parts

    def all_parts(self) -> list[dict[str, Any]]:
        if self.calls:
            return self.thought_parts() + self.call_parts()
        text = [{"text": self.reply.text}] if self.reply.tokens else []
        if text and self.thought_tokens:
            text[0]["thoughtSignature"] = sign(self.reply.text)
        return self.thought_parts() + text

    def chunks(self) -> list[list[dict[str, Any]]]:
        """The parts of each stream chunk: thoughts, then text by token (or the calls in one chunk)."""
        chunks = [self.thought_parts()] if self.thought else []
        if self.calls:
            return [*chunks, self.call_parts()]
        texts = [[{"text": token}] for token in self.reply.tokens]
        if texts and self.thought_tokens:
            texts[-1][0]["thoughtSignature"] = sign(self.reply.text)
        return chunks + texts

    def response(self, parts: list[dict[str, Any]], *, last: bool, sent: int | None = None) -> dict[str, Any]:
        """A GenerateContentResponse carrying `parts`; the last has the finish reason and full usage."""
        reply = self.reply
        if reply.finish == "prompt_blocked":
            return {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {
                    "promptTokenCount": reply.prompt_tokens,
                    "totalTokenCount": reply.prompt_tokens,
                },
            }
        candidate: dict[str, Any] = {"index": 0}
        if parts:  # the API sends no content (rather than an empty text part) when there is no text
            candidate["content"] = {"parts": parts, "role": "model"}
        if last:
            candidate["finishReason"] = FINISH.get(reply.finish, reply.finish)
        completion = reply.completion_tokens if sent is None or last else sent
        usage: dict[str, int] = {
            "promptTokenCount": reply.prompt_tokens,
            "candidatesTokenCount": completion,
            "totalTokenCount": reply.prompt_tokens + completion + self.thought_tokens,
        }
        if self.thought_tokens:
            usage["thoughtsTokenCount"] = self.thought_tokens
        if self.cached:
            usage["cachedContentTokenCount"] = self.cached
        return {"candidates": [candidate], "usageMetadata": usage}


def _scripted_text(body: dict[str, Any]) -> str | None:
    """The answer to function responses that end the conversation, JSON for a JSON response type,
    else None (the echo)."""
    last = body["contents"][-1]
    responses = [p["functionResponse"] for p in responses_of(last)]
    if last.get("role", "user") == "user" and responses:
        return result_reply([(r["name"], _result_text(r.get("response"))) for r in responses])
    config = body.get("generationConfig") or {}
    if config.get("responseMimeType") == "application/json":
        schema = config.get("responseJsonSchema", config.get("responseSchema"))
        return json_reply(schema)
    return None


def _result_text(response: Any) -> str:
    """A function response as text: its `output` or `result` when that is all it holds, else its JSON."""
    if isinstance(response, dict) and len(response) == 1:
        value = response.get("output", response.get("result"))
        if isinstance(value, str):
            return value
    return json.dumps(response)


def _not_found(model: str, version: str, method: str) -> str:
    return (
        f"models/{model} is not found for API version {version}, or is not supported for {method}. Call "
        "ListModels to see the list of available models and their supported methods."
    )


def _quota_details(model: str, *, per_day: bool, directives: Directives) -> list[dict[str, Any]]:
    """google.rpc details of a 429 as the API sends them: a QuotaFailure naming the quota (per day or
    per minute), a Help link, and a RetryInfo when a delay is set."""
    period = "PerDay" if per_day else "PerMinute"
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": f"GenerateRequests{period}PerProjectPerModel-FreeTier",
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": "50" if per_day else "10",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if directives.retry_after is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{directives.retry_after}s"}
        )
    return details


def _stream_error(kind: str, model: str) -> dict[str, Any]:
    """The `error` object of an in-stream error event, by kind."""
    code, status, message = {
        "overloaded": (503, "UNAVAILABLE", "The model is overloaded."),
        "server": (500, "INTERNAL", "An internal error has occurred."),
        "rate_limit": (429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE),
        "quota": (429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE),
        "invalid_request": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    }[kind]
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if kind in ("rate_limit", "quota"):
        error["details"] = _quota_details(model, per_day=kind == "quota", directives=Directives())
    return error


def _model(model_id: str) -> dict[str, Any]:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": model_id,
        "description": f"Emulated {model_id}",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1,
        "maxTemperature": 2,
        "topP": 0.95,
        "topK": 64,
    }
