"""The model catalogue: tier, limits and prices of each known model; model selection and call cost."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from server.core.errors import NoModelFits
from server.core.types import Capabilities, ProviderName, Usage

PER_MILLION = 1_000_000


class Tier(enum.StrEnum):
    FAST = "fast"
    BALANCED = "balanced"
    PREMIUM = "premium"


class WireApi(enum.StrEnum):
    """The wire API an OpenAI-kind model is served on (docs/providers.md, "OpenAI: which API")."""

    CHAT_COMPLETIONS = "chat_completions"
    RESPONSES = "responses"


RESPONSES_MIN_OUTPUT_TOKENS = 16
"""The Responses API refuses a smaller `max_output_tokens`: "Invalid 'max_output_tokens': integer below
minimum value. Expected a value >= 16, but got 1 instead." (vectorize-io/hindsight#58,
earendil-works/pi#6265); the gateway refuses it first, before anything is reserved or sent."""


class Complexity(enum.StrEnum):
    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"


TIER_FOR_COMPLEXITY = {
    Complexity.SIMPLE: Tier.FAST,
    Complexity.MODERATE: Tier.BALANCED,
    Complexity.COMPLEX: Tier.PREMIUM,
}


@dataclass(slots=True, frozen=True)
class LongPromptTier:
    """Prices for a whole call whose prompt has more than `above` tokens (gpt-5.4 above 272K, Gemini Pro
    above 200K); each is at least the model's standard price (the catalogue loader checks)."""

    above: int
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None


@dataclass(slots=True, frozen=True)
class _Prices:
    input: float
    output: float
    cached: float
    write: float


@dataclass(slots=True, frozen=True)
class ModelInfo:
    id: str
    provider: ProviderName
    tier: Tier
    context_window: int
    max_output_tokens: int
    input_per_mtok: float
    """USD per million prompt tokens."""
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    """USD per million prompt tokens served from the provider's cache, where the provider has one."""
    cache_write_per_mtok: float | None = None
    """USD per million prompt tokens written to the cache, where writes cost more than input."""
    retires: datetime.date | None = None
    """The announced shutdown date, when there is one."""
    capabilities: Capabilities = field(default_factory=Capabilities)
    api: WireApi = WireApi.CHAT_COMPLETIONS
    """The wire API of an OpenAI-kind model (`responses` or `chat_completions`); other kinds have one."""
    long_prompt: LongPromptTier | None = None
    """Dearer prices for a call whose prompt passes a threshold, where the provider has them."""

    @property
    def min_output_tokens(self) -> int:
        """The smallest max_tokens the model's API takes."""
        return RESPONSES_MIN_OUTPUT_TOKENS if self.api is WireApi.RESPONSES else 1

    @property
    def deprecated(self) -> bool:
        return self.retires is not None

    def retires_within(self, days: int, today: datetime.date) -> bool:
        return self.retires is not None and self.retires - today <= datetime.timedelta(days=days)

    def prices(self, prompt_tokens: int) -> _Prices:
        """The prices of a call with `prompt_tokens` of prompt: the long-prompt tier's past its threshold
        (for the whole call, as the providers bill it). A cached or cache-write price the catalogue does
        not give is the input price."""
        tier = self.long_prompt
        if tier is not None and prompt_tokens > tier.above:
            base: LongPromptTier = tier
        else:
            base = LongPromptTier(
                0,
                self.input_per_mtok,
                self.output_per_mtok,
                self.cached_input_per_mtok,
                self.cache_write_per_mtok,
            )
        return _Prices(
            base.input_per_mtok,
            base.output_per_mtok,
            base.cached_input_per_mtok if base.cached_input_per_mtok is not None else base.input_per_mtok,
            base.cache_write_per_mtok if base.cache_write_per_mtok is not None else base.input_per_mtok,
        )

    def cost(self, usage: Usage) -> float:
        """USD for a call's usage; cached prompt tokens at the cached price and tokens written to the
        cache at the cache-write price, where the catalogue has them; all at the long-prompt tier's
        prices when the prompt passes its threshold."""
        prices = self.prices(usage.prompt_tokens)
        cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        return (
            (usage.prompt_tokens - cached - written) * prices.input
            + cached * prices.cached
            + written * prices.write
            + usage.completion_tokens * prices.output
        ) / PER_MILLION

    def worst_cost(self, prompt_tokens: int, completion_tokens: int, *, cache_writes: bool) -> float:
        """The most a call with at most these tokens can be billed: the tier its prompt bound falls in
        (a tier's prices are never below the standard ones), every prompt token at the dearest prompt
        price it may be billed at (the cache-write price where the request sets a cache breakpoint)."""
        prices = self.prices(prompt_tokens)
        prompt_price = max(prices.input, prices.cached, prices.write if cache_writes else 0.0)
        return (prompt_tokens * prompt_price + completion_tokens * prices.output) / PER_MILLION


@dataclass(slots=True, frozen=True)
class Selection:
    model: ModelInfo
    reason: str


class Catalogue:
    def __init__(self, models: Iterable[ModelInfo]) -> None:
        self._models = {model.id: model for model in models}

    def __contains__(self, model: str) -> bool:
        return model in self._models

    def get(self, model: str) -> ModelInfo:
        return self._models[model]

    def models(self) -> Mapping[str, ModelInfo]:
        return self._models

    def select(self, tier: Tier, allowed: Iterable[str], providers: Collection[ProviderName]) -> Selection:
        """The cheapest allowed model of `tier` whose provider is configured (ties: allowlist order).

        "Cheapest" prices a typical call, three prompt tokens for each completion token.
        """
        candidates = [self._models[m] for m in allowed if m in self._models and self._models[m].tier is tier]
        if not candidates:
            raise NoModelFits(tier.value, f"no allowed model is in the {tier.value} tier")
        served = [m for m in candidates if m.provider in providers]
        if not served:
            names = ", ".join(m.id for m in candidates)
            raise NoModelFits(tier.value, f"the {tier.value} models ({names}) have no configured provider")
        best = min(served, key=lambda m: 3 * m.input_per_mtok + m.output_per_mtok)
        return Selection(best, f"cheapest allowed {tier.value} model with a configured provider")
