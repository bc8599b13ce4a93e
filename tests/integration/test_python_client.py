"""The Python client and the `llm-grpc` CLI against the real server (emulators behind it)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from llm_grpc_client import (
    AsyncLLMClient,
    DeadlineExceeded,
    FinishReason,
    InvalidArgument,
    LLMClient,
    ModelNotAllowed,
    ProviderError,
    RateLimited,
    agents,
    cli,
)

from llm_grpc.v1 import llm_pb2
from server.app import App
from tests.conftest import MODELS, SAMPLING_MODELS, Emulators

CLI = str(Path(sys.executable).with_name("llm-grpc"))
SECRET = "tls-and-token-test-secret-0123456789-abcdefghijk"


@pytest.fixture
def target(gateway: App) -> str:
    return f"127.0.0.1:{gateway.port}"


async def test_complete_and_stream_with_a2a_context(target: str, emulators: Emulators) -> None:
    async with AsyncLLMClient(target, source_agent="py-agent", session_id="py-session") as client:
        reply = await client.complete("hello", model=MODELS["gemini"], trace_id="py-trace")
        stream = client.stream("one two", model=MODELS["anthropic"], system="be brief")
        deltas = [delta async for delta in stream]

    assert reply.content == "emulator reply: hello"
    assert reply.trace_id == "py-trace"
    assert "".join(deltas) == "emulator reply: one two"
    assert stream.done is not None
    assert stream.done.usage.completion_tokens == 4
    headers = emulators.completions("gemini")[-1].headers
    assert (headers["x-trace-id"], headers["x-source-agent"], headers["x-session-id"]) == (
        "py-trace",
        "py-agent",
        "py-session",
    )


async def test_typed_errors_carry_the_rich_details(target: str) -> None:
    async with AsyncLLMClient(target) as client:
        with pytest.raises(ModelNotAllowed) as refused:
            await client.complete("hi", model="gpt-4o")
        with pytest.raises(RateLimited) as limited:
            await client.complete("hi [[emulate: status=429 retry_after=90]]", model=MODELS["openai"])
        with pytest.raises(InvalidArgument) as invalid:
            await client.complete("hi", model=MODELS["openai"], temperature=9)

    assert "gpt-5.4-mini" in refused.value.allowed_models
    assert limited.value.retry_delay == 90  # beyond the 60 s budget: refused at once, not waited out
    assert [field for field, _ in invalid.value.field_violations] == ["temperature"]


async def test_refused_provider_key_is_a_provider_error(target: str) -> None:
    async with AsyncLLMClient(target) as client:
        with pytest.raises(ProviderError) as refused:
            await client.complete("hi [[emulate: fail=auth]]", model=MODELS["anthropic"])

    assert refused.value.reason == "PROVIDER_AUTH_FAILED"


async def test_deadline_expiry_is_a_typed_error(target: str) -> None:
    async with AsyncLLMClient(target, timeout=0.3) as client:
        with pytest.raises(DeadlineExceeded):
            await client.complete("hi [[emulate: token_delay_ms=300]]", model=MODELS["openai"])


async def test_blocking_client_completes_and_streams(target: str) -> None:
    def run() -> tuple[str, list[str], int]:
        with LLMClient(target, source_agent="sync") as client:
            reply = client.complete("hi", model=MODELS["openai"])
            deltas = list(client.stream("a b", model=MODELS["gemini"]))
            assert client.last_done is not None
            return reply.content, deltas, client.last_done.usage.total_tokens

    content, deltas, total = await asyncio.to_thread(run)

    assert content == "emulator reply: hi"
    assert "".join(deltas) == "emulator reply: a b"
    assert total == 2 + 4


async def _cli(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_streams_tokens_then_a_usage_line(target: str) -> None:
    code, out, err = await _cli("--target", target, "stream", "tell me", "--model", MODELS["anthropic"])

    assert code == 0
    assert out.strip() == "emulator reply: tell me"
    assert "prompt=2 completion=4" in err


async def test_cli_reads_stdin_and_prints_json(target: str) -> None:
    code, out, _ = await _cli("--target", target, "--json", "complete", stdin=b"from stdin")

    assert code == 0
    assert json.loads(out)["content"] == "emulator reply: from stdin"


async def test_cli_takes_global_options_after_the_subcommand(target: str) -> None:
    code, out, err = await _cli("complete", "--json", "--target", target, "--source-agent", "late", "hi")

    assert code == 0, err
    assert json.loads(out)["content"] == "emulator reply: hi"


async def test_cli_strips_the_trailing_newline_of_stdin(target: str, emulators: Emulators) -> None:
    code, _, err = await _cli("--target", target, "complete", "--model", MODELS["openai"], stdin=b"line\n")

    assert code == 0, err
    assert emulators.completions("openai")[-1].body["input"][-1]["content"] == "line"  # the Responses API


COMPLETE_JSON_FIELDS = {
    "content", "usage", "latency_ms", "provider", "model", "trace_id", "finish_reason", "cost_usd",
    "served_model", "tool_calls", "reasoning", "structured_output", "response_id",
}  # fmt: skip
DONE_JSON_FIELDS = COMPLETE_JSON_FIELDS - {"content"} | {"time_to_first_token_ms"}
USAGE_JSON_FIELDS = {
    "prompt_tokens", "completion_tokens", "total_tokens", "usage_estimated", "cached_input_tokens",
    "cache_write_tokens", "reasoning_tokens",
}  # fmt: skip


async def test_cli_json_is_snake_case_with_every_field_and_finish_reasons_by_name(target: str) -> None:
    _, out, _ = await _cli("--json", "--target", target, "complete", "a b", "--model", MODELS["gemini"])
    _, streamed, _ = await _cli("--json", "--target", target, "stream", "a b", "--model", MODELS["openai"])
    reply, events = json.loads(out), [json.loads(line) for line in streamed.splitlines()]

    assert set(reply) == COMPLETE_JSON_FIELDS
    assert set(reply["usage"]) == USAGE_JSON_FIELDS
    assert reply["finish_reason"] == "STOP"
    assert reply["structured_output"] is None  # no JSON asked for: no verdict, not a false one
    assert "".join(e["delta"] for e in events[:-1]) == "emulator reply: a b"
    assert set(events[-1]["done"]) == DONE_JSON_FIELDS
    assert events[-1]["done"]["finish_reason"] == "STOP"
    assert isinstance(events[-1]["done"]["usage"]["total_tokens"], int)


async def test_cli_prints_the_finish_reason_by_name(target: str) -> None:
    # gpt-4.1-mini (Chat Completions): the Responses API takes max_tokens from 16 up.
    model = SAMPLING_MODELS["openai"]
    code, _, err = await _cli("--target", target, "complete", "a b c", "--model", model, "--max-tokens", "2")

    assert code == 0
    assert "] LENGTH prompt=3" in err


async def test_cli_selects_a_model_and_shows_metrics(target: str) -> None:
    await _cli("--target", target, "complete", "hi", "--model", MODELS["anthropic"])

    _, selected, _ = await _cli("select", "--tier", "fast", "--json", "--target", target)
    _, text, _ = await _cli("select", "--complexity", "complex", "--target", target)
    _, metrics, _ = await _cli("metrics", "--json", "--target", target)

    assert json.loads(selected)["tier"] == "FAST"
    assert "PREMIUM" in text
    totals = json.loads(metrics)
    assert totals["total_requests"] >= 1
    assert isinstance(totals["total_tokens"], int)
    assert "anthropic" in {p["provider"] for p in totals["providers"]}


async def test_cli_version_and_usage_errors_exit_0_and_2() -> None:
    version, out, _ = await _cli("--version")
    usage, _, err = await _cli("complete", "hi", "--cert", "client.pem")

    assert (version, out.split()[0]) == (0, "llm-grpc")
    assert usage == 2
    assert "--cert and --key" in err


async def test_client_selects_a_model_and_reads_metrics(target: str) -> None:
    async with AsyncLLMClient(target) as client:
        await client.complete("hi", model=MODELS["openai"])
        by_tier = await client.select_model("premium")
        by_complexity = await client.select_model(complexity="simple")
        totals = await client.get_metrics()

    def blocking() -> tuple[str, int]:
        with LLMClient(target) as client:
            return client.select_model(tier="balanced").model, client.get_metrics().total_requests

    balanced, requests = await asyncio.to_thread(blocking)

    assert by_tier.tier == llm_pb2.TIER_PREMIUM
    assert by_complexity.tier == llm_pb2.TIER_FAST
    assert totals.total_requests >= 1
    assert balanced
    assert requests >= 1


async def test_client_refuses_an_unknown_tier_before_calling(target: str) -> None:
    async with AsyncLLMClient(target) as client:
        with pytest.raises(ValueError, match="expected one of fast, balanced, premium"):
            await client.select_model("huge")


async def test_client_and_cli_send_a_token_over_tls(
    start_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"llm_tls_cert_file": tmp_path / "server.pem", "llm_tls_key_file": tmp_path / "server.key"}
    cert.cert_chain_pems[0].write_to_path(str(files["llm_tls_cert_file"]))
    cert.private_key_pem.write_to_path(str(files["llm_tls_key_file"]))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    app: App = await start_gateway(
        llm_allow_plaintext=False, llm_auth_disabled=False, llm_jwt_hs256_secret=SECRET, **files
    )
    token = jwt.encode({"sub": "tls-agent", "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
    target = f"localhost:{app.port}"

    async with AsyncLLMClient(target, root_certificates=ca.cert_pem.bytes(), token=token) as client:
        reply = await client.complete("over tls")
    served, out, err = await _cli("complete", "hi", "--target", target, "--ca", str(tmp_path / "ca.pem"),
                                  "--token", token)  # fmt: skip
    refused, _, refusal = await _cli("complete", "hi", "--target", target, "--ca", str(tmp_path / "ca.pem"))

    assert reply.content == "emulator reply: over tls"
    assert (served, out.strip()) == (0, "emulator reply: hi"), err
    assert refused == 10 + 16  # UNAUTHENTICATED
    assert "UNAUTHENTICATED" in refusal


async def test_cli_exit_code_follows_the_status(target: str) -> None:
    code, _, err = await _cli("--target", target, "complete", "hi", "--model", "gpt-4o")

    assert code == 10 + 7  # PERMISSION_DENIED
    assert "PERMISSION_DENIED" in err


async def test_client_asks_for_a_json_schema_and_reads_the_gateways_verdict(target: str) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    async with AsyncLLMClient(target) as client:
        reply = await client.complete(
            'age? [[emulate: reply=\'{"age":"old"}\']]',
            model=MODELS["openai"],
            response_format=agents.json_schema(schema, name="person"),
        )

    assert not reply.structured_output.valid
    assert reply.structured_output.error == "$.age: 'old' is not of type 'integer'"


async def test_client_tool_settings_reach_the_gateway_and_its_refusals_come_back(target: str) -> None:
    async with AsyncLLMClient(target) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.complete(
                "hi", model=MODELS["openai"], tools=[agents.tool("lookup")], tool_choice="get_time"
            )

    assert "tool_choice.tool_name" in str(caught.value)


async def test_cli_json_schema_prints_the_answer_and_the_verdict(target: str, tmp_path: Path) -> None:
    schema = tmp_path / "person.schema.json"
    schema.write_text('{"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}')

    code, out, err = await _cli(
        "--target", target, "complete", "age? [[emulate: reply={}]]", "--json-schema", str(schema)
    )

    assert code == 0
    assert out.strip() == "{}"
    assert "[structured output INVALID: $: 'age' is a required property]" in err


async def test_cli_attaches_an_image_file(target: str, emulators: Emulators, tmp_path: Path) -> None:
    png = tmp_path / "dot.png"
    png.write_bytes(bytes.fromhex("89504e470d0a1a0a") + b"\0" * 16)

    code, out, _ = await _cli(
        "--target", target, "complete", "what is this?", "--image", str(png), "--model", MODELS["anthropic"]
    )

    assert code == 0
    assert out.strip()
    body = json.dumps(emulators.completions("anthropic")[-1].body)
    assert '"media_type": "image/png"' in body


async def test_cli_health_exits_1_when_the_gateway_is_not_serving(
    start_gateway: Callable[..., Any], refusing_url: str
) -> None:
    app: App = await start_gateway(anthropic_base_url=refusing_url)
    await app.health_monitor.probe_all()

    code, out, _ = await _cli("health", "--target", f"127.0.0.1:{app.port}")
    json_code, as_json, _ = await _cli("health", "--json", "--target", f"127.0.0.1:{app.port}")

    assert out.splitlines()[0] == "gateway: NOT_SERVING"
    assert code == json_code == 1
    assert json.loads(as_json)["status"] == "NOT_SERVING"


async def test_cli_health_exits_0_when_serving(gateway: App) -> None:
    await gateway.health_monitor.probe_all()

    code, out, _ = await _cli("health", "--target", f"127.0.0.1:{gateway.port}")

    assert (code, out.splitlines()[0]) == (0, "gateway: SERVING")


async def test_cli_output_into_a_closed_pipe_ends_quietly(target: str) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line, as `| head -0` leaves it
    try:
        process = await asyncio.create_subprocess_exec(
            CLI, "--target", target, "models", "--json", stdout=write, stderr=asyncio.subprocess.PIPE
        )
    finally:
        os.close(write)
    _, err = await process.communicate()

    assert err.decode() == ""
    assert process.returncode == 0


async def test_cli_costs_print_in_fixed_decimals(target: str) -> None:
    _, out, _ = await _cli("--json", "--target", target, "complete", "hi", "--model", MODELS["gemini"])
    _, metrics, _ = await _cli("metrics", "--json", "--target", target)
    cost = re.search(r'"cost_usd": ([^,}]+)', out)
    total = re.search(r'"total_cost_usd": ([^,}]+)', metrics)

    assert cost is not None
    assert total is not None
    assert 0 < float(cost[1]) < 0.001  # small enough that repr() would write it as 1.2e-05
    assert re.fullmatch(r"0\.\d+", cost[1]), cost[1]
    assert re.fullmatch(r"0\.\d+", total[1]), total[1]


def test_cli_numbers_are_fixed_decimals_that_parse_back() -> None:
    value = 1.7749999999999998e-05

    text = cli.dumps({"cost_usd": value, "n": 3, "ok": True, "nan": math.nan, "list": [0.5, None]})

    assert text == '{"cost_usd": 0.00001775, "n": 3, "ok": true, "nan": NaN, "list": [0.5, null]}'
    assert json.loads(text)["cost_usd"] == pytest.approx(value)
    assert cli._amount(value, money=True) == "$0.000018"  # `quota`: dollars to the micro-dollar
    assert cli._amount(3.0, money=False) == "3"


async def test_replies_print_readably_and_stay_protobuf_messages(target: str) -> None:
    async with AsyncLLMClient(target) as client:
        reply = await client.complete("a b c", model=SAMPLING_MODELS["openai"], max_tokens=2)
        stream = client.stream("hi", model=MODELS["anthropic"])
        async for _ in stream:
            pass

    assert stream.done is not None
    assert str(FinishReason(reply.finish_reason)) == "LENGTH"
    assert int(FinishReason(reply.finish_reason)) == llm_pb2.FINISH_REASON_LENGTH
    assert str(reply.usage) == "prompt=3 completion=2 total=5 tokens"
    assert str(reply).startswith(
        f"LENGTH from openai/{SAMPLING_MODELS['openai']}: prompt=3 completion=2 total=5 tokens, $"
    )
    assert str(stream.done).startswith(f"STOP from anthropic/{MODELS['anthropic']}: ")
    assert isinstance(reply, llm_pb2.CompleteResponse)  # the same message: fields, repr, bytes unchanged
    assert repr(reply.usage) == "prompt_tokens: 3\ncompletion_tokens: 2\ntotal_tokens: 5\n"
