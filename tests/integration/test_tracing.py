"""OpenTelemetry traces through the public gRPC surface: a server span per RPC with the GenAI semantic
conventions' attributes, a client span per provider attempt (retries visible), the caller's W3C
traceparent continued and each attempt's sent on to the provider; exported over OTLP/gRPC for real."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App
from tests.conftest import MODELS, Emulators
from tests.helpers import user

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    yield spans
    spans.clear()


@pytest.fixture
async def stub(
    start_gateway: Callable[..., Any], exporter: InMemorySpanExporter
) -> llm_pb2_grpc.LLMServiceAsyncStub:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app: App = await start_gateway(tracer_provider=provider)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return llm_pb2_grpc.LLMServiceStub(channel)


def _by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in spans if span.kind is kind]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
async def test_a_call_has_a_server_span_with_genai_attributes_continuing_the_callers_trace(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, exporter: InMemorySpanExporter, provider: str
) -> None:
    await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS[provider], messages=user("a b c")),
        metadata=(("traceparent", TRACEPARENT), ("a2a-trace-id", "a2a-1")),
        timeout=10,
    )

    (server,) = _by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert server.name == "llm.v1.LLMService/Complete"
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    attributes: dict[str, Any] = dict(server.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == provider
    assert attributes["gen_ai.request.model"] == MODELS[provider]
    assert attributes["gen_ai.response.model"]
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["a2a.trace_id"] == "a2a-1"
    assert attributes["rpc.grpc.status_code"] == 0


async def test_each_provider_attempt_is_a_client_span_and_its_traceparent_reaches_the_provider(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, exporter: InMemorySpanExporter, emulators: Emulators
) -> None:
    await stub.Complete(
        llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi [[emulate: status=503 times=1]]")),
        metadata=(("traceparent", TRACEPARENT),),
        timeout=10,
    )

    spans = exporter.get_finished_spans()
    (server,) = _by_kind(spans, SpanKind.SERVER)
    failed, served = _by_kind(spans, SpanKind.CLIENT)
    assert [a.name for a in (failed, served)] == [f"chat {MODELS['openai']}"] * 2
    assert all(a.parent is not None and a.parent.span_id == server.context.span_id for a in (failed, served))
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "PROVIDER_UNAVAILABLE"
    assert served.status.status_code is StatusCode.UNSET
    sent = [r.headers["traceparent"] for r in emulators.completions("openai")]
    assert sent == [f"00-{CALLER_TRACE}-{format(a.context.span_id, '016x')}-01" for a in (failed, served)]


async def test_a_refused_call_has_an_error_span_naming_the_reason_and_no_provider_span(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Complete(llm_pb2.CompleteRequest(model="not-allowed", messages=user("hi")), timeout=10)

    (server,) = exporter.get_finished_spans()
    assert server.kind is SpanKind.SERVER
    assert server.status.status_code is StatusCode.ERROR
    assert dict(server.attributes or {})["error.type"] == "MODEL_NOT_ALLOWED"
    assert dict(server.attributes or {})["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver (the collector's service), keeping what it is sent."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.received = asyncio.Event()

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans += [span.name for span in scope.spans]
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_traces_are_exported_over_otlp_grpc_when_an_endpoint_is_configured(
    start_gateway: Callable[..., Any],
) -> None:
    receiver = _Receiver()
    collector = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)  # type: ignore[no-untyped-call]
    port = collector.add_insecure_port("127.0.0.1:0")
    await collector.start()
    try:
        app: App = await start_gateway(otel_exporter_otlp_endpoint=f"http://127.0.0.1:{port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("hi")), timeout=10
            )
        await app.stop(grace=None)  # flushes the batch of spans
        await receiver.received.wait()
    finally:
        await collector.stop(None)

    assert "llm.v1.LLMService/Complete" in receiver.spans
    assert f"chat {MODELS['openai']}" in receiver.spans
