"""The Gemini API's request rules, in the API's own words: what every model refuses (unknown fields,
contents and parts, function calls and responses, thought signatures, tools and tool config, generation
config), then the thinking rules that depend on the model, each a row of (check, the API's own words,
source). server/emulators/gemini.py serves what these let through. The per-model thinking rules' errors
come as the API sends them: 400 INVALID_ARGUMENT with the message alone,
`{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT"}}`.

Thinking: which model takes what (ai.google.dev/gemini-api/docs/thinking#thinking-levels, checked
2026-12-07 through the sources below):

| model                   | thinking levels            | stop thinking (budget 0 / no level) |
|-------------------------|----------------------------|-------------------------------------|
| gemini-3.1-pro-preview  | low medium high            | no                                  |
| gemini-3-pro-preview    | low high                   | no                                  |
| gemini-3.5-flash        | minimal low medium high    | minimal ("matches no thinking")     |
| gemini-3.1-flash-lite   | minimal low medium high    | minimal                             |
| gemini-2.5-*            | none: thinking_budget only | Flash and Flash-Lite; not Pro       |

Sources:
- Level names: google-genai 3.6 `types.ThinkingLevel` (MINIMAL, LOW, MEDIUM, HIGH, XHIGH).
- A level the model lacks: "Thinking level MINIMAL is not supported for this model. Please retry with
  other thinking level." (earendil-works/pi#9455, theJayTea/WritingTools#282, vellum-ai/vellum-assistant
  #32687 for gemini-3.1-pro-preview; "... MEDIUM ..." on Gemini 3 Pro: egoist/chatwise-releases#1206).
- 3.1 Pro low/medium/high, 3 Pro low/high, Flash the four: macro-inc/macro#6389 quoting the thinking
  docs; checkmarble/llmberjack#14 (the docs' table); verdent.ai's Flash-Lite guide (four levels).
- A level on Gemini 2.5: "Thinking level is not supported for this model." (RooCodeInc/Roo-Code#10700,
  gemini-2.5-flash, January 2026). Sources disagree: comet-ml/opik#8024 reads a later docs table listing
  low/medium/high for 2.5; the measured 400 is followed.
- Budget 0 on a model that always thinks: "The model does not support setting thinking_budget to 0."
  (GewoonJaap/gemini-cli-openai#23; earendil-works/pi#3460 on 2.5 Pro; Gemini 3 Pro "cannot disable
  thinking": spring-projects/spring-ai#4983 quoting the thinking docs).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any

from server.emulators.scripting import verify

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


FUNCTION_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}")


MODES = ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")


# google-genai 3.6 `types.ThinkingLevel`; which model takes which: server/emulators/gemini_rules.py.
THINKING_LEVELS = ("MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH")


RESPONSE_MIME_TYPES = ("text/plain", "application/json", "text/x.enum")


SIGNATURE_DOCS = "https://ai.google.dev/gemini-api/docs/thought-signatures"


DUMMY_SIGNATURES = frozenset({"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"})
"""Signatures the API documents as accepted in place of a lost one (history from another model)."""


def parts_text(content: Any) -> str:
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
            if (problem := _part_problem(part, where)) is not None:
                return problem
    return _turns_problem(contents)


def _part_problem(part: dict[str, Any], where: str) -> tuple[str, str] | None:
    for key, field in (("inlineData", "inline_data.data"), ("thoughtSignature", "thought_signature")):
        value = part.get(key, {}).get("data") if key == "inlineData" else part.get(key)
        if key in part and not _is_base64(value):
            return f"{where}.{field}", f'Invalid value (TYPE_BYTES), Base64 decoding failed for "{value}"'
    if "inlineData" in part and not part["inlineData"].get("mimeType"):
        return f"{where}.inline_data.mime_type", "Unsupported MIME type: "
    call = part.get("functionCall")
    if call is not None and (not isinstance(call, dict) or not call.get("name")):
        return f"{where}.function_call.name", "Name cannot be empty."
    answer = part.get("functionResponse")
    if answer is not None and (not isinstance(answer, dict) or not answer.get("name")):
        return f"{where}.function_response.name", "Name cannot be empty."
    return None


def decode_bytes(value: Any) -> bytes | None:
    """A proto JSON `bytes` field: standard or URL-safe base64, padded or not (None if neither)."""
    if not isinstance(value, str):
        return None
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None


def _is_base64(value: Any) -> bool:
    return decode_bytes(value) is not None


def calls_of(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in content.get("parts", []) if isinstance(p, dict) and "functionCall" in p]


def responses_of(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in content.get("parts", []) if isinstance(p, dict) and "functionResponse" in p]


def _turns_problem(contents: list[dict[str, Any]]) -> tuple[str, str] | None:
    """A function call turn follows a user turn or a function response turn; a function response turn
    follows a function call turn and answers each of its calls."""
    for index, content in enumerate(contents):
        previous = contents[index - 1] if index > 0 else None
        if calls_of(content) and (previous is None or (previous.get("role", "user") != "user")):
            return (
                f"contents[{index}]",
                "Please ensure that function call turn comes immediately after a user turn or after a "
                "function response turn.",
            )
        responses = responses_of(content)
        if responses:
            calls = calls_of(previous) if previous is not None and previous.get("role") == "model" else []
            if not calls:
                return (
                    f"contents[{index}]",
                    "Please ensure that function response turn comes immediately after a function call turn.",
                )
            if len(responses) != len(calls):
                return (
                    f"contents[{index}]",
                    "Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn.",
                )
    return None


def signature_problem(contents: list[dict[str, Any]]) -> tuple[str, str] | None:
    """Gemini 3: in the current turn (since the last user message of the user's own words), the first
    function call of every model step carries the thought signature the API gave it, unchanged."""
    start = 0
    for index, content in enumerate(contents):
        if content.get("role", "user") == "user" and not responses_of(content):
            start = index
    for content in contents[start:]:
        calls = calls_of(content)
        if not calls:
            continue
        first = calls[0]
        signature = first.get("thoughtSignature")
        position = content["parts"].index(first) + 1
        call = first["functionCall"]
        if signature is None:
            return (
                f"contents[{contents.index(content)}].parts[{position - 1}].thought_signature",
                "Function call is missing a thought_signature in functionCall parts. This is required for "
                "tools to work correctly, and missing thought_signature may lead to degraded model "
                f"performance. Additional data, function call `default_api:{call['name']}` , position "
                f"{position}. Please refer to {SIGNATURE_DOCS} for more details.",
            )
        if signature not in DUMMY_SIGNATURES and not verify(call_key(call), signature):
            return (
                f"contents[{contents.index(content)}].parts[{position - 1}].thought_signature",
                f"Thought signature is not valid. Please refer to {SIGNATURE_DOCS} for more details.",
            )
    return None


def call_key(call: dict[str, Any]) -> str:
    """What a function call's thought signature signs."""
    return f"{call.get('name')}:{json.dumps(call.get('args') or {}, sort_keys=True)}"


def _tools_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    names: list[str] = []
    for index, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict):
            return f"tools[{index}]", "must be an object"
        for number, declaration in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{index}].function_declarations[{number}]"
            name = declaration.get("name") if isinstance(declaration, dict) else None
            if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
                return (
                    f"{where}.name",
                    "Invalid function name. Must start with a letter or an underscore. Must be alphameric "
                    "(a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum "
                    "length of 64.",
                )
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                return (
                    f"{where}.parameters_json_schema",
                    "parameters and parameters_json_schema are exclusive.",
                )
            names.append(name)
    config = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if config is None:
        return None
    mode = str(config.get("mode", "AUTO")).upper()
    if mode not in MODES:
        return "tool_config.function_calling_config.mode", f'Invalid value "{config.get("mode")}".'
    allowed = config.get("allowedFunctionNames")
    if allowed is not None:
        if mode not in ("ANY", "VALIDATED"):
            return (
                "tool_config.function_calling_config.allowed_function_names",
                "allowed_function_names can be set only when the mode is ANY or VALIDATED.",
            )
        unknown = [n for n in allowed if n not in names]
        if unknown:
            return (
                "tool_config.function_calling_config.allowed_function_names",
                f"function {unknown[0]} is not declared in tools.",
            )
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
    mime = config.get("responseMimeType")
    if mime is not None and mime not in RESPONSE_MIME_TYPES:
        return "generation_config.response_mime_type", f"allowed mimetypes are {list(RESPONSE_MIME_TYPES)}."
    if "responseSchema" in config and "responseJsonSchema" in config:
        return (
            "generation_config.response_json_schema",
            "response_schema and response_json_schema are exclusive.",
        )
    if ("responseSchema" in config or "responseJsonSchema" in config) and mime not in RESPONSE_MIME_TYPES[1:]:
        return (
            "generation_config.response_mime_type",
            "response_mime_type must be one of ['application/json', 'text/x.enum'] when a response schema "
            "is set.",
        )
    if (problem := _thinking_problem(config.get("thinkingConfig"))) is not None:
        return problem
    stops = config.get("stopSequences", [])
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        return "generation_config.stop_sequences", "must be a list of strings."
    if len(stops) > MAX_STOP_SEQUENCES:
        return (
            "generation_config.stop_sequences",
            f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed; got {len(stops)}.",
        )
    return None


def _thinking_problem(thinking: Any) -> tuple[str, str] | None:
    if thinking is None:
        return None
    where = "generation_config.thinking_config"
    if not isinstance(thinking, dict):
        return where, "must be an object"
    for key in thinking:
        if key not in ("includeThoughts", "thinkingBudget", "thinkingLevel"):
            return where, f'Unknown name "{key}": Cannot find field.'
    if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
        return where, "You can only set only one of thinking budget and thinking level."
    budget = thinking.get("thinkingBudget")
    if budget is not None and (not isinstance(budget, int) or budget < -1):
        return f"{where}.thinking_budget", "must be -1 (dynamic), 0 (off) or a positive number of tokens."
    level = thinking.get("thinkingLevel")
    if level is not None and str(level).upper() not in THINKING_LEVELS:
        return f"{where}.thinking_level", f'Invalid value "{level}".'
    return None


def request_problem(body: Any) -> tuple[str, str] | None:
    """The first rule the request breaks, as (field, description), or None."""
    if not isinstance(body, dict):
        return "body", "Invalid JSON payload received."
    for key in body:
        if key not in BODY_KEYS:
            return key, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    if (problem := _contents_problem(body.get("contents"))) is not None:
        return problem
    if (problem := _tools_problem(body)) is not None:
        return problem
    system = body.get("systemInstruction")
    if system is not None and (not isinstance(system, dict) or not system.get("parts")):
        return "system_instruction.parts", "must not be empty."
    return _config_problem(body.get("generationConfig", {}))


# --- Thinking rules that depend on the model ---------------------------------------------------

LEVELS = {
    "gemini-3.1-pro-preview": ("LOW", "MEDIUM", "HIGH"),
    "gemini-3-pro-preview": ("LOW", "HIGH"),
    "gemini-3.5-flash": ("MINIMAL", "LOW", "MEDIUM", "HIGH"),
    "gemini-3.1-flash-lite": ("MINIMAL", "LOW", "MEDIUM", "HIGH"),
}
ALWAYS_THINKING = frozenset({"gemini-3.1-pro-preview", "gemini-3-pro-preview", "gemini-2.5-pro"})


def _level(thinking: dict[str, Any]) -> str | None:
    level = thinking.get("thinkingLevel")
    return str(level).upper() if level is not None else None


Rule = tuple[Callable[[str, dict[str, Any]], bool], Callable[[dict[str, Any]], str], str]
RULES: tuple[Rule, ...] = (
    (
        lambda model, t: _level(t) is not None and model.startswith("gemini-2"),
        lambda t: "Thinking level is not supported for this model.",
        "RooCodeInc/Roo-Code#10700",
    ),
    (
        lambda model, t: model in LEVELS and _level(t) is not None and _level(t) not in LEVELS[model],
        lambda t: (
            f"Thinking level {_level(t)} is not supported for this model. Please retry with other thinking "
            "level."
        ),
        "earendil-works/pi#9455, theJayTea/WritingTools#282",
    ),
    (
        lambda model, t: model in ALWAYS_THINKING and t.get("thinkingBudget") == 0,
        lambda t: "The model does not support setting thinking_budget to 0.",
        "GewoonJaap/gemini-cli-openai#23",
    ),
)


def thinking_problem(model: str, config: dict[str, Any]) -> str | None:
    """The first model-specific thinking rule a generation config breaks, in the API's words, or None."""
    thinking = config.get("thinkingConfig")
    if not isinstance(thinking, dict):
        return None
    for check, message, _source in RULES:
        if check(model, thinking):
            return message(thinking)
    return None
