"""What the three emulators share: an aiohttp server with a request log, deterministic replies and
fault injection driven from the prompt.

Fault injection: the last user message may carry one directive, `[[emulate: key=value ...]]`, which is
stripped from the text the emulator echoes. Keys:

    status=429          answer with this HTTP status and the provider's own error body
    retry_after=2       with `status`: a Retry-After header, in seconds
    retry_after_ms=150  with `status`: a retry-after-ms header
    times=2             with `status`: fail only the first N requests of this X-Trace-ID, then serve
    on=anthropic        with `status`: only this emulator (openai | anthropic | gemini) fails
    finish=length       end with this finish reason (length | content_filter | stop)
    token_delay_ms=20   sleep this long before each token (also settable per emulator)
    drop_after=3        stream: send N chunks, then cut the connection
    error_after=3       stream: send N chunks, then the provider's in-stream error event
    malformed_after=3   stream: send N chunks, then an SSE event whose data is not JSON
    echo_key=1          with `status`: the error message repeats every request header, credentials
                        included (a careless provider; for secret-leak tests)
    reply=some_words    reply with these words (underscores become spaces) instead of the echo
    fail=quota          answer with the provider's own error of this kind, body and status as the real
                        API sends them: quota (OpenAI 429 insufficient_quota, Anthropic 400 "credit
                        balance is too low", Gemini 429 with a per-day QuotaFailure), billing (Anthropic
                        402 billing_error), auth (the provider's refusal of a key), retired (the 404 of
                        a model the provider no longer serves), rate_minute (Gemini 429 with a
                        per-minute QuotaFailure). Honours `times` and `on` as `status` does
    error=rate_limit    with `error_after`: the kind of the in-stream error event (overloaded,
                        rate_limit, invalid_request, quota, server); default overloaded / server_error
    context_window=50   refuse, as the provider does, a prompt of more tokens than this
    no_usage=1          OpenAI: a reply without `usage` (a stream without the usage chunk even when
                        include_usage asks for it)
    tool=, tool_args=, tool_calls=, no_tool=, reasoning_tokens=
                        scripted tool calls and reasoning: see server/emulators/scripting.py

Every response carries the provider's request id where the real API sends one (OpenAI `x-request-id`,
Anthropic `request-id`; Gemini names a served response in `responseId`), and names the model that
served: a dated snapshot for an alias where the provider has one (`SNAPSHOTS` in each emulator).

The reply is `emulator reply: <last user text>`, split into tokens at word boundaries, so tests can
predict content, usage and where a stop sequence cuts it.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from server.emulators.ratelimits import RateLimits, Refusal
from server.emulators.scripting import PromptCache

_RATE_LIMIT_KEY = web.RequestKey("rate_limit_key", str)
"""The key a request was charged to, for the rate-limit headers of its answer."""
DEMO_KEY = "demo-key-not-secret"
"""The key the emulators accept unless told otherwise: `llm-gateway serve --demo` and
`python -m server.emulators` use the same one (docs/emulators.md)."""

_DIRECTIVE = re.compile(r"\[\[emulate:(?P<body>[^\]]*)\]\]")
_TOKEN = re.compile(r"\S+\s*")


@dataclass(slots=True)
class Directives:
    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    times: int | None = None
    on: str | None = None
    finish: str | None = None
    token_delay_ms: float | None = None
    drop_after: int | None = None
    error_after: int | None = None
    malformed_after: int | None = None
    echo_key: bool = False
    reply: str | None = None
    fail: str | None = None
    error: str | None = None
    context_window: int | None = None
    no_usage: bool = False
    tool: str | None = None
    tool_args: Any = None
    tool_calls: int = 1
    no_tool: bool = False
    reasoning_tokens: int | None = None


def parse_directives(text: str) -> tuple[str, Directives]:
    """Split `text` into the text without its directive and the directive's settings."""
    found = _DIRECTIVE.search(text)
    directives = Directives()
    if found is None:
        return text, directives
    for item in shlex.split(found.group("body")):
        key, _, value = item.partition("=")
        match key:
            case "status":
                directives.status = int(value)
            case "retry_after":
                directives.retry_after = value
            case "retry_after_ms":
                directives.retry_after_ms = value
            case "times":
                directives.times = int(value)
            case "on":
                directives.on = value
            case "finish":
                directives.finish = value
            case "token_delay_ms":
                directives.token_delay_ms = float(value)
            case "drop_after":
                directives.drop_after = int(value)
            case "error_after":
                directives.error_after = int(value)
            case "malformed_after":
                directives.malformed_after = int(value)
            case "echo_key":
                directives.echo_key = value not in ("", "0", "false")
            case "reply":
                directives.reply = value.replace("_", " ")
            case "fail":
                directives.fail = value
            case "error":
                directives.error = value
            case "context_window":
                directives.context_window = int(value)
            case "no_usage":
                directives.no_usage = value not in ("", "0", "false")
            case "tool":
                directives.tool = value
            case "tool_args":
                directives.tool_args = json.loads(value)
            case "tool_calls":
                directives.tool_calls = int(value)
            case "no_tool":
                directives.no_tool = value not in ("", "0", "false")
            case "reasoning_tokens":
                directives.reasoning_tokens = int(value)
    return (text[: found.start()] + text[found.end() :]).strip(), directives


def new_request_id() -> str:
    """An id in the shape the providers use (`req_` and 24 base62-ish characters)."""
    return f"req_{uuid.uuid4().hex[:24]}"


def count_tokens(text: str) -> int:
    """The emulators' tokenizer: one token per whitespace-separated word."""
    return len(text.split())


@dataclass(slots=True)
class Reply:
    """A planned reply: its tokens after max_tokens and stop sequences, and why it ends."""

    tokens: list[str]
    finish: str
    """One of stop | length | content_filter; each emulator maps it to its API's own value."""
    prompt_tokens: int
    extra_tokens: int = 0
    """Output tokens that are not text (tool call arguments)."""

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens) + self.extra_tokens


def plan_reply(
    prompt_texts: Sequence[str],
    last_user_text: str,
    directives: Directives,
    *,
    max_tokens: int | None,
    stop: Sequence[str] = (),
    text: str | None = None,
) -> Reply:
    """The reply: the directive's `reply`, else `text` when given (a tool result's answer, scripted
    JSON), else the echo of the last user text."""
    if directives.reply is not None:
        text = directives.reply
    elif text is None:
        text = f"emulator reply: {last_user_text}"
    finish = "stop"
    for sequence in stop:
        if sequence and sequence in text:
            text = text[: text.index(sequence)]
    tokens = _TOKEN.findall(text)
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        finish = "length"
    if directives.finish is not None:
        finish = directives.finish
    return Reply(tokens=tokens, finish=finish, prompt_tokens=sum(count_tokens(t) for t in prompt_texts))


@dataclass(slots=True, frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased header names."""
    body: Any


@dataclass
class Emulator:
    """Base of the three emulators: start/stop, the request log, failure counting, token pacing."""

    api_key: str
    token_delay_ms: float = 0.0
    requests: list[RecordedRequest] = field(default_factory=list)
    _failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _runner: web.AppRunner | None = None
    base_url: str = ""
    open_streams: int = 0
    """Streaming responses in progress right now."""
    stream_closed_at: list[float] = field(default_factory=list)
    """time.monotonic() of each streaming response's end (finished, failed, or the client went away)."""
    served_as: dict[str, str] = field(default_factory=dict)
    """The model the response names for a requested one (a dated snapshot of an alias); tests may add."""
    prompt_cache: PromptCache = field(default_factory=PromptCache)
    """Prompt prefixes seen, as the provider's prompt cache would hold them."""
    rate_limits: RateLimits | None = None
    """Per-key rate limits (server/emulators/ratelimits.py); None: none."""
    _turn: int = 0
    """Replies with tool calls so far: numbers their call ids."""
    _recorded: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at each recorded request, so a test can wait for one instead of polling."""
    _streams_changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a stream opens or closes (`wait_for_open_streams`)."""

    def __post_init__(self) -> None:
        self.served_as = {**self.default_snapshots(), **self.served_as}

    def default_snapshots(self) -> dict[str, str]:
        return {}

    name = "emulator"
    request_id_header: ClassVar[str | None] = None
    """The response header in which the provider names each request (None: it sends none)."""

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                *self.routes(),
                web.get("/_emulator/requests", self._request_log),
                web.get("/_emulator/ratelimits", self._rate_limit_counts),
            ]
        )
        app.on_response_prepare.append(self._stamp_request_id)
        return app

    async def _stamp_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.request_id_header is not None and self.request_id_header not in response.headers:
            response.headers[self.request_id_header] = new_request_id()
        key = request.get(_RATE_LIMIT_KEY)
        if self.rate_limits is not None and key is not None:
            for name, value in self.rate_limit_headers(self.rate_limits, key).items():
                response.headers.setdefault(name, value)

    async def _rate_limit_counts(self, _request: web.Request) -> web.Response:
        counts = self.rate_limits.counts() if self.rate_limits is not None else {"served": 0, "refused": 0}
        return web.json_response(counts)

    def rate_limit_headers(self, limits: RateLimits, key: str) -> dict[str, str]:
        """The provider's rate-limit headers on every answer (none by default: Gemini sends none)."""
        return {}

    def rate_limited(self, refusal: Refusal, model: str) -> web.Response:
        """The provider's own 429 for a request over a rate limit."""
        raise NotImplementedError

    def over_rate_limit(
        self, request: web.Request, model: str, prompt_tokens: int, max_output: int, produced: int
    ) -> web.Response | None:
        """Charge the request to its key's limits (its prompt and max output, then corrected to the output
        it produces), or its provider's 429 when a limit has no room."""
        if self.rate_limits is None:
            return None
        key = self.presented_key(request)
        request[_RATE_LIMIT_KEY] = key
        refusal = self.rate_limits.admit(key, prompt_tokens, max_output)
        if refusal is not None:
            return self.rate_limited(refusal, model)
        self.rate_limits.correct_output(key, max_output, produced)
        return None

    def presented_key(self, request: web.Request) -> str:
        """The credential the request presented: the rate limits are per key (organisation)."""
        for header in ("x-api-key", "x-goog-api-key", "api-key"):
            if value := request.headers.get(header):
                return value
        return request.headers.get("Authorization", "").removeprefix("Bearer ") or request.query.get(
            "key", ""
        )

    async def _request_log(self, _request: web.Request) -> web.Response:
        """The request log for tests in other processes (other languages); credentials left out."""
        hidden = {"authorization", "x-api-key", "x-goog-api-key"}
        entries = [
            {
                "method": r.method,
                "path": r.path,
                "headers": {k: v for k, v in r.headers.items() if k not in hidden},
            }
            for r in self.requests
        ]
        return web.json_response(entries)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port) and return the base URL clients should use."""
        self._runner = web.AppRunner(self.build_app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        bound_port: int = self._runner.addresses[0][1]
        self.base_url = self.url_for(host, bound_port)
        return self.base_url

    def url_for(self, host: str, port: int) -> str:
        """The base URL the provider's SDK takes; subclasses add a path prefix such as `/v1`."""
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def record(self, request: web.Request) -> Any:
        """Log the request (and return its JSON body, or None when it has none or is not JSON)."""
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
            )
        )
        self._recorded.set()
        return body

    async def wait_for_requests(self, count: int, method: str = "POST") -> None:
        """Return once `count` requests with `method` have been recorded (tests wait on this)."""
        while sum(r.method == method for r in self.requests) < count:
            self._recorded.clear()
            await self._recorded.wait()

    def should_fail(self, request: web.Request, directives: Directives) -> bool:
        """Whether the directive's `status` or `fail` applies to this request (honouring `times` per
        trace id)."""
        if (directives.status is None and directives.fail is None) or directives.on not in (None, self.name):
            return False
        if directives.times is None:
            return True
        key = request.headers.get("X-Trace-ID", "")
        self._failures[key] += 1
        return self._failures[key] <= directives.times

    def failure_message(self, request: web.Request, directives: Directives, message: str) -> str:
        """The error message of an injected failure; with `echo_key`, every header of the request."""
        if not directives.echo_key:
            return message
        return f"{message}; request headers were {dict(request.headers)}"

    def retry_headers(self, directives: Directives) -> dict[str, str]:
        headers: dict[str, str] = {}
        if directives.retry_after is not None:
            headers["retry-after"] = directives.retry_after
        if directives.retry_after_ms is not None:
            headers["retry-after-ms"] = directives.retry_after_ms
        return headers

    async def send_malformed(self, response: web.StreamResponse) -> None:
        """An SSE event whose data is not JSON, then the end of the response."""
        await response.write(b'data: {"choices": [{"delta": {"content": "oops"\n\n')
        await response.write_eof()

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """Wrap the body of a streaming response, so tests can see streams open and close."""
        self.open_streams += 1
        self._streams_changed.set()
        try:
            yield
        finally:
            self.open_streams -= 1
            self.stream_closed_at.append(time.monotonic())
            self._streams_changed.set()

    async def wait_for_open_streams(self, count: int) -> None:
        """Return once exactly `count` streams are open (tests wait on this instead of polling)."""
        while self.open_streams != count:
            self._streams_changed.clear()
            await self._streams_changed.wait()

    async def interrupted(
        self,
        request: web.Request,
        response: web.StreamResponse,
        directives: Directives,
        index: int,
        send_error: Callable[[], Awaitable[None]],
    ) -> bool:
        """The fault a directive injects before a stream's chunk number `index`, if any (the connection
        cut, a malformed event, or the provider's in-stream error via `send_error`): True when the
        response has ended and the stream must stop."""
        if directives.drop_after is not None and index >= directives.drop_after:
            assert request.transport is not None
            request.transport.close()
            return True
        if directives.malformed_after is not None and index >= directives.malformed_after:
            await self.send_malformed(response)
            return True
        if directives.error_after is not None and index >= directives.error_after:
            await send_error()
            await response.write_eof()
            return True
        return False

    async def pace(self, directives: Directives) -> None:
        delay = directives.token_delay_ms if directives.token_delay_ms is not None else self.token_delay_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000)
