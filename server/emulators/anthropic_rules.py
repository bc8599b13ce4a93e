"""The Messages API's request rules, in the API's own words: what every model refuses (parameters, tools
and tool choice, content blocks, tool_use / tool_result pairing, thinking signatures, structured output,
cache breakpoints), then the thinking rules that depend on the model, each a row of (check, the API's own
words, source). server/emulators/anthropic.py serves what these let through.

Thinking: which model takes what (checked 2026-12-07):

| model              | `enabled` budget | `adaptive` | `output_config.effort`    | adaptive `display` |
|--------------------|------------------|------------|---------------------------|--------------------|
| claude-opus-4-7    | refused          | yes        | low medium high xhigh max | omitted            |
| claude-sonnet-4-6  | yes (deprecated) | yes        | low medium high max       | summarized         |
| claude-haiku-4-5   | yes              | refused    | refused                   | -                  |
| claude-sonnet-4-5  | yes              | refused    | refused                   | -                  |
| claude-opus-4-5    | yes              | refused    | low medium high           | -                  |

Sources:
- SDK anthropic 2.16 `types/thinking_config_adaptive_param.py`, `thinking_config_enabled_param.py` (the
  `display` field, "The default depends on the model"), `types/output_config_param.py` (effort values).
- Opus 4.7 adaptive only, `enabled` a 400: docs.aws.amazon.com/bedrock/latest/userguide/
  claude-messages-adaptive-thinking.html ("Manual extended thinking (thinking.type: "enabled" with
  budget_tokens) is not supported on these models and will return a 400 error"); the body quoted in
  handochan/aelix-ai#258 (measured on claude-opus-4-8 and the Claude 5 models; the same rule).
- 4.6 models take both, `enabled` deprecated: the same Bedrock page; platform.claude.com extended
  thinking models page.
- 4.5 models refuse adaptive ("adaptive thinking is not supported on this model"):
  vellum-ai/vellum-assistant#37276 (Sonnet 4.5 in production), pensarai/apex#890 (Haiku 4.5).
- Haiku 4.5 (and Sonnet 4.5) refuse effort ("This model does not support the effort parameter."):
  anthropics/claude-code#63320 (effort docs: "Models not listed here do not support effort"), and public
  clients quoting the 400 body `{"type":"error","error":{"type":"invalid_request_error","message":"This
  model does not support the effort parameter."}}`. Opus 4.5 takes effort (the parameter's first model).
- Opus 4.7 returns empty thinking text unless `display: summarized` is asked for: google/adk-docs#2241
  (ADK sends `thinking.display: "summarized"` alongside adaptive), issue 22.
- xhigh on Opus 4.7 only, max on 4.6 and 4.7: zhayujie/CowAgent#3002 (its per-model effort table).
- Recorded real traffic (pydantic/pydantic-ai `tests/models/cassettes/test_anthropic/`):
  `test_anthropic_opus_48_features.yaml` (claude-opus-4-8 answers 200 to `thinking: {type: adaptive,
  display: summarized}` + `output_config: {effort: xhigh}`, the shape the gateway sends Opus 4.7);
  `test_anthropic_count_tokens_error.yaml` (the error body: `{"type": "error", "error": {"type", "message"},
  "request_id": "req_…"}`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.emulators.scripting import verify

KNOWN_PARAMS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "stream",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "cache_control",
    "output_config",
    "inference_geo",
    "speed",
    "diagnostics",
}


# From API version 2026-10-21 the Messages API refuses temperature, top_p and top_k, even at defaults.
SAMPLING_REMOVED = "2026-10-21"


TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")


IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


# The first bytes of each image type, as the API recognises an image whose media_type is wrong.
IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"GIF8": "image/gif",
    b"RIFF": "image/webp",
}


BLOCKS_OF = {
    "user": {"text", "image", "document", "tool_result", "search_result"},
    "assistant": {
        "text",
        "tool_use",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
    },
}


MAX_CACHE_BREAKPOINTS = 4


MIN_THINKING_BUDGET = 1024


EFFORTS = ("low", "medium", "high", "xhigh", "max")


THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def request_problem(body: Any, version: str) -> str | None:
    """The first rule the body breaks, in the API's own words, or None."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    for key in body:
        if key not in KNOWN_PARAMS:
            return f"{key}: Extra inputs are not permitted"
    model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    if max_tokens is None:
        return "max_tokens: Field required"
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if isinstance(content, str) and not content:
            return f"messages.{index}: text content blocks must be non-empty"
        if isinstance(content, list) and any(b.get("type") == "text" and not b.get("text") for b in content):
            return f"messages.{index}: text content blocks must be non-empty"
    last = messages[-1]
    if last["role"] == "assistant" and text_of(last.get("content")) != text_of(last.get("content")).rstrip():
        return "messages: final assistant content cannot end with trailing whitespace"
    for name in ("temperature", "top_p", "top_k"):
        if name in body and version >= SAMPLING_REMOVED:
            return f"{name}: Extra inputs are not permitted"
        value = body.get(name)
        if (
            name != "top_k"
            and value is not None
            and (not isinstance(value, int | float) or not 0 <= value <= 1)
        ):
            return f"{name}: Input should be less than or equal to 1"
    if not model.startswith("claude-3") and "temperature" in body and "top_p" in body:
        return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    stops = body.get("stop_sequences", [])
    if not isinstance(stops, list) or any(not isinstance(s, str) or not s.strip() for s in stops):
        return "stop_sequences: each stop sequence must contain non-whitespace characters"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or list of text blocks"
    return _agent_problem(body)


def _agent_problem(body: dict[str, Any]) -> str | None:
    """Tools, tool choice, tool_use / tool_result pairing, content blocks, thinking, structured output
    and cache breakpoints, in the API's own words."""
    names: list[str] = []
    for index, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict):
            return f"tools.{index}: Input should be a valid dictionary"
        if tool.get("type") not in (None, "custom"):
            names.append(str(tool.get("name")))  # a server tool: the API checks its own fields
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            return f"tools.{index}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
        if "input_schema" not in tool:
            return f"tools.{index}.custom.input_schema: Field required"
        schema = tool["input_schema"]
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{index}.custom.input_schema.type: Input should be 'object'"
        if name in names:
            return "tools: Tool names must be unique."
        names.append(name)
    choice = body.get("tool_choice")
    thinking = body.get("thinking") or {}
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            return (
                "tool_choice: Input tag found using 'type' does not match any of the expected tags: "
                "'auto', 'any', 'tool', 'none'"
            )
        if kind == "tool" and choice.get("name") not in names:
            return f"tool_choice.tool.name: Tool '{choice.get('name')}' not found in tools"
        # Manual (budget) thinking refuses a forced tool choice; adaptive thinking takes it and skips
        # thinking (platform.claude.com/docs/build-with-claude/thinking-tool-workflows: "tool_choice options
        # that force tool use return an error with manual extended thinking (thinking: {type: "enabled"});
        # adaptive thinking supports forced tool use". An earlier version of the page said "while thinking
        # is on": the sources disagree by date; the current page is followed).
        if kind in ("any", "tool") and thinking.get("type") == "enabled":
            return "Thinking may not be enabled when tool_choice forces tool use."
    if (problem := _thinking_problem(body, thinking)) is not None:
        return problem
    # What each model takes (adaptive, budget, effort): the rows at the end of this module.
    if (problem := thinking_problem(body)) is not None:
        return problem
    if (problem := _output_problem(body.get("output_config"))) is not None:
        return problem
    # A tool turn must start with its thinking under manual thinking; adaptive (interleaved) thinking lets
    # it start with a tool_use block (r/Anthropic, "interleaved thinking ... loosens" the rule, Opus 4.6).
    if (problem := _turns_problem(body["messages"], thinking.get("type") == "enabled")) is not None:
        return problem
    breakpoints = _breakpoints(body)
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        return (
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found "
            f"{breakpoints}."
        )
    return None


def _thinking_problem(body: dict[str, Any], thinking: dict[str, Any]) -> str | None:
    kind = thinking.get("type")
    if kind is None and "thinking" not in body:
        return None
    if kind not in ("enabled", "disabled", "adaptive", "between_tools"):
        return (
            "thinking: Input tag found using 'type' does not match any of the expected tags: 'enabled', "
            "'disabled', 'adaptive'"
        )
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int):
            return "thinking.enabled.budget_tokens: Field required"
        if budget < MIN_THINKING_BUDGET:
            return (
                "thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_THINKING_BUDGET}"
            )
        if body["max_tokens"] <= budget:
            return (
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation "
                f"at {THINKING_DOCS}#max-tokens-and-context-window-size"
            )
    if kind in ("enabled", "adaptive"):
        if "temperature" in body and body["temperature"] != 1:
            return "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode."
        if "top_k" in body:
            return "`top_k` may not be set when thinking is enabled or in adaptive mode."
        if "top_p" in body and not 0.95 <= body["top_p"] <= 1:
            return "`top_p` must be between 0.95 and 1 when thinking is enabled or in adaptive mode."
    return None


def _output_problem(config: Any) -> str | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        return "output_config: Input should be a valid dictionary"
    effort = config.get("effort")
    if effort is not None and effort not in EFFORTS:
        return "output_config.effort: Input should be " + ", ".join(f"'{e}'" for e in EFFORTS)
    output = config.get("format")
    if output is None:
        return None
    if not isinstance(output, dict) or output.get("type") != "json_schema":
        return "output_config.format.type: Input should be 'json_schema'"
    if not isinstance(output.get("schema"), dict):
        return "output_config.format.schema: Field required"
    return _closed_objects(output["schema"], "output_config.format.schema")


def _closed_objects(schema: Any, where: str) -> str | None:
    """Structured outputs: every object schema must say `additionalProperties: false`."""
    if not isinstance(schema, dict):
        return None
    if (schema.get("type") == "object" or "properties" in schema) and schema.get(
        "additionalProperties"
    ) is not False:
        return f"{where}: For 'object' type, 'additionalProperties' must be explicitly set to false"
    for name, sub in (schema.get("properties") or {}).items():
        if (problem := _closed_objects(sub, f"{where}.properties.{name}")) is not None:
            return problem
    for key in ("items", "$defs", "definitions"):
        subs = schema.get(key)
        for sub in subs.values() if isinstance(subs, dict) and key != "items" else [subs]:
            if (problem := _closed_objects(sub, f"{where}.{key}")) is not None:
                return problem
    return None


def blocks_of(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _turns(messages: list[dict[str, Any]]) -> list[tuple[str, list[int], list[dict[str, Any]]]]:
    """Consecutive messages of one role, combined into one turn as the API does: (role, message
    indices, blocks)."""
    turns: list[tuple[str, list[int], list[dict[str, Any]]]] = []
    for index, message in enumerate(messages):
        if turns and turns[-1][0] == message["role"]:
            turns[-1][1].append(index)
            turns[-1][2].extend(blocks_of(message.get("content")))
        else:
            turns.append((message["role"], [index], blocks_of(message.get("content"))))
    return turns


def _turns_problem(messages: list[dict[str, Any]], thinking: bool) -> str | None:
    for index, message in enumerate(messages):
        for number, block in enumerate(blocks_of(message.get("content"))):
            if (
                problem := _block_problem(block, message["role"], f"messages.{index}.content.{number}")
            ) is not None:
                return problem
    turns = _turns(messages)
    for position, (role, indices, blocks) in enumerate(turns):
        if role != "assistant":
            continue
        uses = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
        following = turns[position + 1] if position + 1 < len(turns) else None
        if uses and following is not None:
            results = [b.get("tool_use_id") for b in following[2] if b.get("type") == "tool_result"]
            missing = [u for u in uses if u not in results]
            if missing:
                return (
                    f"messages.{following[1][0]}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(map(str, missing))}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
        for number, block in enumerate(blocks):
            if block.get("type") == "thinking" and not verify(
                block.get("thinking", ""), block.get("signature")
            ):
                return f"messages.{indices[0]}.content.{number}: Invalid `signature` in `thinking` block"
    for position, (role, indices, blocks) in enumerate(turns):
        if role != "user":
            continue
        previous = turns[position - 1][2] if position > 0 and turns[position - 1][0] == "assistant" else []
        offered = {b.get("id") for b in previous if b.get("type") == "tool_use"}
        for number, block in enumerate(blocks):
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in offered:
                return (
                    f"messages.{indices[0]}.content.{number}: unexpected `tool_use_id` found in "
                    "`tool_result` "
                    f"blocks: {block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )
    if thinking and len(turns) >= 2 and turns[-1][0] == "user":
        role, indices, blocks = turns[-2]
        answered = any(b.get("type") == "tool_result" for b in turns[-1][2])
        if (
            role == "assistant"
            and answered
            and blocks
            and blocks[0].get("type") not in ("thinking", "redacted_thinking")
        ):
            return (
                f"messages.{indices[0]}.content.0.type: Expected `thinking` or `redacted_thinking`, "
                "but found "
                f"`{blocks[0].get('type')}`. When `thinking` is enabled, a final `assistant` message "
                "must start "
                "with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` "
                "blocks). We "
                "recommend you include thinking blocks from previous turns. To avoid this "
                "requirement, disable "
                f"`thinking`. Please consult our documentation at {THINKING_DOCS}"
            )
    return None


def _block_problem(block: dict[str, Any], role: str, where: str) -> str | None:
    kind = block.get("type")
    if kind not in BLOCKS_OF[role]:
        return f"{where}.type: `{kind}` blocks are not allowed in `{role}` messages"
    if kind in ("image", "document"):
        return _source_problem(block, kind, where)
    if kind == "tool_use" and not isinstance(block.get("input"), dict):
        return f"{where}.tool_use.input: Input should be a valid dictionary"
    if kind == "tool_result":
        for number, inner in enumerate(blocks_of(block.get("content", []))):
            if inner.get("type") not in ("text", "image", "document", "search_result"):
                return (
                    f"{where}.tool_result.content.{number}.type: Input tag '{inner.get('type')}' is not "
                    "allowed"
                )
    return None


def _source_problem(block: dict[str, Any], kind: str, where: str) -> str | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return f"{where}.{kind}.source: Field required"
    origin = source.get("type")
    if origin == "url":
        return (
            None if isinstance(source.get("url"), str) else f"{where}.{kind}.source.url.url: Field required"
        )
    if kind == "document" and origin in ("text", "content", "file"):
        return None
    if kind == "image" and origin == "file":
        return None
    if origin != "base64":
        return (
            f"{where}.{kind}.source: Input tag '{origin}' found using 'type' does not match any of the "
            "expected tags"
        )
    media_type = source.get("media_type")
    allowed = IMAGE_TYPES if kind == "image" else ("application/pdf",)
    if media_type not in allowed:
        return f"{where}.{kind}.source.base64.media_type: Input should be " + " or ".join(
            f"'{t}'" for t in allowed
        )
    try:
        data = base64.b64decode(source.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        return f"{where}.{kind}.source.base64.data: Invalid base64 data"
    if kind == "image":
        sniffed = next((t for magic, t in IMAGE_MAGIC.items() if data.startswith(magic)), None)
        if sniffed is not None and sniffed != media_type:
            return (
                f"{where}.image.source.base64.data: The image was specified using the {media_type} "
                "media type, "
                f"but the image appears to be a {sniffed} image"
            )
    elif not data.startswith(b"%PDF"):
        return f"{where}.document.source.base64.data: The PDF specified was not valid."
    return None


def _breakpoints(body: dict[str, Any]) -> int:
    """Blocks marked with cache_control (tools, system blocks, message blocks)."""
    blocks: list[Any] = list(body.get("tools") or ())
    system = body.get("system")
    blocks += system if isinstance(system, list) else []
    for message in body["messages"]:
        blocks += blocks_of(message.get("content"))
    return sum(1 for b in blocks if isinstance(b, dict) and b.get("cache_control"))


# --- Thinking rules that depend on the model ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThinkingModel:
    adaptive: bool
    enabled: bool
    efforts: tuple[str, ...]
    """The efforts it takes; empty: it refuses `output_config.effort`."""
    display_default: str = "summarized"


THINKING_MODELS = {
    "claude-opus-4-7": ThinkingModel(
        adaptive=True,
        enabled=False,
        efforts=("low", "medium", "high", "xhigh", "max"),
        display_default="omitted",
    ),
    "claude-sonnet-4-6": ThinkingModel(adaptive=True, enabled=True, efforts=("low", "medium", "high", "max")),
    "claude-haiku-4-5": ThinkingModel(adaptive=False, enabled=True, efforts=()),
    "claude-sonnet-4-5": ThinkingModel(adaptive=False, enabled=True, efforts=()),
    "claude-opus-4-5": ThinkingModel(adaptive=False, enabled=True, efforts=("low", "medium", "high")),
}
SNAPSHOT_ALIASES = {
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
    "claude-opus-4-5-20251101": "claude-opus-4-5",
}

ENABLED_REFUSED = (
    '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" and '
    '"output_config.effort" to control thinking behavior.'
)
ADAPTIVE_REFUSED = "adaptive thinking is not supported on this model"
EFFORT_REFUSED = "This model does not support the effort parameter."


def _kind(body: dict[str, Any]) -> Any:
    thinking = body.get("thinking")
    return thinking.get("type") if isinstance(thinking, dict) else None


def _effort(body: dict[str, Any]) -> Any:
    config = body.get("output_config")
    return config.get("effort") if isinstance(config, dict) else None


Rule = tuple[Callable[[ThinkingModel, dict[str, Any]], bool], Callable[[dict[str, Any]], str], str]
RULES: tuple[Rule, ...] = (
    (
        lambda m, body: _kind(body) == "enabled" and not m.enabled,
        lambda body: ENABLED_REFUSED,
        "handochan/aelix-ai#258; Bedrock adaptive thinking page",
    ),
    (
        lambda m, body: _kind(body) == "adaptive" and not m.adaptive,
        lambda body: ADAPTIVE_REFUSED,
        "vellum-ai/vellum-assistant#37276",
    ),
    (
        lambda m, body: _effort(body) is not None and not m.efforts,
        lambda body: EFFORT_REFUSED,
        "anthropics/claude-code#63320 and clients quoting the 400",
    ),
    (
        lambda m, body: _effort(body) is not None and bool(m.efforts) and _effort(body) not in m.efforts,
        # The API's wording for a level the model lacks is not quoted in our sources: the effort's name and
        # the model's levels, in the shape of its other validation messages.
        lambda body: f"output_config.effort: `{_effort(body)}` is not supported for this model.",
        "zhayujie/CowAgent#3002 (which model takes which level)",
    ),
)


def model_of(model: str) -> ThinkingModel | None:
    return THINKING_MODELS.get(SNAPSHOT_ALIASES.get(model, model))


def thinking_problem(body: dict[str, Any]) -> str | None:
    """The first model-specific thinking rule `body` breaks, in the API's own words, or None (also for a
    model these rules do not know)."""
    model = model_of(str(body.get("model")))
    if model is None:
        return None
    for check, message, _source in RULES:
        if check(model, body):
            return message(body)
    return None


def shows_thinking(body: dict[str, Any]) -> bool:
    """Whether the response carries the thinking text (else it is empty, with a signature): `display`,
    or the model's default for adaptive thinking."""
    thinking = body.get("thinking") or {}
    display = thinking.get("display")
    if display is None and thinking.get("type") == "adaptive":
        model = model_of(str(body.get("model")))
        display = model.display_default if model is not None else "summarized"
    return display != "omitted"
