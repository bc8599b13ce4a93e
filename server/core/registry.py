"""Model → provider, by configured name prefixes (longest prefix wins)."""

from __future__ import annotations

from collections.abc import Iterable

from server.core.types import ProviderName


class ModelRegistry:
    def __init__(self, prefixes: Iterable[tuple[str, ProviderName]]) -> None:
        # Longest first, so `gpt-4o-` could override `gpt-` if an operator configured both.
        self._prefixes = tuple(sorted(prefixes, key=lambda pair: len(pair[0]), reverse=True))

    def provider_for(self, model: str) -> ProviderName | None:
        for prefix, provider in self._prefixes:
            if model.startswith(prefix):
                return provider
        return None
