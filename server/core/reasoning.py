"""How a caller's reasoning control (an effort or a token budget) becomes what a model takes, from the
catalogue's thinking fields alone: one table of mappings for every adapter, documented in
docs/providers.md ("Reasoning") and docs/agents.md.

A model takes thinking in one of four ways (`Capabilities.thinking`):

- `budget`    a token budget (Claude 4.5 `thinking: {type: enabled, budget_tokens}`, Gemini 2.5
              `thinking_budget`); an effort becomes the budget of EFFORT_BUDGETS.
- `adaptive`  Claude adaptive thinking with `output_config.effort` (Opus 4.7 and later); a budget becomes
              the nearest effort (NEAREST_EFFORT).
- `both`      either (Claude 4.6): an effort goes as adaptive + effort, a budget as a budget.
- `levels`    Gemini 3 `thinking_level`, from the model's own list (`Capabilities.thinking_levels`); a
              budget becomes the nearest effort, an effort the model lacks the nearest level it has
              (the higher one on a tie: never less thinking than asked for).

A budget of 0 asks for no thinking: nothing is sent to a `budget`/`adaptive`/`both` Claude model (its
thinking is off unless asked for), `thinking_budget: 0` to a Gemini 2.5 model that can turn it off, and
`minimal` to a Gemini 3 model that has it (Google documents `minimal` as matching "no thinking" for most
queries). A model that cannot stop thinking (`thinking_off = false`: Gemini 3 Pro, Gemini 2.5 Pro) is
refused up front (`refusals`), never sent something it would refuse or quietly more thinking than asked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.core.types import Capabilities, ReasoningConfig, ReasoningEffort, ToolChoice, ToolChoiceMode


class ThinkingMode(enum.StrEnum):
    BUDGET = "budget"
    ADAPTIVE = "adaptive"
    BOTH = "both"
    LEVELS = "levels"


EFFORT_BUDGETS = {ReasoningEffort.LOW: 1024, ReasoningEffort.MEDIUM: 4096, ReasoningEffort.HIGH: 16384}
"""An effort as a token budget, for models that take budgets."""
LEVEL_ORDER = ("minimal", "low", "medium", "high", "xhigh")
"""Gemini's thinking levels, least thinking first (google-genai `types.ThinkingLevel`)."""
NO_THINKING_LEVEL = "minimal"


def nearest_effort(budget: int) -> ReasoningEffort:
    """The effort whose budget (EFFORT_BUDGETS) is nearest a positive `budget`, on a log scale: up to 2048
    tokens low, up to 8192 medium, above that high."""
    if budget <= 2048:
        return ReasoningEffort.LOW
    if budget <= 8192:
        return ReasoningEffort.MEDIUM
    return ReasoningEffort.HIGH


def nearest_level(wanted: str, levels: tuple[str, ...]) -> str:
    """`wanted` if the model has it, else the nearest level it has (the higher one on a tie)."""
    if wanted in levels or not levels:
        return wanted
    rank = LEVEL_ORDER.index(wanted)
    return min(levels, key=lambda level: (abs(LEVEL_ORDER.index(level) - rank), -LEVEL_ORDER.index(level)))


@dataclass(slots=True, frozen=True)
class ThinkingPlan:
    """What to send. `off`: ask for no thinking. Otherwise exactly one of `budget`, `effort` (adaptive
    thinking with that effort) or `level` is set."""

    off: bool = False
    budget: int | None = None
    effort: ReasoningEffort | None = None
    level: str | None = None


def plan(caps: Capabilities, reasoning: ReasoningConfig | None) -> ThinkingPlan | None:
    """The thinking to send for a request's reasoning control (None: the caller set none, send nothing).
    Assumes `refusals` found nothing."""
    if reasoning is None or (reasoning.effort is None and reasoning.budget_tokens is None):
        return None
    mode = ThinkingMode(caps.thinking)
    budget = reasoning.budget_tokens
    if budget == 0:
        if mode is ThinkingMode.LEVELS:
            return ThinkingPlan(level=NO_THINKING_LEVEL)
        return ThinkingPlan(off=True)
    effort = reasoning.effort if reasoning.effort is not None else nearest_effort(budget or 0)
    match mode:
        case ThinkingMode.BUDGET:
            return ThinkingPlan(budget=budget if budget is not None else EFFORT_BUDGETS[effort])
        case ThinkingMode.BOTH if budget is not None:
            return ThinkingPlan(budget=budget)
        case ThinkingMode.ADAPTIVE | ThinkingMode.BOTH:
            return ThinkingPlan(effort=effort)
    return ThinkingPlan(level=nearest_level(effort.value, caps.thinking_levels))


def refusals(
    caps: Capabilities, reasoning: ReasoningConfig | None, tool_choice: ToolChoice | None
) -> list[tuple[str, str]]:
    """(field, what the model does not accept) for a reasoning control the model cannot honour."""
    if reasoning is None or not caps.reasoning:
        return []
    problems: list[tuple[str, str]] = []
    if reasoning.budget_tokens == 0 and not caps.thinking_off:
        what = "turning thinking off (budget_tokens 0): it always thinks (thinking_off)"
        problems.append(("reasoning.budget_tokens", what))
    thinking = plan(caps, reasoning) if not problems else None
    forced = tool_choice is not None and tool_choice.mode is ToolChoiceMode.REQUIRED
    if forced and thinking is not None and thinking.budget is not None and not caps.forced_tool_thinking:
        problems.append(
            (
                "tool_choice",
                "a forced tool choice (REQUIRED) while thinking on a token budget (forced_tool_thinking); "
                "use an effort where the model has adaptive thinking, or tool choice AUTO",
            )
        )
    return problems
