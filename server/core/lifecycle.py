"""Model lifecycle: which allowed models are near their announced retirement, and which the providers
no longer list (`llm-gateway models verify`)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from server.core.catalogue import Catalogue
from server.core.errors import GatewayError
from server.core.ports import Provider
from server.core.types import ProviderName

RETIREMENT_WARNING_DAYS = 30


@dataclass(slots=True, frozen=True)
class Retiring:
    model: str
    retires: datetime.date
    days_left: int
    """Negative when the date has passed."""


def retiring(
    catalogue: Catalogue, allowed: Iterable[str], today: datetime.date, days: int = RETIREMENT_WARNING_DAYS
) -> list[Retiring]:
    """The allowed models whose announced retirement is within `days` of `today` (or past)."""
    found = []
    for model in allowed:
        info = catalogue.get(model) if model in catalogue else None
        if info is not None and info.retires is not None and info.retires_within(days, today):
            found.append(Retiring(model, info.retires, (info.retires - today).days))
    return found


@dataclass(slots=True, frozen=True)
class ProviderModels:
    """What one provider said when asked for its models."""

    provider: ProviderName
    allowed: tuple[str, ...]
    missing: tuple[str, ...] = ()
    """Allowed models the provider does not list."""
    error: str = ""
    """Why the list could not be read (then `missing` is empty and nothing is known)."""


def served(model: str, listed: Iterable[str]) -> bool:
    """Whether the provider lists `model`: itself, or a dated snapshot of it (Anthropic lists
    `claude-haiku-4-5-20251001` for the alias `claude-haiku-4-5`)."""
    return any(name == model or name.startswith(f"{model}-") for name in listed)


async def verify(
    providers: Mapping[ProviderName, Provider],
    allowed_by_provider: Mapping[ProviderName, Sequence[str]],
    timeout: float = 30.0,
) -> list[ProviderModels]:
    """Ask each provider for its models (its SDK's `models.list`) and compare with the allowlist."""

    async def check(name: ProviderName, models: Sequence[str]) -> ProviderModels:
        try:
            listed = await providers[name].list_models(timeout)
        except GatewayError as error:
            return ProviderModels(name, tuple(models), error=error.message)
        except TimeoutError:
            return ProviderModels(name, tuple(models), error="timed out")
        missing = tuple(model for model in models if not served(model, listed))
        return ProviderModels(name, tuple(models), missing)

    return list(await asyncio.gather(*(check(name, models) for name, models in allowed_by_provider.items())))
