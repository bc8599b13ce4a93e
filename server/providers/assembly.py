"""What every adapter's stream shares for agents: tool calls assembled from their deltas, and reasoning
text and signatures gathered into the parts the next turn sends back."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.core.types import ProviderName, ReasoningPart, ToolCall, ToolCallDelta


@dataclass(slots=True)
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    signature: bytes = b""


@dataclass(slots=True)
class ToolCallAssembler:
    """Tool calls by index, built up from `ToolCallDelta`s as a stream relays them."""

    _calls: dict[int, _Call] = field(default_factory=dict)

    def add(self, delta: ToolCallDelta, signature: bytes = b"") -> ToolCallDelta:
        """Record a delta (and a signature the provider attached to the call); return the delta."""
        call = self._calls.setdefault(delta.index, _Call())
        call.id = call.id or delta.id
        call.name = call.name or delta.name
        call.arguments.append(delta.arguments_delta)
        call.signature = call.signature or signature
        return delta

    def calls(self) -> tuple[ToolCall, ...]:
        """The assembled calls in index order; arguments `{}` when the provider streamed none."""
        return tuple(
            ToolCall(c.id, c.name, "".join(c.arguments) or "{}", c.signature)
            for _, c in sorted(self._calls.items())
        )


@dataclass(slots=True)
class ReasoningAssembler:
    """Reasoning blocks by the provider's block index: thinking text and the signature that closes it."""

    provider: ProviderName
    _texts: dict[int, list[str]] = field(default_factory=dict)
    _signatures: dict[int, bytes] = field(default_factory=dict)
    _redacted: dict[int, bytes] = field(default_factory=dict)

    def text(self, index: int, text: str) -> None:
        self._texts.setdefault(index, []).append(text)

    def signature(self, index: int, signature: bytes) -> None:
        self._texts.setdefault(index, [])
        self._signatures[index] = self._signatures.get(index, b"") + signature

    def redacted(self, index: int, data: bytes) -> None:
        self._texts.setdefault(index, [])
        self._redacted[index] = data

    def parts(self) -> tuple[ReasoningPart, ...]:
        return tuple(
            ReasoningPart(
                "".join(texts),
                self._signatures.get(index, b""),
                self._redacted.get(index, b""),
                self.provider,
            )
            for index, texts in sorted(self._texts.items())
        )
