"""The model allowlist: which models callers may use, and the default when they name none."""

from __future__ import annotations

from collections.abc import Sequence

from server.core.errors import ModelNotAllowed


class Allowlist:
    def __init__(self, models: Sequence[str], default_model: str) -> None:
        self.models = tuple(models)
        self.default_model = default_model
        self._allowed = frozenset(self.models)

    def resolve(self, model: str) -> str:
        """The model to use for a request: the default for an empty name; refused when not allowed."""
        if not model:
            return self.default_model
        if model not in self._allowed:
            raise ModelNotAllowed(model, self.models)
        return model
