"""What the emulators script for agents, the same for all three APIs: a tool call built from a tool's
JSON Schema, JSON that validates against a response schema, deterministic reasoning with signatures the
emulator can check when they are replayed, and a prompt cache that remembers prefixes.

Tool calls: when a request offers tools (and does not forbid calling them) and its last turn is the
user's, the reply is a call to the first tool the tool choice allows, its arguments the smallest object
the tool's schema accepts (its required properties, recursively), unless directives say otherwise:

    tool=get_weather      call this tool instead of the first
    tool_args={"a":1}     these arguments (JSON) instead of the generated ones
    tool_calls=2          call the first N allowed tools at once (when parallel calls are allowed)
    no_tool=1             answer with text although tools are offered
    reasoning_tokens=40   think this many tokens (default: by effort or budget, see `thinking_tokens`)

When the last turn answers tool calls, the reply is text that includes each result:
`emulator reply: tool <name> returned <result>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.emulators.base import Directives

_SIGNING_KEY = b"llm-grpc emulator thinking signatures"
"""The emulators sign thinking with this key, so a replayed signature can be checked (a test double's
constant, not a secret)."""

EFFORT_TOKENS = {"minimal": 4, "low": 8, "medium": 16, "high": 32, "xhigh": 48, "max": 64}
"""Reasoning tokens the emulators spend per OpenAI-style effort."""


def thinking_tokens(effort: str | None = None, budget: int | None = None) -> int:
    """How many tokens the emulators think: by effort, or a quarter of a budget (at most 64)."""
    if budget is not None:
        return max(1, min(64, budget // 64))
    return EFFORT_TOKENS.get(effort or "", 0)


def thinking_text(tokens: int) -> str:
    """Deterministic thinking of `tokens` words."""
    return " ".join(f"step{i + 1}" for i in range(tokens))


def sign(text: str) -> str:
    """An opaque signature of thinking text, as providers return it (base64), that `verify` checks."""
    digest = hmac.new(_SIGNING_KEY, text.encode(), hashlib.sha256).digest()
    return base64.b64encode(b"EmuSig" + digest).decode()


def verify(text: str, signature: object) -> bool:
    # As bytes: compare_digest refuses str with non-ASCII characters, and a forged signature may have them.
    return isinstance(signature, str) and hmac.compare_digest(sign(text).encode(), signature.encode())


def instance_of(schema: Any, defs: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """The smallest value `schema` accepts: required properties only, minimum lengths and counts, the
    first enum value or anyOf branch. Enough for the schemas tools and structured outputs use."""
    if not isinstance(schema, Mapping) or depth > 16:
        return {}
    defs = {**(defs or {}), **schema.get("$defs", {}), **schema.get("definitions", {})}
    if "$ref" in schema:
        name = str(schema["$ref"]).rpartition("/")[2]
        return instance_of(defs.get(name, {}), defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for union in ("anyOf", "oneOf", "allOf"):
        if schema.get(union):
            return instance_of(schema[union][0], defs, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()  # Gemini's OpenAPI schemas spell types in capitals
    match kind:
        case "object":
            properties = schema.get("properties") or {}
            return {
                name: instance_of(properties.get(name, {}), defs, depth + 1)
                for name in schema.get("required") or ()
            }
        case "array":
            count = int(schema.get("minItems") or 0)
            return [instance_of(schema.get("items", {}), defs, depth + 1) for _ in range(count)]
        case "string":
            return "x" * max(int(schema.get("minLength") or 0), 1) if schema.get("minLength") else "text"
        case "integer":
            return int(schema.get("minimum") or 0)
        case "number":
            return float(schema.get("minimum") or 0)
        case "boolean":
            return False
        case "null":
            return None
    return {}


def schema_problem(schema: Any, where: str) -> str | None:
    """Why `schema` is not a JSON Schema object the APIs take for tool parameters, or None."""
    if not isinstance(schema, Mapping):
        return f"{where}: must be a JSON Schema object"
    kind = schema.get("type")
    if kind is not None and str(kind).lower() != "object":
        return f"{where}: schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{kind}\"'."
    return None


@dataclass(slots=True, frozen=True)
class ToolSpec:
    """A tool as the emulator sees it, whatever the API's spelling."""

    name: str
    schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class PlannedCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


def plan_calls(
    tools: Sequence[ToolSpec],
    allowed: Sequence[str] | None,
    directives: Directives,
    *,
    parallel: bool,
    id_prefix: str,
    turn: int,
) -> list[PlannedCall]:
    """The calls a reply makes: the directive's tool, else the first tools `allowed` (None: any)."""
    candidates = [t for t in tools if allowed is None or t.name in allowed]
    if directives.tool is not None:
        candidates = [t for t in tools if t.name == directives.tool] or candidates
    count = max(1, directives.tool_calls) if parallel else 1
    calls = []
    for index, tool in enumerate(candidates[:count]):
        arguments = directives.tool_args if directives.tool_args is not None else instance_of(tool.schema)
        calls.append(PlannedCall(f"{id_prefix}{turn:02d}{index:02d}", tool.name, arguments))
    return calls


def result_reply(results: Sequence[tuple[str, str]]) -> str:
    """The text answering tool results: each (tool name, result) in the words tests can predict."""
    return "emulator reply: " + "; ".join(f"tool {name} returned {result}" for name, result in results)


def json_reply(schema: Any) -> str:
    """JSON text that validates against `schema` (json_object without a schema: an empty object)."""
    return json.dumps(instance_of(schema) if schema is not None else {}, separators=(", ", ": "))


@dataclass
class PromptCache:
    """Prefixes the emulator has seen, by hash, with their token counts: what a provider's prompt cache
    would hold. `minimum`: the fewest tokens a provider caches."""

    minimum: int = 1024
    seen: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def key(prefix: Any) -> str:
        return hashlib.sha256(json.dumps(prefix, sort_keys=True, default=str).encode()).hexdigest()

    def hit(self, prefixes: Sequence[tuple[Any, int]]) -> int:
        """Tokens of the longest prefix seen before (0 for none)."""
        return max((tokens for prefix, tokens in prefixes if self.key(prefix) in self.seen), default=0)

    def remember(self, prefixes: Sequence[tuple[Any, int]]) -> int:
        """Store each prefix of at least `minimum` tokens; the tokens of the longest newly written."""
        written = 0
        for prefix, tokens in prefixes:
            if tokens >= self.minimum and (key := self.key(prefix)) not in self.seen:
                self.seen[key] = tokens
                written = max(written, tokens)
        return written
