"""The registry of provider kinds: one spec per adapter module. Everything that lists providers
(settings, redaction, demo mode, app wiring, docs) derives from `SPECS`; adding a provider is adding its
module here (docs/adding-a-provider.md)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from server.providers import anthropic, gemini, openai
from server.providers.base import ProviderSpec

SPECS: Mapping[str, ProviderSpec] = MappingProxyType(
    {spec.kind: spec for spec in (openai.SPEC, anthropic.SPEC, gemini.SPEC)}
)
"""Provider kinds by name, in the order the docs and demo mode list them."""
