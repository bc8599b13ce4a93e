"""An emulator of the Gemini Developer API: `POST models/{model}:generateContent`,
`:streamGenerateContent?alt=sse` and `GET models`, camelCase JSON as the real API speaks it, refusing
what the real API refuses, errors in Google's shape ({"error": {"code", "message", "status", "details"}}).

Besides the shared directives, `finish=prompt_blocked` answers as Gemini does for a prompt it blocks
outright: `promptFeedback.blockReason` and no candidates.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from server.emulators.base import Directives, Emulator, Reply, parse_directives, plan_reply

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
BODY_KEYS = {
    "contents",
    "systemInstruction",
    "generationConfig",
    "safetySettings",
    "tools",
    "toolConfig",
    "cachedContent",
    "serviceTier",
}
CONFIG_KEYS = {
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
    "speechConfig",
    "imageConfig",
    "enableEnhancedCivicAnswers",
}
FLOAT_RANGES = {"temperature": (0.0, 2.0), "topP": (0.0, 1.0)}
INT_RANGES: dict[str, tuple[int, int | None]] = {
    "maxOutputTokens": (1, None),
    "candidateCount": (1, 8),
    "topK": (1, None),
}
PART_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode"}
MAX_STOP_SEQUENCES = 5
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


def _parts_text(content: Any) -> str:
    parts = content.get("parts", []) if isinstance(content, dict) else []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _contents_problem(contents: Any) -> tuple[str, str] | None:
    if not isinstance(contents, list) or not contents:
        return "contents", "contents is not specified"
    for index, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role", "user") not in ("user", "model"):
            return f"contents[{index}].role", "Please use a valid role: user, model."
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"contents[{index}].parts", "contents.parts must not be empty."
        for number, part in enumerate(parts):
            where = f"contents[{index}].parts[{number}]"
            if not isinstance(part, dict) or not PART_DATA & part.keys():
                return f"{where}.data", "required oneof field 'data' must have one initialized field"
            if "text" in part and (not isinstance(part["text"], str) or not part["text"]):
                return f"{where}.text", "text part must not be empty."
    return None


def _config_problem(config: Any) -> tuple[str, str] | None:
    if not isinstance(config, dict):
        return "generation_config", "must be an object"
    for key in config:
        if key not in CONFIG_KEYS:
            return "generation_config", f'Unknown name "{key}": Cannot find field.'
    for key, (low, high) in FLOAT_RANGES.items():
        value = config.get(key)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            return f"generation_config.{key}", f"must be in the range [{low}, {high}]."
    for key, (least, most) in INT_RANGES.items():
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least or value > (most or value):
            bounds = f"between [{least}, {most}]" if most else f"at least {least}"
            return f"generation_config.{key}", f"must be an integer {bounds}."
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return "generation_config.stop_sequences", "must be a list of strings."
    if len(stops) > MAX_STOP_SEQUENCES:
        return (
            "generation_config.stop_sequences",
            f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed; got {len(stops)}.",
        )
    return None


def _problem(body: Any) -> tuple[str, str] | None:
    """The first rule the request breaks, as (field, description), or None."""
    if not isinstance(body, dict):
        return "body", "Invalid JSON payload received."
    for key in body:
        if key not in BODY_KEYS:
            return key, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    if (problem := _contents_problem(body.get("contents"))) is not None:
        return problem
    system = body.get("systemInstruction")
    if system is not None and (not isinstance(system, dict) or not system.get("parts")):
        return "system_instruction.parts", "must not be empty."
    return _config_problem(body.get("generationConfig", {}))


def _usage(prompt: int, candidates: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    }


class GeminiEmulator(Emulator):
    name = "gemini"

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
        if (problem := _problem(body)) is not None:
            return _bad_request(*problem)
        contents = body["contents"]
        last_user = next((_parts_text(c) for c in reversed(contents) if c.get("role", "user") == "user"), "")
        last_user, directives = parse_directives(last_user)
        if self.should_fail(request, directives):
            return self._failure(request, directives, model, request.path.split("/")[1], method)
        config = body.get("generationConfig", {})
        texts = [parse_directives(_parts_text(c))[0] for c in contents]
        texts += [_parts_text(body["systemInstruction"])] if "systemInstruction" in body else []
        reply = plan_reply(
            texts,
            last_user,
            directives,
            max_tokens=config.get("maxOutputTokens"),
            stop=config.get("stopSequences", []),
        )
        if directives.context_window is not None and reply.prompt_tokens > directives.context_window:
            return _error(
                400,
                f"The input token count ({reply.prompt_tokens}) exceeds the maximum number of tokens "
                f"allowed ({directives.context_window}).",
            )
        identity = {"modelVersion": self.served_as.get(model, model), "responseId": uuid.uuid4().hex[:20]}
        if method == "generateContent":
            for _ in reply.tokens:
                await self.pace(directives)
            return web.json_response(_response(reply, reply.tokens, last=True) | identity)
        if request.query.get("alt") != "sse":
            # Without alt=sse the real API streams one JSON array; every SDK asks for SSE.
            return _error(400, "this emulator streams only with alt=sse")
        return await self._stream(request, reply, identity, directives)

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
        self, request: web.Request, reply: Reply, identity: dict[str, str], directives: Directives
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(chunk: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())

        with self.streaming():
            tokens = [] if reply.finish == "prompt_blocked" else reply.tokens
            for index in range(len(tokens)):
                if directives.drop_after is not None and index >= directives.drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if directives.malformed_after is not None and index >= directives.malformed_after:
                    await self.send_malformed(response)
                    return response
                if directives.error_after is not None and index >= directives.error_after:
                    await send(
                        {"error": _stream_error(directives.error or "overloaded", identity["modelVersion"])}
                    )
                    await response.write_eof()
                    return response
                await self.pace(directives)
                chunk = _response(
                    reply, tokens[index : index + 1], last=index == len(tokens) - 1, sent=index + 1
                )
                await send(chunk | identity)
            if not tokens:
                await send(_response(reply, [], last=True) | identity)
            await response.write_eof()
        return response


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


def _response(reply: Reply, tokens: list[str], *, last: bool, sent: int | None = None) -> dict[str, Any]:
    """A GenerateContentResponse carrying `tokens`; the last one has the finish reason and full usage."""
    if reply.finish == "prompt_blocked":
        return {
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {
                "promptTokenCount": reply.prompt_tokens,
                "totalTokenCount": reply.prompt_tokens,
            },
        }
    candidate: dict[str, Any] = {"index": 0}
    if tokens:  # the API sends no content (rather than an empty text part) when there is no text
        candidate["content"] = {"parts": [{"text": "".join(tokens)}], "role": "model"}
    if last:
        candidate["finishReason"] = FINISH.get(reply.finish, reply.finish)
    completion = reply.completion_tokens if sent is None else sent
    return {"candidates": [candidate], "usageMetadata": _usage(reply.prompt_tokens, completion)}


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
