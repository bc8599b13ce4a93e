"""The rules of the OpenAI Responses API (`POST /v1/responses`) the OpenAI emulator enforces, each beside
its source (the installed SDK's type files, public issues quoting the real error bodies), and the format of
the emulator's encrypted reasoning. The replies are server/emulators/openai_responses.py.

The emulator's `encrypted_content` is `gAAAAA` and base64 of the reasoning text, the id of the item that
followed it, and the emulators' signature of both: a replay that altered it, or moved its item, is
refused with the API's own error.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from server.emulators.scripting import schema_problem, sign, verify

Problem = tuple[int, str, str | None, str | None]
"""(HTTP status, message, param, code) of a refusal."""

# The body's parameters (openai/types/responses/response_create_params.py). Any other is refused:
# "Unknown parameter: 'input[32].status'." (Stack-Cairn/LiveAgent#334: the API names the unknown key).
KNOWN_PARAMS = frozenset(
    {
        "model", "input", "instructions", "include", "max_output_tokens", "max_tool_calls", "metadata",
        "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key",
        "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream",
        "stream_options", "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p",
        "truncation", "user", "background", "conversation", "context_management",
    }
)  # fmt: skip
# The keys each input item type takes (openai/types/responses/response_input_item_param.py).
ITEM_KEYS = {
    "message": {"type", "role", "content", "id", "status", "phase"},
    "function_call": {"type", "call_id", "name", "arguments", "id", "status", "namespace"},
    "function_call_output": {"type", "call_id", "output", "id", "status"},
    "reasoning": {"type", "id", "summary", "encrypted_content", "content", "status"},
}
ROLES = {"user", "assistant", "system", "developer"}
PART_TYPES = {"input_text", "input_image", "input_file", "output_text", "refusal"}
IMAGE_DETAILS = {"auto", "low", "high", "original"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
NO_NONE_EFFORT = "gpt-5-"
"""With `gpt-5` itself: the GPT-5 models without effort `none` (snapshots, mini, nano; the rule below)."""
SUMMARIES = ("auto", "concise", "detailed")
INCLUDABLE = frozenset(
    {
        "reasoning.encrypted_content", "message.output_text.logprobs", "message.input_image.image_url",
        "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
        "computer_call_output.output.image_url", "code_interpreter_call.outputs",
    }
)  # fmt: skip
MIN_OUTPUT_TOKENS = 16
"""`max_output_tokens` below 16 is refused: "Invalid 'max_output_tokens': integer below minimum value.
Expected a value >= 16, but got 10 instead." (vectorize-io/hindsight#58; earendil-works/pi#6265)."""
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
ENCRYPTED_PREFIX = "gAAAAA"


def encrypt(text: str, following: str) -> str:
    payload = json.dumps({"text": text, "following": following}, separators=(",", ":"))
    blob = json.dumps({"p": payload, "s": sign(payload)}, separators=(",", ":"))
    return ENCRYPTED_PREFIX + base64.urlsafe_b64encode(blob.encode()).decode()


def decrypt(content: object) -> dict[str, Any] | None:
    """The emulator's encrypted reasoning, or None when it was not made (or was altered) here."""
    if not isinstance(content, str) or not content.startswith(ENCRYPTED_PREFIX):
        return None
    try:
        blob = json.loads(base64.urlsafe_b64decode(content[len(ENCRYPTED_PREFIX) :].encode()))
        payload = blob["p"]
        if not verify(payload, blob["s"]):
            return None
        value = json.loads(payload)
    except (ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, dict) else None


# --- the rules ----------------------------------------------------------------------------------


def problems(body: Any, reasoning_model: bool) -> Problem | None:
    """The first rule the body breaks, or None."""
    if not isinstance(body, dict):
        return 400, "We could not parse the JSON body of your request.", None, None
    for key in body:
        if key not in KNOWN_PARAMS:
            return 400, f"Unknown parameter: '{key}'.", key, "unknown_parameter"
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return 400, "Missing required parameter: 'model'.", "model", "missing_required_parameter"
    value = body.get("max_output_tokens")
    if value is not None and (not isinstance(value, int) or value < MIN_OUTPUT_TOKENS):
        return (
            400,
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{MIN_OUTPUT_TOKENS}, but got {value} instead.",
            "max_output_tokens",
            "integer_below_min_value",
        )
    for name in ("temperature", "top_p"):
        if reasoning_model and body.get(name) not in (None, 1):
            # OpenHands/software-agent-sdk#1837 (gpt-5.2): {"message": "Unsupported parameter: 'temperature'
            # is not supported with this model.", "type": "invalid_request_error", "param": "temperature",
            # "code": null}
            return 400, f"Unsupported parameter: '{name}' is not supported with this model.", name, None
    if (problem := _reasoning_problem(body, reasoning_model)) is not None:
        return problem
    if (problem := _tools_problem(body)) is not None:
        return problem
    if (problem := _format_problem(body.get("text"))) is not None:
        return problem
    return _input_problem(body)


def _reasoning_problem(body: dict[str, Any], reasoning_model: bool) -> Problem | None:
    include = body.get("include") or []
    for index, value in enumerate(include if isinstance(include, list) else [include]):
        if value not in INCLUDABLE:
            return (
                400,
                f"Invalid value: '{value}'. Supported values are: {', '.join(sorted(INCLUDABLE))}.",
                f"include[{index}]",
                "invalid_value",
            )
    reasoning = body.get("reasoning")
    if reasoning is None:
        return None
    if not reasoning_model:
        return (
            400,
            "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
            "reasoning.effort",
            "unsupported_parameter",
        )
    effort, summary = reasoning.get("effort"), reasoning.get("summary")
    if effort is not None and effort not in EFFORTS:
        supported = ", ".join(f"'{e}'" for e in EFFORTS)
        return (
            400,
            f"Invalid value: '{effort}'. Supported values are: {supported}.",
            "reasoning.effort",
            "invalid_value",
        )
    model = str(body.get("model", ""))
    if effort == "none" and (model == "gpt-5" or model.startswith(NO_NONE_EFFORT)):
        # The GPT-5 models before 5.1 cannot turn reasoning off: "All models before gpt-5.1 default to
        # medium reasoning effort, and do not support none" (the SDKs' ReasoningEffort docs, e.g.
        # openai/openai-ruby lib/openai/models/reasoning_effort.rb); gpt-5/-mini/-nano take minimal, low,
        # medium, high (developers.openai.com GPT-5 model page, as quoted in QwenLM/qwen-code#11295). The
        # body's wording is the real one for a model without `none` (openai/codex#6647).
        return (
            400,
            f"Unsupported value: 'none' is not supported with the '{model}' model. Supported values are: "
            "'minimal', 'low', 'medium', and 'high'.",
            "reasoning.effort",
            "unsupported_value",
        )
    if summary is not None and summary not in SUMMARIES:
        supported = ", ".join(f"'{s}'" for s in SUMMARIES)
        return (
            400,
            f"Invalid value: '{summary}'. Supported values are: {supported}.",
            "reasoning.summary",
            "invalid_value",
        )
    return None


def _tools_problem(body: dict[str, Any]) -> Problem | None:
    from server.emulators.openai import strict_problem  # Structured Outputs' strict mode, shared

    names: list[str] = []
    for index, tool in enumerate(body.get("tools") or ()):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            return 400, f"Invalid value for '{where}.type'.", f"{where}.type", "invalid_value"
        name = tool.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            return (
                400,
                f"Invalid '{where}.name': string does not match pattern. Expected a string that matches "
                "the pattern '^[a-zA-Z0-9_-]{1,64}$'.",
                f"{where}.name",
                "invalid_value",
            )
        if name in names:
            return 400, f"Invalid 'tools': duplicate function name '{name}'.", "tools", "invalid_value"
        names.append(name)
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
        if (problem := schema_problem(parameters, f"Invalid schema for function '{name}'")) is not None:
            return 400, problem, f"{where}.parameters", "invalid_function_parameters"
        # `strict` defaults to true on this API (function_tool_param.py: a required field; the guide:
        # "strict mode is on by default" in the Responses API), so a schema strict mode refuses is refused
        # unless the tool says strict: false.
        if tool.get("strict", True) is not False and (
            problem := strict_problem(parameters, f"function '{name}'")
        ):
            return 400, problem, f"{where}.parameters", "invalid_function_parameters"
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice not in ("none", "auto", "required"):
        return (
            400,
            f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
            "tool_choice",
            "invalid_value",
        )
    if isinstance(choice, dict) and (choice.get("type") != "function" or choice.get("name") not in names):
        return (
            400,
            f"Tool choice '{choice.get('name')}' not found in 'tools' parameter.",
            "tool_choice",
            None,
        )
    return None


def _format_problem(text: Any) -> Problem | None:
    fmt = (text or {}).get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        return (
            400,
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            "text.format.type",
            "invalid_value",
        )
    if kind == "json_schema":
        for key in ("name", "schema"):
            if key not in fmt:
                return (
                    400,
                    f"Missing required parameter: 'text.format.{key}'.",
                    f"text.format.{key}",
                    "missing_required_parameter",
                )
    return None


def _input_problem(body: dict[str, Any]) -> Problem | None:
    """The input items: their shapes, the ids they may carry, reasoning replayed with its content and
    followed by its item, and every function call answered (and every answer called for)."""
    items = body.get("input")
    if isinstance(items, str):
        return None
    if not isinstance(items, list) or not items:
        return (
            400,
            "Invalid 'input': empty array. Expected an array with minimum length 1.",
            "input",
            "empty_array",
        )
    calls: list[str] = []
    answered: set[str] = set()
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            return 400, f"Invalid type for '{where}': expected an object.", where, "invalid_type"
        kind = item.get("type", "message")
        allowed = ITEM_KEYS.get(kind)
        if allowed is None:
            return 400, f"Invalid value: '{kind}'.", f"{where}.type", "invalid_value"
        for key in item:
            if key not in allowed:
                return 400, f"Unknown parameter: '{where}.{key}'.", f"{where}.{key}", "unknown_parameter"
        match kind:
            case "message":
                problem = _message_problem(item, where)
            case "function_call":
                problem = _prefixed(item, where, "fc")
                if problem is None and not isinstance(item.get("arguments"), str):
                    problem = (
                        400,
                        f"Invalid type for '{where}.arguments': expected a string.",
                        f"{where}.arguments",
                        "invalid_type",
                    )
                if problem is None:
                    calls.append(str(item.get("call_id")))
            case "function_call_output":
                problem = None
                if item.get("call_id") not in calls:
                    # continuedev/continue#10092: {"message": "No tool call found for function call output
                    # with call_id call_….", "type": "invalid_request_error", "param": "input", "code": null}
                    problem = (
                        400,
                        f"No tool call found for function call output with call_id {item.get('call_id')}.",
                        "input",
                        None,
                    )
                answered.add(str(item.get("call_id")))
            case _:
                problem = _reasoning_item_problem(items, index, body)
        if problem is not None:
            return problem
    for call_id in calls:
        if call_id not in answered:
            # router-for-me/CLIProxyAPI#2368: "No tool output found for function call call_….", param input
            return 400, f"No tool output found for function call {call_id}.", "input", None
    return None


def _message_problem(item: dict[str, Any], where: str) -> Problem | None:
    if item.get("role") not in ROLES:
        return (
            400,
            f"Invalid value: '{item.get('role')}'. Supported values are: 'assistant', 'system', "
            "'developer', and 'user'.",
            f"{where}.role",
            "invalid_value",
        )
    content = item.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return (
            400,
            f"Invalid type for '{where}.content': expected one of a string or array.",
            f"{where}.content",
            "invalid_type",
        )
    for number, part in enumerate(content):
        at = f"{where}.content[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES:
            return 400, f"Invalid value: '{kind}'.", f"{at}.type", "invalid_value"
        if kind == "input_image":
            if part.get("detail") not in IMAGE_DETAILS:  # required (response_input_image_param.py)
                return (
                    400,
                    f"Missing required parameter: '{at}.detail'.",
                    f"{at}.detail",
                    "missing_required_parameter",
                )
            if not part.get("image_url") and not part.get("file_id"):
                return (
                    400,
                    f"Missing required parameter: '{at}.image_url'.",
                    f"{at}.image_url",
                    "missing_required_parameter",
                )
        if kind == "input_file" and not (
            part.get("file_data") or part.get("file_id") or part.get("file_url")
        ):
            return (
                400,
                f"Missing required parameter: '{at}.file_data'.",
                f"{at}.file_data",
                "missing_required_parameter",
            )
        if kind == "input_file" and part.get("file_data") and not part.get("filename"):
            return (
                400,
                f"Missing required parameter: '{at}.filename'.",
                f"{at}.filename",
                "missing_required_parameter",
            )
    return None


def _prefixed(item: dict[str, Any], where: str, prefix: str) -> Problem | None:
    """An item's id, when given, has its type's prefix: "Invalid 'input[1].id': 'item_…'. Expected an ID
    that begins with 'fc'." (Wei-Shaw/sub2api#3785, code invalid_value; 'rs' for reasoning:
    jlcodes99/cockpit-tools#2090)."""
    item_id = item.get("id")
    if item_id is None or (isinstance(item_id, str) and item_id.startswith(prefix)):
        return None
    return (
        400,
        f"Invalid '{where}.id': '{item_id}'. Expected an ID that begins with '{prefix}'.",
        f"{where}.id",
        "invalid_value",
    )


def _reasoning_item_problem(items: list[Any], index: int, body: dict[str, Any]) -> Problem | None:
    item = items[index]
    where = f"input[{index}]"
    if (problem := _prefixed(item, where, "rs")) is not None:
        return problem
    item_id = item.get("id")
    content = item.get("encrypted_content")
    if content is None:
        # can1357/oh-my-pi#41: HTTP 404 "Item with id 'rs_…' not found. Items are not persisted when
        # `store` is set to false. Try again with `store` set to true, or remove this item from your input."
        return (
            404,
            f"Item with id '{item_id}' not found. Items are not persisted when `store` is set to false. "
            "Try again with `store` set to true, or remove this item from your input.",
            "input",
            None,
        )
    secret = decrypt(content)
    if secret is None:
        # openai/codex#8145: {"message": "The encrypted content gAAA...DQ== could not be verified.",
        # "type": "invalid_request_error", "param": null, "code": "invalid_encrypted_content"}
        shown = f"{content[:4]}...{content[-4:]}" if isinstance(content, str) else "..."
        return 400, f"The encrypted content {shown} could not be verified.", None, "invalid_encrypted_content"
    following = items[index + 1] if index + 1 < len(items) else None
    expected = secret.get("following") or ""
    if (
        not isinstance(following, dict)
        or following.get("type") == "reasoning"
        or (expected.startswith("fc_") and following.get("id") != expected)
    ):
        # continuedev/continue#8933: "Item 'rs_…' of type 'reasoning' was provided without its required
        # following item.", param input. The item that followed it must follow it again (a function call
        # by its `fc_` id: vercel/ai#7099, where leaving the function call's item id out caused it).
        return (
            400,
            f"Item '{item_id}' of type 'reasoning' was provided without its required following item.",
            "input",
            None,
        )
    return None
