"""No key ever shows in a response, a log line or a metric — even when a provider echoes it back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import grpc
import pytest

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App, build_providers, check_settings, redactor_for
from server.observability.redact import Redactor
from tests.conftest import (
    ANTHROPIC_KEY,
    GEMINI_KEY,
    MODELS,
    OPENAI_KEY,
    Emulators,
    RenderedLogs,
    make_settings,
)
from tests.helpers import user

KEYS = (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY)
ERROR_PATHS = [
    "status=401 echo_key=1",
    "status=403 echo_key=1",
    "status=400 echo_key=1",
    "status=429 echo_key=1 retry_after=0",
    "status=500 echo_key=1",
    "drop_after=1",
    "error_after=1",
]


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_keys_never_reach_a_response_a_log_line_or_a_metric(
    start_gateway: Callable[..., Any],
    emulators: Emulators,
    provider: str,
    rendered_logs: Callable[[Redactor], RenderedLogs],
) -> None:
    app: App = await start_gateway(metrics_port=0, llm_max_retries=0)
    # The real logging chain of `llm-gateway serve`, rendered to JSON as in production.
    read_logs = rendered_logs(redactor_for(make_settings(emulators)))
    seen: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        for fault in ERROR_PATHS:
            text = f"hi [[emulate: {fault}]]"
            for request in (
                stub.Complete(
                    llm_pb2.CompleteRequest(model=MODELS[provider], messages=user(text)), timeout=10
                ),
                stub.Stream(llm_pb2.StreamRequest(model=MODELS[provider], messages=user(text)), timeout=10),
            ):
                try:
                    if isinstance(request, grpc.aio.UnaryUnaryCall):
                        seen.append(str(await request))
                    else:
                        seen += [str(event) async for event in request]
                except grpc.aio.AioRpcError as error:
                    seen += [
                        str(error.details()),
                        str(error.trailing_metadata()),
                        str(error.debug_error_string()),
                    ]
        health = await stub.CheckHealth(llm_pb2.CheckHealthRequest(), timeout=10)
        seen.append(str(health))
    assert app.metrics_port is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{app.metrics_port}/metrics") as r,
    ):
        seen.append(await r.text())
    logs = read_logs()
    assert '"event": "llm.call"' in logs  # the call lines were rendered
    seen.append(logs)

    everything = "\n".join(seen)
    assert "emulated failure" in everything  # the error paths ran
    assert "[REDACTED]" in everything  # and the echoed keys were scrubbed, not absent by luck
    for key in KEYS:
        assert key not in everything
        assert key[8:] not in everything  # nor a recognisable part of it


def test_settings_and_provider_objects_hide_their_keys(emulators: Emulators) -> None:
    settings = make_settings(emulators)
    providers = build_providers(settings, check_settings(settings))

    shown = repr(settings) + str(settings) + "".join(repr(p) + str(p) for p in providers.values())

    assert not any(key in shown for key in KEYS)
