"""The Messages API's thinking rules that depend on the model: each a row of (check, the API's own words,
source). The Anthropic emulator applies them after the rules every model shares.

Which model takes what (checked 2026-12-07):

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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
