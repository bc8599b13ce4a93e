"""The accounting of one call: its canonical log line and its metrics, finished exactly once."""

from __future__ import annotations

import asyncio
import time

import structlog

from server.core.errors import GatewayError, ProviderError
from server.core.types import Usage
from server.observability.metrics import Metrics

log = structlog.get_logger("llm_grpc.call")


class CallRecord:
    """Created when a call has its provider; `succeed` or `fail` ends it (one log line, its metrics)."""

    __slots__ = (
        "_metrics",
        "_series",
        "first_token_ms",
        "method",
        "model",
        "provider",
        "provider_s",
        "retries",
        "started",
    )

    def __init__(self, metrics: Metrics, method: str, model: str, provider: str, started: float) -> None:
        self._metrics = metrics
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

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def retry(self, reason: str, delay: float) -> None:
        self.retries += 1
        self.provider_s += delay
        self._metrics.retries.labels(self.provider, reason).inc()
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
        self._series.time_to_first_token.observe(self.first_token_ms / 1000)
        self._series.overhead.observe(max(0.0, self.first_token_ms / 1000 - self.provider_s))

    def succeed(self, usage: Usage, cost_usd: float, served_model: str = "", request_id: str = "") -> None:
        """`served_model` and `request_id`: what the provider says served the call, and its id for it."""
        elapsed_ms = self.elapsed_ms()
        series = self._series
        series.active.dec()
        series.ok.inc()
        series.duration.observe(elapsed_ms / 1000)
        series.prompt_tokens.inc(usage.prompt_tokens)
        series.completion_tokens.inc(usage.completion_tokens)
        series.cost.inc(cost_usd)
        if self.first_token_ms is None:  # unary: all of the call but the provider's part
            series.overhead.observe(max(0.0, elapsed_ms / 1000 - self.provider_s))
        log.info(
            "llm.call",
            method=self.method,
            model=self.model,
            served_model=served_model or self.model,
            provider=self.provider,
            provider_request_id=request_id or None,
            status="OK",
            latency_ms=round(elapsed_ms, 2),
            time_to_first_token_ms=_round(self.first_token_ms),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=round(cost_usd, 8),
            retries=self.retries,
        )

    def fail(self, error: BaseException) -> None:
        elapsed_ms = self.elapsed_ms()
        if isinstance(error, GatewayError):
            status, error_type, message = error.code.name, error.reason.lower(), error.message
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            status, error_type, message = "CANCELLED", "cancelled", "the caller went away"
        else:
            status, error_type, message = "INTERNAL", "internal", type(error).__name__
        m = self._metrics
        self._series.active.dec()
        m.requests.labels(self.provider, self.model, self.method, status).inc()
        self._series.duration.observe(elapsed_ms / 1000)
        m.errors.labels(self.provider, self.model, error_type).inc()
        log.warning(
            "llm.call",
            method=self.method,
            model=self.model,
            provider=self.provider,
            status=status,
            error=message,
            error_reason=error.reason if isinstance(error, GatewayError) else None,
            provider_request_id=error.request_id if isinstance(error, ProviderError) else None,
            latency_ms=round(elapsed_ms, 2),
            time_to_first_token_ms=_round(self.first_token_ms),
            retries=self.retries,
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
