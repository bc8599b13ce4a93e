"""The model allowlist: which models callers may use, and the default when they name none."""

from __future__ import annotations

from collections.abc import Sequence

from server.core.errors import ModelNotAllowed


class Allowlist:
    def __init__(self, models: Sequence[str], default_model: str) -> None:
        self.models = tuple(models)
        self.default_model = default_model
        self._allowed = frozenset(self.models)

    def allowed_for(self, models: frozenset[str] | None) -> tuple[str, ...]:
        """The allowlist, narrowed to `models` (what a caller's roles allow) when given."""
        return self.models if models is None else tuple(m for m in self.models if m in models)

    def resolve(self, model: str, models: frozenset[str] | None) -> str:
        """The model to use for a request: the default for an empty name. Refused when it is outside the
        allowlist or the caller's `models`, naming only what this caller may use."""
        chosen = model or self.default_model
        if chosen not in self._allowed or (models is not None and chosen not in models):
            raise ModelNotAllowed(chosen, self.allowed_for(models))
        return chosen
