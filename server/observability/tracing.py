"""OpenTelemetry traces, off unless configured: a SERVER span per RPC and a CLIENT span per provider
attempt (retries visible), with the GenAI semantic conventions' attributes
(https://opentelemetry.io/docs/specs/semconv/gen-ai/). A caller's W3C `traceparent` (gRPC metadata) is
continued, and each attempt's own `traceparent` goes on to the provider in its HTTP headers.

No global state: the tracer provider is built here from the standard OTEL_* variables (read by
server/config.py) and injected; tests hand in their own (an in-memory exporter)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE = "llm.v1.LLMService"
GENERATION_METHODS = {"Complete": "chat", "Stream": "chat"}
"""RPCs that call a model, and their `gen_ai.operation.name`."""

# The call record's fields, as span attributes.
_ATTRIBUTES = {
    "model": "gen_ai.request.model",
    "served_model": "gen_ai.response.model",
    "provider": "gen_ai.provider.name",
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "completion_tokens": "gen_ai.usage.output_tokens",
    "provider_request_id": "gen_ai.response.id",
    "cost_usd": "llm_grpc.cost_usd",
    "retries": "llm_grpc.retries",
    # An attribute name, not a credential (bandit reads "token" as a password).
    "time_to_first_token_ms": "llm_grpc.time_to_first_token_ms",  # nosec B105
}


def build_tracer_provider(service_name: str, endpoint: str | None) -> TracerProvider:
    """A provider exporting in batches over OTLP/gRPC (the exporter reads the other OTEL_EXPORTER_OTLP_*
    variables itself: headers, certificates, timeout, compression)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer: Tracer = provider.get_tracer("llm_grpc")
        self._propagator = TraceContextTextMapPropagator()

    @contextmanager
    def rpc(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> Iterator[Span]:
        """The RPC's SERVER span, a child of the caller's `traceparent` when it sent one."""
        carrier = {key: value for key, value in metadata if isinstance(value, str)}
        parent = self._propagator.extract(carrier)
        operation = GENERATION_METHODS.get(method)
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": method,
        }
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
        with self._tracer.start_as_current_span(
            f"{SERVICE}/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    @contextmanager
    def attempt(self, provider: str, model: str) -> Iterator[Mapping[str, str]]:
        """A provider attempt's CLIENT span (named as GenAI spans are: `chat {model}`); yields the
        headers carrying its context to the provider."""
        with self._tracer.start_as_current_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            # An exception's text may quote provider error bodies: only its reason goes on the span.
            record_exception=False,
            set_status_on_exception=False,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
            },
        ) as span:
            headers: dict[str, str] = {}
            self._propagator.inject(headers)
            try:
                yield headers
            except BaseException as error:
                span.set_attribute("error.type", getattr(error, "reason", type(error).__name__))
                span.set_status(Status(StatusCode.ERROR))
                raise


def finish_span(span: Span, fields: Mapping[str, Any], code: int, reason: str | None, trace_id: str) -> None:
    """The RPC's outcome on its span: the call record's fields as GenAI attributes, the gRPC code."""
    attributes: dict[str, Any] = {
        name: fields[field] for field, name in _ATTRIBUTES.items() if fields.get(field) is not None
    }
    if fields.get("finish_reason"):
        attributes["gen_ai.response.finish_reasons"] = [str(fields["finish_reason"]).lower()]
    if trace_id:
        attributes["a2a.trace_id"] = trace_id
    attributes["rpc.grpc.status_code"] = code
    span.set_attributes(attributes)
    if reason is not None:
        span.set_attribute("error.type", reason)
        span.set_status(Status(StatusCode.ERROR, reason))
