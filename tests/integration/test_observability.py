"""Metrics scraped from the real /metrics endpoint and the canonical log line of each call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import grpc
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App, redactor_for
from server.observability.logging import RedactProcessor
from tests.conftest import MODELS, OPENAI_KEY, Emulators, make_settings
from tests.helpers import user

A2A = (("a2a-trace-id", "trace-obs"), ("a2a-source-agent", "planner"), ("a2a-session-id", "s-1"))


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_calls_tokens_and_refusals(start_gateway: Callable[..., Any]) -> None:
    app: App = await start_gateway(metrics_port=0)
    assert app.metrics_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("a b c")), timeout=10
        )
        async for _ in stub.Stream(
            llm_pb2.StreamRequest(model=MODELS["anthropic"], messages=user("a b")), timeout=10
        ):
            pass
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Complete(
                llm_pb2.CompleteRequest(model="gpt-4o", messages=user("hi")), metadata=A2A, timeout=10
            )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Complete(
                llm_pb2.CompleteRequest(model=MODELS["gemini"], messages=user("hi [[emulate: status=400]]")),
                timeout=10,
            )

    samples = await _scrape(app.metrics_port)

    openai = {"provider": "openai", "model": MODELS["openai"]}
    anthropic = {"provider": "anthropic", "model": MODELS["anthropic"]}
    gemini = {"provider": "gemini", "model": MODELS["gemini"]}
    assert _value(samples, "llm_requests_total", **openai, method="Complete", status="OK") == 1
    assert _value(samples, "llm_requests_total", **anthropic, method="Stream", status="OK") == 1
    assert _value(samples, "llm_requests_total", **gemini, method="Complete", status="INVALID_ARGUMENT") == 1
    assert _value(samples, "llm_errors_total", **gemini, error_type="provider_rejected_request") == 1
    assert _value(samples, "llm_tokens_total", **openai, token_type="prompt") == 3
    assert _value(samples, "llm_tokens_total", **openai, token_type="completion") == 5
    assert _value(samples, "llm_tokens_total", **anthropic, token_type="completion") == 4
    assert _value(samples, "llm_request_duration_seconds_count", **openai, method="Complete") == 1
    assert _value(samples, "llm_request_duration_seconds_sum", **openai, method="Complete") > 0
    assert _value(samples, "llm_time_to_first_token_seconds_count", **anthropic) == 1
    assert _value(samples, "llm_governance_violations_total", model="gpt-4o", source_agent="planner") == 1
    assert _value(samples, "llm_gateway_overhead_seconds_count", method="Complete") == 1
    assert _value(samples, "llm_gateway_overhead_seconds_count", method="Stream") == 1
    assert _value(samples, "llm_active_requests", provider="openai") == 0


async def test_retries_are_counted(start_gateway: Callable[..., Any]) -> None:
    app: App = await start_gateway(metrics_port=0)
    assert app.metrics_port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(
                model=MODELS["openai"], messages=user("hi [[emulate: status=503 times=2]]")
            ),
            timeout=10,
        )

    samples = await _scrape(app.metrics_port)

    assert _value(samples, "llm_retries_total", provider="openai", reason="provider_unavailable") == 2


async def test_each_call_logs_one_line_with_context_and_no_text_or_key(
    stub: llm_pb2_grpc.LLMServiceAsyncStub, emulators: Emulators
) -> None:
    redact = RedactProcessor(redactor_for(make_settings(emulators)))
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars, redact]) as logs:
        await stub.Complete(
            llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("secret prompt words")),
            metadata=A2A,
            timeout=10,
        )

    calls = [entry for entry in logs if entry["event"] == "llm.call"]
    assert len(calls) == 1
    line = calls[0]
    assert line["trace_id"] == "trace-obs"
    assert line["source_agent"] == "planner"
    assert line["session_id"] == "s-1"
    assert (line["method"], line["provider"], line["model"], line["status"]) == (
        "Complete",
        "openai",
        MODELS["openai"],
        "OK",
    )
    assert line["prompt_tokens"] == 3
    assert line["retries"] == 0
    assert "secret prompt" not in str(logs)
    assert OPENAI_KEY not in str(logs)


async def test_get_metrics_returns_totals_since_start(stub: llm_pb2_grpc.LLMServiceAsyncStub) -> None:
    await stub.Complete(llm_pb2.CompleteRequest(model=MODELS["openai"], messages=user("a b c")), timeout=10)
    await stub.Complete(llm_pb2.CompleteRequest(model=MODELS["gemini"], messages=user("a")), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Complete(llm_pb2.CompleteRequest(model="not-allowed", messages=user("hi")), timeout=10)

    response = await stub.GetMetrics(llm_pb2.GetMetricsRequest(), timeout=10)

    assert response.total_requests == 2
    assert response.total_tokens == (3 + 5) + (1 + 3)
    assert response.mean_latency_ms > 0
    assert response.governance_violations == 1
    providers = {p.provider: p for p in response.providers}
    assert (providers["openai"].requests, providers["openai"].tokens, providers["openai"].errors) == (1, 8, 0)
    assert (providers["gemini"].requests, providers["gemini"].tokens) == (1, 4)
