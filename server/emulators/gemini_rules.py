"""The Gemini API's thinking rules that depend on the model: each a row of (check, the API's own words,
source). The Gemini emulator applies them after the rules every model shares (one of budget and level,
known level names, ...). Their errors come as the API sends them: 400 INVALID_ARGUMENT with the message
alone, `{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT"}}`.

Which model takes what (ai.google.dev/gemini-api/docs/thinking#thinking-levels, checked 2026-12-07 through
the sources below):

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

from collections.abc import Callable
from typing import Any

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
