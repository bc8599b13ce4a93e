"""Prometheus metrics of the gateway, on an injectable registry so tests stay isolated.

Label values a caller controls are bounded so no caller can create unbounded series: a refused model
name and a source agent are kept for the first `max_refused_models` / `max_source_agents` distinct
values seen since start, then reported as `other`. Every other label comes from configuration
(allowed models, providers) or from fixed sets (methods, status codes, error reasons).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.core.capacity import CapacityObserver, DeploymentState, Dim
from server.core.types import ProviderName

OTHER = "other"
# LLM latencies: 50 ms to 120 s.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
# The OpenTelemetry GenAI semantic conventions' metrics, under their Prometheus names, with the buckets
# the conventions advise (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/).
GENAI_LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))  # 1 .. 67,108,864
GENAI_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
GENAI_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class BoundedLabel:
    """Keeps at most `limit` distinct values of a caller-controlled label; the rest become `other`."""

    def __init__(self, limit: int, known: Iterable[str] = ()) -> None:
        self._seen = set(known)
        self._limit = limit + len(self._seen)

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return OTHER


@dataclass(slots=True, frozen=True)
class CallSeries:
    """The label children a served call updates, resolved once per (provider, model, method) instead of
    by `labels()` on every call (prometheus_client's advice for hot paths)."""

    active: Any
    ok: Any
    duration: Any
    prompt_tokens: Any
    completion_tokens: Any
    cost: Any
    overhead: Any
    time_to_first_token: Any
    genai_input_tokens: Any
    genai_output_tokens: Any
    genai_duration_ok: Any
    genai_time_to_first_token: Any


class Metrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_refused_models: int = 50,
        max_source_agents: int = 100,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._refused_model = BoundedLabel(max_refused_models)
        self._source_agent = BoundedLabel(max_source_agents, known=("",))
        r = self.registry
        self.calls = Counter(
            "llm_calls_total",
            "Every RPC, once, by its final gRPC code and who caused it (caller, gateway, provider)",
            ["method", "code", "origin"],
            registry=r,
        )
        self.refusals = Counter(
            "llm_refusals_total",
            "RPCs refused before or instead of a provider call, by the ErrorInfo reason",
            ["method", "reason"],
            registry=r,
        )
        self.requests = Counter(
            "llm_requests_total",
            "Provider calls by outcome (a failover makes one per model tried)",
            ["provider", "model", "method", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "llm_request_duration_seconds",
            "Whole-call latency inside the gateway",
            ["provider", "model", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "llm_time_to_first_token_seconds",
            "Stream time to first token",
            ["provider", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llm_tokens_total",
            "Tokens by type (prompt, completion)",
            ["provider", "model", "token_type"],
            registry=r,
        )
        self.cost = Counter(
            "llm_cost_usd_total",
            "US dollars spent, from usage and catalogue prices",
            ["provider", "model"],
            registry=r,
        )
        self.errors = Counter(
            "llm_errors_total",
            "Provider calls failed by the provider, by error type",
            ["provider", "model", "error_type"],
            registry=r,
        )
        self.active = Gauge("llm_active_requests", "Calls in flight", ["provider"], registry=r)
        self.retries = Counter(
            "llm_retries_total", "Provider call retries", ["provider", "reason"], registry=r
        )
        self.governance_violations = Counter(
            "llm_governance_violations_total",
            "Calls refused by the model allowlist",
            ["model", "source_agent"],
            registry=r,
        )
        self.failovers = Counter(
            "llm_failovers_total",
            "Calls moved to a configured fallback model",
            ["from_model", "to_model"],
            registry=r,
        )
        self.overhead = Histogram(
            "llm_gateway_overhead_seconds",
            "Time spent in the gateway outside the provider call",
            ["method"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )

        self.genai_token_usage = Histogram(
            "gen_ai_client_token_usage",
            "OTel GenAI: tokens used per provider call, by token type (input, output)",
            [*GENAI_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.genai_operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "OTel GenAI: duration of provider calls (error_type empty on success)",
            [*GENAI_LABELS, "error_type"],
            buckets=GENAI_DURATION_BUCKETS,
            registry=r,
        )
        self.genai_time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "OTel GenAI: time to the first token of a stream",
            GENAI_LABELS,
            buckets=GENAI_TTFT_BUCKETS,
            registry=r,
        )

        self.limit_refusals = Counter(
            "llm_limit_refusals_total",
            "Calls refused by a caller's rate limit, concurrency limit or budget (docs/limits.md)",
            ["limit", "scope"],
            registry=r,
        )
        self.limit_store_errors = Counter(
            "llm_limit_store_errors_total",
            "Limit checks that could not reach the shared store (Redis)",
            registry=r,
        )
        self.budget_used = Gauge(
            "llm_budget_used_usd",
            "USD of a caller's budget used in the current window (reservations in flight included)",
            ["source_agent", "period"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "llm_budget_remaining_usd",
            "USD left of a caller's budget in the current window",
            ["source_agent", "period"],
            registry=r,
        )
        self.capacity = CapacityMetrics(r)

        self._series: dict[tuple[str, str, str], CallSeries] = {}

    def series(self, provider: str, model: str, method: str) -> CallSeries:
        """The children of one (provider, model, method): bounded by configuration (allowed models,
        configured providers, the service's methods), so the cache is too."""
        key = (provider, model, method)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = CallSeries(
                active=self.active.labels(provider),
                ok=self.requests.labels(provider, model, method, "OK"),
                duration=self.duration.labels(provider, model, method),
                prompt_tokens=self.tokens.labels(provider, model, "prompt"),
                completion_tokens=self.tokens.labels(provider, model, "completion"),
                cost=self.cost.labels(provider, model),
                overhead=self.overhead.labels(method),
                time_to_first_token=self.time_to_first_token.labels(provider, model),
                genai_input_tokens=self.genai_token_usage.labels("chat", provider, model, "input"),
                genai_output_tokens=self.genai_token_usage.labels("chat", provider, model, "output"),
                genai_duration_ok=self.genai_operation_duration.labels("chat", provider, model, ""),
                genai_time_to_first_token=self.genai_time_to_first_token.labels("chat", provider, model),
            )
        return found

    def capacity_observer(self) -> CapacityMetrics:
        return self.capacity

    def limit_refused(self, limit: str, scope: str) -> None:
        """Scopes are `all`, `model:<allowed model>` or `tier:<tier>`: bounded by configuration."""
        self.limit_refusals.labels(limit, scope).inc()

    def budget(self, source_agent: str, period: str, used_usd: float, limit_usd: float) -> None:
        agent = self._source_agent(source_agent)
        self.budget_used.labels(agent, period).set(used_usd)
        self.budget_remaining.labels(agent, period).set(max(0.0, limit_usd - used_usd))

    def failover(self, from_model: str, to_model: str) -> None:
        self.failovers.labels(from_model, to_model).inc()

    def governance_violation(self, model: str, source_agent: str) -> None:
        self.governance_violations.labels(self._refused_model(model), self._source_agent(source_agent)).inc()


@dataclass(slots=True)
class Totals:
    requests: int = 0
    tokens: int = 0
    errors: int = 0
    cost_usd: float = 0.0


@dataclass(slots=True)
class Snapshot:
    """Totals since start, for the GetMetrics RPC."""

    total_requests: int = 0
    total_tokens: int = 0
    total_cost_usd: float = 0.0
    mean_latency_ms: float = 0.0
    providers: dict[str, Totals] = field(default_factory=dict)
    models: dict[tuple[str, str], Totals] = field(default_factory=dict)
    """By (provider, model)."""
    governance_violations: int = 0


def snapshot(metrics: Metrics) -> Snapshot:
    """Sum the registry's own samples, so the snapshot always agrees with /metrics."""
    result = Snapshot()
    latency_sum = latency_count = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            provider = sample.labels.get("provider", "")
            per_provider = per_model = Totals()
            if sample.name in ("llm_requests_total", "llm_tokens_total", "llm_cost_usd_total"):
                per_provider = result.providers.setdefault(provider, Totals())
                per_model = result.models.setdefault((provider, sample.labels["model"]), Totals())
            if sample.name == "llm_requests_total":
                failed = int(sample.value) if sample.labels["status"] != "OK" else 0
                for totals in (per_provider, per_model):
                    totals.requests += int(sample.value)
                    totals.errors += failed
                result.total_requests += int(sample.value)
            elif sample.name == "llm_tokens_total":
                per_provider.tokens += int(sample.value)
                per_model.tokens += int(sample.value)
                result.total_tokens += int(sample.value)
            elif sample.name == "llm_cost_usd_total":
                per_provider.cost_usd += sample.value
                per_model.cost_usd += sample.value
                result.total_cost_usd += sample.value
            elif sample.name == "llm_request_duration_seconds_sum":
                latency_sum += sample.value
            elif sample.name == "llm_request_duration_seconds_count":
                latency_count += sample.value
            elif sample.name == "llm_governance_violations_total":
                result.governance_violations += int(sample.value)
    result.mean_latency_ms = latency_sum / latency_count * 1000 if latency_count else 0.0
    return result


QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class CapacityMetrics(CapacityObserver):
    """Upstream capacity (server/core/capacity.py): the providers' limits and their use per deployment,
    the fair queue, and the 429s that still arrive. Labels are bounded by LLM_DEPLOYMENTS."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.limit = Gauge(
            "llm_upstream_capacity_limit",
            "A deployment's rate limit per minute (configured, or learned from the provider's headers)",
            ["model", "provider", "limit"],
            registry=r,
        )
        self.used = Gauge(
            "llm_upstream_capacity_used",
            "What is used of a deployment's rate limit in the last minute, all replicas together",
            ["model", "provider", "limit"],
            registry=r,
        )
        self.queue_length = Gauge(
            "llm_upstream_queue_length",
            "Calls waiting for upstream capacity (this replica)",
            ["model"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "llm_upstream_queue_wait_seconds",
            "How long calls waited for upstream capacity, by outcome (served, refused)",
            ["model", "outcome"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "llm_upstream_capacity_refusals_total",
            "Calls refused with UPSTREAM_CAPACITY before anything was sent",
            ["model"],
            registry=r,
        )
        self.received_429 = Counter(
            "llm_upstream_rate_limited_total",
            "HTTP 429s received from a deployment despite the capacity accounting",
            ["model", "provider"],
            registry=r,
        )

    def queued(self, model: str, length: int) -> None:
        self.queue_length.labels(model).set(length)

    def waited(self, model: str, seconds: float, outcome: str) -> None:
        self.queue_wait.labels(model, outcome).observe(seconds)

    def refused(self, model: str) -> None:
        self.refusals.labels(model).inc()

    def rate_limited(self, model: str, provider: ProviderName) -> None:
        self.received_429.labels(model, provider).inc()

    def known(self, model: str, provider: ProviderName) -> None:
        self.refusals.labels(model)
        self.received_429.labels(model, provider)
        self.queue_length.labels(model)
        for outcome in ("served", "refused"):
            self.queue_wait.labels(model, outcome)

    def deployment(self, state: DeploymentState) -> None:
        for dim, limit, used in zip(Dim, state.limits, state.used, strict=True):
            name = dim.name.lower()
            self.limit.labels(state.model, state.provider, name).set(limit)
            self.used.labels(state.model, state.provider, name).set(used)
