"""The accounting of calls: one record per RPC (its canonical `llm.call` log line and `llm_calls_total`,
finished exactly once by the call pipeline, server/api/pipeline.py) and one per provider call (the
provider metrics), which the gateway reports through the core's `CallObserver` port.

    RPC ──▶ RpcRecord (pipeline) ───────────────▶ llm.call line, llm_calls_total{method,code,origin}
              ▲ fields (model, provider, usage, cost, retries, ...)
              └── ProviderRecord (gateway, via MetricsObserver) ─▶ llm_requests_total, tokens, cost, ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

import structlog
from opentelemetry.trace import Span

from server.core.errors import Code, GatewayError, Origin, ProviderError
from server.core.types import ProviderName, Usage
from server.observability.metrics import Metrics
from server.observability.tracing import Tracing, finish_span

log = structlog.get_logger("llm_grpc.call")

_current: ContextVar[RpcRecord | None] = ContextVar("llm_grpc_rpc", default=None)
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class RpcRecord:
    """One RPC from its first byte to its status. Provider records add their fields to it; `finish`
    writes the one log line and counts the call, with its final code and origin."""

    __slots__ = ("_metrics", "_scope", "_span", "_token", "fields", "method", "started", "trace_id")

    def __init__(
        self,
        metrics: Metrics,
        method: str,
        tracing: Tracing | None = None,
        metadata: Iterable[tuple[str, str | bytes]] = (),
    ) -> None:
        self._metrics = metrics
        self.method = method
        self.started = time.perf_counter()
        self.fields: dict[str, Any] = {}
        self.trace_id = ""
        """The A2A trace id, once the pipeline has read it."""
        # The span only when tracing is on: nothing is built per call otherwise.
        self._scope = tracing.rpc(method, metadata) if tracing is not None else None
        self._span: Span | None = None

    def __enter__(self) -> RpcRecord:
        self._token = _current.set(self)
        if self._scope is not None:
            self._span = self._scope.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.reset(self._token)
        if self._scope is not None:
            self._scope.__exit__(*exc)

    def finish(self, error: BaseException | None) -> tuple[Code, Origin | None]:
        """End the RPC: its code and origin (None for a success), logged and counted once."""
        code, origin, reason, message = outcome(error)
        latency_ms = round((time.perf_counter() - self.started) * 1000, 2)
        origin_label = origin.value if origin is not None else ""
        self._metrics.calls.labels(self.method, code.name, origin_label).inc()
        if self._span is not None:
            finish_span(self._span, self.fields, code.value, reason, self.trace_id)
        line: dict[str, Any] = {
            "method": self.method,
            "status": code.name,
            "latency_ms": latency_ms,
            **self.fields,
        }
        if error is None:
            log.info("llm.call", **line)
            return code, origin
        line.update(origin=origin_label, error_reason=reason, error=message)
        if isinstance(error, ProviderError):
            line["provider_request_id"] = error.request_id
        elif isinstance(error, GatewayError):  # refused before or instead of a provider call
            self._metrics.refusals.labels(self.method, error.reason).inc()
        if code is Code.INTERNAL:
            log.error("llm.call", **line, exc_info=error)
        else:
            log.warning("llm.call", **line)
        return code, origin


def outcome(error: BaseException | None) -> tuple[Code, Origin | None, str | None, str | None]:
    """The final code, origin, ErrorInfo reason and message of a call that ended with `error`."""
    if error is None:
        return Code.OK, None, None, None
    if isinstance(error, GatewayError):
        return error.code, error.origin, error.reason, error.message
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return Code.CANCELLED, Origin.CALLER, "CANCELLED", "the caller went away"
    return Code.INTERNAL, Origin.GATEWAY, "INTERNAL", type(error).__name__


def annotate(**fields: Any) -> None:
    """Add fields to the current RPC's log line (nothing outside an RPC)."""
    record = _current.get()
    if record is not None:
        record.fields.update(fields)


class MetricsObserver:
    """The core's `CallObserver`: provider metrics, and the provider's part of the RPC's log line."""

    def __init__(self, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self._metrics = metrics
        self._tracing = tracing

    def provider_call(
        self, method: str, model: str, provider: ProviderName, started: float
    ) -> ProviderRecord:
        return ProviderRecord(self._metrics, method, model, provider, started, self._tracing)

    def failover(self, from_model: str, to_model: str, reason: str) -> None:
        self._metrics.failover(from_model, to_model)
        log.warning("provider.failover", from_model=from_model, to_model=to_model, reason=reason)

    def governance_violation(self, model: str, source_agent: str) -> None:
        self._metrics.governance_violation(model, source_agent)
        log.warning("governance.violation", model=model, source_agent=source_agent)


class ProviderRecord:
    """One call to one provider (the core's `ProviderCall`); `succeed` or `fail` ends it."""

    __slots__ = (
        "_metrics",
        "_series",
        "_tracing",
        "first_token_ms",
        "method",
        "model",
        "provider",
        "provider_s",
        "retries",
        "started",
    )

    def __init__(
        self,
        metrics: Metrics,
        method: str,
        model: str,
        provider: str,
        started: float,
        tracing: Tracing | None = None,
    ) -> None:
        self._metrics = metrics
        self._tracing = tracing
        self.method = method
        self.model = model
        self.provider = provider
        self.started = started
        self.retries = 0
        self.first_token_ms: float | None = None
        self.provider_s = 0.0
        """Seconds spent waiting on the provider (attempts and retry waits): not gateway overhead."""
        self._series = metrics.series(provider, model, method)
        self._series.active.inc()
        annotate(model=model, provider=provider)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def waited_on_provider(self, seconds: float) -> None:
        self.provider_s += seconds

    def attempt(self) -> AbstractContextManager[Mapping[str, str]]:
        if self._tracing is None:
            return nullcontext(_NO_HEADERS)
        return self._tracing.attempt(self.provider, self.model)

    def retry(self, reason: str, delay: float) -> None:
        self.retries += 1
        self.provider_s += delay
        self._metrics.retries.labels(self.provider, reason).inc()
        annotate(retries=self.retries)
        log.info(
            "provider.retry",
            provider=self.provider,
            model=self.model,
            reason=reason,
            attempt=self.retries,
            delay_s=round(delay, 3),
        )

    def first_token(self) -> None:
        self.first_token_ms = self.elapsed_ms()
        series = self._series
        series.time_to_first_token.observe(self.first_token_ms / 1000)
        series.overhead.observe(max(0.0, self.first_token_ms / 1000 - self.provider_s))
        series.genai_time_to_first_token.observe(self.first_token_ms / 1000)
        annotate(time_to_first_token_ms=round(self.first_token_ms, 2))

    def succeed(
        self, usage: Usage, cost_usd: float, served_model: str, request_id: str, finish_reason: str
    ) -> None:
        elapsed_ms = self.elapsed_ms()
        series = self._series
        series.active.dec()
        series.ok.inc()
        series.duration.observe(elapsed_ms / 1000)
        series.prompt_tokens.inc(usage.prompt_tokens)
        series.completion_tokens.inc(usage.completion_tokens)
        series.cost.inc(cost_usd)
        series.genai_input_tokens.observe(usage.prompt_tokens)
        series.genai_output_tokens.observe(usage.completion_tokens)
        series.genai_duration_ok.observe(elapsed_ms / 1000)
        if self.first_token_ms is None:  # unary: all of the call but the provider's part
            series.overhead.observe(max(0.0, elapsed_ms / 1000 - self.provider_s))
        annotate(
            model=self.model,
            provider=self.provider,
            served_model=served_model or self.model,
            provider_request_id=request_id or None,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=round(cost_usd, 8),
            retries=self.retries,
            finish_reason=finish_reason,
        )

    def fail(self, error: BaseException) -> None:
        code, origin, reason, _ = outcome(error)
        m = self._metrics
        self._series.active.dec()
        m.requests.labels(self.provider, self.model, self.method, code.name).inc()
        self._series.duration.observe(self.elapsed_ms() / 1000)
        m.genai_operation_duration.labels("chat", self.provider, self.model, reason or "").observe(
            self.elapsed_ms() / 1000
        )
        if origin is Origin.PROVIDER and reason is not None:  # only what the provider caused
            m.errors.labels(self.provider, self.model, reason.lower()).inc()
        annotate(model=self.model, provider=self.provider, retries=self.retries)
