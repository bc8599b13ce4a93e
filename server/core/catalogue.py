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

    @property
    def deprecated(self) -> bool:
        return self.retires is not None

    def retires_within(self, days: int, today: datetime.date) -> bool:
        return self.retires is not None and self.retires - today <= datetime.timedelta(days=days)

    def cost(self, usage: Usage) -> float:
        """USD for a call's usage; cached prompt tokens at the cached price and tokens written to the
        cache at the cache-write price, where the catalogue has them."""
        cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        cached_price = (
            self.cached_input_per_mtok if self.cached_input_per_mtok is not None else self.input_per_mtok
        )
        write_price = (
            self.cache_write_per_mtok if self.cache_write_per_mtok is not None else self.input_per_mtok
        )
        return (
            (usage.prompt_tokens - cached - written) * self.input_per_mtok
            + cached * cached_price
            + written * write_price
            + usage.completion_tokens * self.output_per_mtok
        ) / PER_MILLION


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
