"""Caller rate limits and USD budgets through gRPC, on the in-process store and on a real redis-server.

The same behaviours run against both stores; what only a shared store can do (several replicas, Redis
going away and coming back) runs against Redis. Clocks are injected, never slept on.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from llm_grpc_client import AsyncLLMClient, QuotaExceeded
from pydantic import SecretStr

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App, ConfigError, check_settings
from server.config import DEFAULT_CATALOGUE, Settings, load_catalogue
from server.core.limits import Check, Refusal, StoreUnavailable, prompt_token_bound
from server.core.types import Usage
from server.limits.redis_store import RedisLimitStore
from tests.conftest import MODELS, Emulators
from tests.helpers import details_of, user

MODEL = MODELS["openai"]
SLOW = "a b c d e f g h i j [[emulate: token_delay_ms=1000]]"
"""A stream that stays open far longer than any test needs it (each test cancels it)."""


class FakeClock:
    """Wall-clock seconds that move only when a test says so (budgets use UTC days: start at noon)."""

    def __init__(self) -> None:
        self.now = float(time.time() // 86400 * 86400 + 43200)

    def __call__(self) -> float:
        return self.now


class RedisServer:
    """A real redis-server on a Unix socket of its own (no TCP port to collide with), no persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: `make test` installs it (apt package redis-server)")
        self._binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix="llm-redis-"))
        self.socket = self._dir / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [
                *(self._binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700"),
                *("--save", "", "--appendonly", "no", "--dir", str(self._dir)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        for line in self._process.stdout:  # blocks until redis says it is ready: no polling
            if "ready to accept connections" in line.lower():  # 7.0: "now ready to ...", 7.2+: "Ready to ..."
                return
        pytest.fail("redis-server exited before it was ready")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.communicate(timeout=30)
            self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings for the limit store under test: in process, or a fresh redis-server."""
    if request.param == "memory":
        yield {}
        return
    server = RedisServer()
    server.start()
    yield {"llm_redis_url": server.url}
    server.close()


def _policy(tmp_path: Path, policy: dict[str, Any]) -> Path:
    path = tmp_path / "limits.json"
    path.write_text(json.dumps(policy))
    return path


@pytest.fixture
def limited(start_gateway: Callable[..., Any], store: dict[str, Any], tmp_path: Path) -> Callable[..., Any]:
    """Start a gateway with this limits policy on the store under test."""

    async def start(policy: dict[str, Any], clock: Callable[[], float] = time.time, **settings: Any) -> App:
        app: App = await start_gateway(
            clock=clock, llm_limits_file=_policy(tmp_path, policy), **store, **settings
        )
        return app

    return start


async def _complete(app: App, agent: str, max_tokens: int | None = 16, text: str = "hi") -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        request = llm_pb2.CompleteRequest(model=MODEL, messages=user(text))
        if max_tokens is not None:
            request.max_tokens = max_tokens
        return await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            request, metadata=(("a2a-source-agent", agent),), timeout=10
        )


async def _refused(app: App, agent: str, max_tokens: int | None = 16) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _complete(app, agent, max_tokens)
    return caught.value


def _quota_failure(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            failure = error_details_pb2.QuotaFailure()
            detail.Unpack(failure)
            violations += [(v.subject, v.description) for v in failure.violations]
    return violations


async def _quota(app: App, agent: str, model: str = "") -> llm_pb2.GetQuotaResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        response: llm_pb2.GetQuotaResponse = await llm_pb2_grpc.LLMServiceStub(channel).GetQuota(
            llm_pb2.GetQuotaRequest(model=model), metadata=(("a2a-source-agent", agent),), timeout=10
        )
        return response


# --- the same behaviour on both stores ---------------------------------------------------------------


async def test_requests_per_minute_refuses_the_next_call_with_quota_failure_and_retry_info(
    limited: Callable[..., Any],
) -> None:
    app: App = await limited({"default": {"requests_per_minute": 3}}, clock=FakeClock())

    served = [await _complete(app, "agent-a") for _ in range(3)]
    error = await _refused(app, "agent-a")
    other = await _complete(app, "agent-b")

    details = details_of(error)
    assert len(served) == 3
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "RATE_LIMIT_EXCEEDED"
    assert details.metadata["identity"] == "agent-a"
    assert details.metadata["limit"] == "requests_per_minute"
    assert _quota_failure(error) == [("agent-a", "requests_per_minute of 3 for scope all")]
    assert details.retry_delay == pytest.approx(20.0)  # one request back every 60 s / 3
    assert other.content == "emulator reply: hi"


async def test_the_bucket_refills_with_time(limited: Callable[..., Any]) -> None:
    clock = FakeClock()
    app: App = await limited({"default": {"requests_per_minute": 2}}, clock=clock)
    for _ in range(2):
        await _complete(app, "agent-a")
    await _refused(app, "agent-a")

    clock.now += 30  # one request's worth

    assert (await _complete(app, "agent-a")).content == "emulator reply: hi"
    assert details_of(await _refused(app, "agent-a")).reason == "RATE_LIMIT_EXCEEDED"


async def test_a_per_model_limit_applies_only_to_that_model(limited: Callable[..., Any]) -> None:
    app: App = await limited({"default": {"models": {MODEL: {"requests_per_minute": 1}}}}, clock=FakeClock())
    await _complete(app, "agent-a")

    error = details_of(await _refused(app, "agent-a"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        other_model = await llm_pb2_grpc.LLMServiceStub(channel).Complete(
            llm_pb2.CompleteRequest(model=MODELS["gemini"], messages=user("hi")),
            metadata=(("a2a-source-agent", "agent-a"),),
            timeout=10,
        )

    assert error.metadata["scope"] == f"model:{MODEL}"
    assert other_model.content == "emulator reply: hi"


async def test_tokens_are_reserved_at_the_worst_case_and_settled_to_the_real_usage(
    limited: Callable[..., Any],
) -> None:
    app: App = await limited({"default": {"tokens_per_minute": 1000}}, clock=FakeClock())

    # Each call reserves ~900 tokens (max_tokens 800 + a bound of the prompt) and uses a handful: only
    # settlement lets five fit in a bucket of 1000.
    sequential = [await _complete(app, "agent-a", max_tokens=800) for _ in range(5)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        request = llm_pb2.StreamRequest(model=MODEL, messages=user(SLOW), max_tokens=800)
        held = stub.Stream(request, metadata=(("a2a-source-agent", "agent-a"),), timeout=10)
        await held.read()  # the first delta: its reservation is held while it streams
        error = await _refused(app, "agent-a", max_tokens=800)
        held.cancel()

    assert len(sequential) == 5
    assert details_of(error).reason == "TOKEN_RATE_LIMIT_EXCEEDED"


async def test_a_call_larger_than_the_limit_says_to_lower_max_tokens(limited: Callable[..., Any]) -> None:
    app: App = await limited({"default": {"tokens_per_minute": 100}}, clock=FakeClock())

    details = details_of(await _refused(app, "agent-a", max_tokens=500))

    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "lower max_tokens" in details.message


async def test_a_call_larger_than_the_whole_budget_is_not_told_to_wait(limited: Callable[..., Any]) -> None:
    budget_usd = _worst_case_usd(500) / 4  # nothing spent yet, but one call's worst case is 4x the budget
    app: App = await limited({"default": {"usd_per_day": budget_usd}}, clock=FakeClock())

    details = details_of(await _refused(app, "agent-a", max_tokens=500))

    assert details.reason == "BUDGET_EXCEEDED"
    assert "used up" not in details.message
    worst = re.search(r"worst case \(\$(\d+\.\d+)\)", details.message)
    assert worst is not None, details.message
    assert float(worst[1]) == pytest.approx(_worst_case_usd(500), abs=2e-6)
    assert "is more than the whole limit, so waiting cannot help: lower max_tokens" in details.message
    assert details.retry_delay is None  # no RetryInfo: retrying later would be refused the same way


async def test_a_budget_refusal_shows_the_worst_case_against_what_is_left_and_when_it_fits(
    limited: Callable[..., Any],
) -> None:
    budget_usd = 1.5 * _worst_case_usd(300)
    app: App = await limited({"default": {"usd_per_day": budget_usd}}, clock=FakeClock())
    spent = (await _complete(app, "agent-a", max_tokens=300)).cost_usd
    # The smallest max_tokens whose worst case no longer fits what is left, though it fits the budget.
    max_tokens = next(m for m in range(300, 10_000) if _worst_case_usd(m) > budget_usd - spent + 1e-6)
    assert _worst_case_usd(max_tokens) <= budget_usd

    details = details_of(await _refused(app, "agent-a", max_tokens=max_tokens))
    (budget,) = [q for q in (await _quota(app, "agent-a")).quotas if q.kind == llm_pb2.QUOTA_KIND_USD_PER_DAY]

    worst, left = re.findall(r"\$(\d+\.\d+)", details.message)[1:3]
    assert "used up" not in details.message
    assert float(left) == pytest.approx(budget.remaining, abs=1e-6)
    assert float(worst) == pytest.approx(_worst_case_usd(max_tokens), abs=2e-6)
    assert float(worst) > float(left)
    assert "it fits when the UTC day ends, in 43200.0s, or sooner with a lower max_tokens" in details.message
    assert details.retry_delay == pytest.approx(43200.0, abs=1)


async def test_a_token_rate_refusal_shows_the_worst_case_against_what_is_left(
    limited: Callable[..., Any],
) -> None:
    app: App = await limited({"default": {"tokens_per_minute": 1000}}, clock=FakeClock())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        request = llm_pb2.StreamRequest(model=MODEL, messages=user(SLOW), max_tokens=800)
        held = stub.Stream(request, metadata=(("a2a-source-agent", "agent-a"),), timeout=10)
        await held.read()  # its reservation (~900 tokens) is held while it streams
        details = details_of(await _refused(app, "agent-a", max_tokens=800))
        held.cancel()

    match = re.search(
        r"worst case \((\d+) tokens\) is more than the (\d+) tokens left; it fits in", details.message
    )
    assert match is not None, details.message
    assert int(match[1]) > int(match[2])
    assert details.retry_delay is not None


async def test_concurrent_calls_are_capped_per_identity_and_freed_when_calls_end(
    limited: Callable[..., Any],
) -> None:
    app: App = await limited({"default": {"concurrent": 2}})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        slow = llm_pb2.StreamRequest(model=MODEL, messages=user(SLOW))
        held = [stub.Stream(slow, metadata=(("a2a-source-agent", "agent-a"),), timeout=30) for _ in range(2)]
        for call in held:
            await call.read()
        refused = details_of(await _refused(app, "agent-a"))
        other = await _complete(app, "agent-b")
        for call in held:
            call.cancel()
        await _settled(app, "agent-a", reserved=0)
        after = await _complete(app, "agent-a")

    assert refused.reason == "CONCURRENCY_LIMIT_EXCEEDED"
    assert other.content == after.content == "emulator reply: hi"


async def _settled(app: App, agent: str, reserved: int) -> None:
    """Wait until the gateway has settled every reservation (the cancelled calls' included): on the
    limiter's own signal, then its count of calls in flight must be `reserved`."""
    await asyncio.wait_for(app.limiter.idle(), 30)
    quota = await _quota(app, agent)
    in_flight = [q.used for q in quota.quotas if q.kind == llm_pb2.QUOTA_KIND_CONCURRENT_CALLS]
    assert in_flight == [reserved]


def _worst_case_usd(max_tokens: int, text: str = "hi") -> float:
    """What the gateway reserves for one call to MODEL: an upper bound of the prompt plus max_tokens."""
    prompt = prompt_token_bound([text], 1)
    info = load_catalogue(DEFAULT_CATALOGUE).get(MODEL)
    return info.cost(Usage(prompt_tokens=prompt, completion_tokens=max_tokens))


async def test_a_usd_budget_is_never_exceeded_and_refusals_wait_for_the_next_utc_day(
    limited: Callable[..., Any],
) -> None:
    clock = FakeClock()
    budget_usd = 1.5 * _worst_case_usd(300)  # room for one worst case, and then for the real costs
    app: App = await limited({"default": {"usd_per_day": budget_usd}}, clock=clock)
    spent, served = 0.0, 0
    refused = None
    for _ in range(500):
        try:
            spent += (await _complete(app, "agent-a", max_tokens=300)).cost_usd
            served += 1
        except grpc.aio.AioRpcError as error:
            refused = details_of(error)
            break
    quota = await _quota(app, "agent-a")

    assert refused is not None
    assert refused.reason == "BUDGET_EXCEEDED"
    assert refused.retry_delay == pytest.approx(43200.0, abs=1)  # FakeClock starts at noon UTC
    assert 0 < spent <= budget_usd
    (budget,) = [q for q in quota.quotas if q.kind == llm_pb2.QUOTA_KIND_USD_PER_DAY]
    assert budget.limit == pytest.approx(budget_usd, abs=1e-6)
    assert budget.used == pytest.approx(spent, abs=served * 1e-6)  # each cost rounded up to a micro-dollar
    assert budget.remaining == pytest.approx(budget.limit - budget.used)


async def test_get_quota_tells_the_caller_its_limits_use_and_what_is_left(
    limited: Callable[..., Any],
) -> None:
    clock = FakeClock()
    policy = {
        "default": {
            "requests_per_minute": 10,
            "concurrent": 4,
            "usd_per_month": 5.0,
            "models": {MODEL: {"tokens_per_minute": 10000}},
        }
    }
    app: App = await limited(policy, clock=clock)
    await _complete(app, "agent-a")
    await _complete(app, "agent-a")

    everything = await _quota(app, "agent-a")
    other_model = await _quota(app, "agent-a", MODELS["gemini"])

    quotas = {(q.kind, q.scope): q for q in everything.quotas}
    assert everything.identity == "agent-a"
    assert set(quotas) == {
        (llm_pb2.QUOTA_KIND_REQUESTS_PER_MINUTE, "all"),
        (llm_pb2.QUOTA_KIND_CONCURRENT_CALLS, "all"),
        (llm_pb2.QUOTA_KIND_USD_PER_MONTH, "all"),
        (llm_pb2.QUOTA_KIND_TOKENS_PER_MINUTE, f"model:{MODEL}"),
    }
    rpm = quotas[(llm_pb2.QUOTA_KIND_REQUESTS_PER_MINUTE, "all")]
    assert (rpm.limit, rpm.used, rpm.remaining) == (10, 2, 8)
    assert rpm.reset_time.ToSeconds() == int(clock.now + 12)
    assert quotas[(llm_pb2.QUOTA_KIND_CONCURRENT_CALLS, "all")].used == 0
    assert not quotas[(llm_pb2.QUOTA_KIND_CONCURRENT_CALLS, "all")].HasField("reset_time")
    assert {q.scope for q in other_model.quotas} == {"all"}


async def test_roles_and_identities_override_the_defaults(
    limited: Callable[..., Any], tmp_path: Path
) -> None:
    secret = "limits-suite-hs256-secret-0123456789abcdef"
    policy = {
        "default": {"requests_per_minute": 1},
        "roles": {"batch": {"requests_per_minute": 3}},
        "identities": {"vip-agent": {"requests_per_minute": 5}},
    }
    app: App = await limited(policy, clock=FakeClock(), llm_auth_disabled=False, llm_jwt_hs256_secret=secret)

    async def served(subject: str, roles: list[str]) -> int:
        token = jwt.encode({"sub": subject, "exp": int(time.time()) + 300, "roles": roles}, secret)
        count = 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = llm_pb2_grpc.LLMServiceStub(channel)
            for _ in range(10):
                try:
                    await stub.Complete(
                        llm_pb2.CompleteRequest(model=MODEL, messages=user("hi")),
                        metadata=(("authorization", f"Bearer {token}"),),
                        timeout=10,
                    )
                except grpc.aio.AioRpcError:
                    return count
                count += 1
        return count

    assert await served("plain-agent", []) == 1
    assert await served("batch-agent", ["batch"]) == 3
    assert await served("vip-agent", ["batch"]) == 5


async def test_refusals_and_budgets_are_in_the_metrics(limited: Callable[..., Any]) -> None:
    app: App = await limited({"default": {"requests_per_minute": 1, "usd_per_day": 1.0}}, clock=FakeClock())
    reply = await _complete(app, "agent-a")
    await _refused(app, "agent-a")

    registry = app.metrics.registry
    refusals = registry.get_sample_value(
        "llm_limit_refusals_total", {"limit": "requests_per_minute", "scope": "all"}
    )
    used = registry.get_sample_value("llm_budget_used_usd", {"source_agent": "agent-a", "period": "day"})
    remaining = registry.get_sample_value(
        "llm_budget_remaining_usd", {"source_agent": "agent-a", "period": "day"}
    )

    assert refusals == 1
    assert used is not None
    assert used == pytest.approx(reply.cost_usd, abs=2e-6)
    assert remaining == pytest.approx(1.0 - used)


# --- several replicas on one Redis -------------------------------------------------------------------


@pytest.fixture
async def replicas(
    start_gateway: Callable[..., Any], redis_server: RedisServer, tmp_path: Path
) -> Callable[..., Any]:
    """Start three gateways sharing one Redis and one clock."""

    async def start(policy: dict[str, Any], clock: Callable[[], float], **settings: Any) -> list[App]:
        path = _policy(tmp_path, policy)
        # A generous Redis timeout: under a loaded machine (two test workers, 200 concurrent calls in one
        # process) the default 0.25 s can pass and a call fails closed, which is not what these test.
        settings.setdefault("llm_redis_timeout", 5.0)
        return [
            await start_gateway(clock=clock, llm_limits_file=path, llm_redis_url=redis_server.url, **settings)
            for _ in range(3)
        ]

    return start


async def _burst(
    apps: list[App], callers: int, agent: str, max_tokens: int = 16
) -> tuple[int, float, set[str]]:
    """`callers` concurrent calls spread over the replicas: how many were served, their cost, the
    reasons of the refusals."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") for app in apps]
    stubs = [llm_pb2_grpc.LLMServiceStub(channel) for channel in channels]

    async def one(index: int) -> llm_pb2.CompleteResponse | str:
        try:
            return await stubs[index % len(stubs)].Complete(
                llm_pb2.CompleteRequest(model=MODEL, messages=user("hi"), max_tokens=max_tokens),
                metadata=(("a2a-source-agent", agent),),
                timeout=30,
            )
        except grpc.aio.AioRpcError as error:
            return details_of(error).reason

    results = await asyncio.gather(*(one(i) for i in range(callers)))
    for channel in channels:
        await channel.close(None)
    served = [r for r in results if isinstance(r, llm_pb2.CompleteResponse)]
    return len(served), sum(r.cost_usd for r in served), {r for r in results if isinstance(r, str)}


async def test_three_replicas_on_one_redis_admit_the_configured_rate_together(
    replicas: Callable[..., Any],
) -> None:
    clock = FakeClock()
    apps = await replicas({"default": {"requests_per_minute": 100}}, clock)

    first, _, reasons = await _burst(apps, 200, "agent-a")
    clock.now += 30
    second, _, _ = await _burst(apps, 200, "agent-a")

    # A bucket of 100 refilled at 100 per minute: 100 at once, then 50 in the next 30 s.
    assert abs(first - 100) <= 2
    assert abs(second - 50) <= 1
    assert reasons == {"RATE_LIMIT_EXCEEDED"}


async def test_three_replicas_never_exceed_a_usd_budget_under_200_concurrent_callers(
    replicas: Callable[..., Any],
) -> None:
    budget = 12 * _worst_case_usd(16)
    apps = await replicas({"default": {"usd_per_day": budget}}, FakeClock())

    # max_tokens 16 (the least the Responses API takes; the reply is 3): each call's worst case is close
    # to what it really costs, so the budget, not the reservations' slack, is what stops the callers.
    served, cost, reasons = await _burst(apps, 200, "agent-a", max_tokens=16)
    quota = await _quota(apps[0], "agent-a")

    (used,) = [q.used for q in quota.quotas if q.kind == llm_pb2.QUOTA_KIND_USD_PER_DAY]
    assert served > 0
    assert reasons == {"BUDGET_EXCEEDED"}
    assert cost <= budget
    assert used <= budget
    assert used == pytest.approx(cost, abs=served * 1e-6)  # each cost rounded up to a micro-dollar


async def test_redis_down_fails_closed_and_recovers_by_itself(
    replicas: Callable[..., Any], redis_server: RedisServer
) -> None:
    apps = await replicas({"default": {"requests_per_minute": 1000}}, FakeClock())
    before = await _complete(apps[0], "agent-a")

    redis_server.stop()
    down = details_of(await _refused(apps[1], "agent-a"))
    redis_server.start()
    after = await _complete(apps[2], "agent-a")

    assert before.content == after.content == "emulator reply: hi"
    assert down.code == grpc.StatusCode.UNAVAILABLE
    assert down.reason == "LIMITS_UNAVAILABLE"
    assert down.retry_delay == pytest.approx(1.0)
    assert apps[1].metrics.registry.get_sample_value("llm_limit_store_errors_total") >= 1


class AnswerLost(RedisLimitStore):
    """The real Redis store, whose first reservation runs on Redis but whose answer never arrives (as when
    Redis answers after LLM_REDIS_TIMEOUT)."""

    lost = False

    async def reserve(self, checks: Sequence[Check], lease: str, now: float, until: float) -> Refusal | None:
        refusal = await super().reserve(checks, lease, now, until)
        if not self.lost:
            self.lost = True
            raise StoreUnavailable("redis: TimeoutError")
        return refusal


async def test_a_reservation_whose_answer_was_lost_is_given_back(
    start_gateway: Callable[..., Any], redis_server: RedisServer, tmp_path: Path
) -> None:
    app: App = await start_gateway(
        clock=FakeClock(),
        llm_limits_file=_policy(tmp_path, {"default": {"requests_per_minute": 1}}),
        limit_store=AnswerLost(redis_server.url, 1.0),
    )

    lost = details_of(await _refused(app, "agent-a"))
    await asyncio.wait_for(app.limiter.idle(), 30)  # the gateway gives it back in the background
    served = await _complete(app, "agent-a")

    assert lost.reason == "LIMITS_UNAVAILABLE"
    assert served.content == "emulator reply: hi"


async def test_redis_down_admits_calls_when_the_operator_chose_fail_open(
    replicas: Callable[..., Any], redis_server: RedisServer
) -> None:
    apps = await replicas({"default": {"requests_per_minute": 1000}}, FakeClock(), llm_limits_fail_open=True)

    redis_server.stop()
    reply = await _complete(apps[0], "agent-a")

    assert reply.content == "emulator reply: hi"


def test_a_limits_file_naming_a_model_outside_the_allowlist_stops_the_start(tmp_path: Path) -> None:
    path = _policy(tmp_path, {"default": {"models": {"gpt-unknown": {"requests_per_minute": 1}}}})
    settings = Settings(
        openai_api_key=SecretStr("sk-x"),
        anthropic_api_key=SecretStr("sk-ant-x"),
        google_api_key=SecretStr("AIza-x"),
        llm_allow_plaintext=True,
        llm_auth_disabled=True,
        llm_limits_file=path,
    )

    with pytest.raises(ConfigError) as caught:
        check_settings(settings)

    assert "LLM_LIMITS_FILE sets limits for model 'gpt-unknown'" in str(caught.value)


# --- what a failed call is charged ------------------------------------------------------------------


async def _budget_used(app: App, agent: str) -> float:
    quota = await _quota(app, agent)
    return next(q.used for q in quota.quotas if q.kind == llm_pb2.QUOTA_KIND_USD_PER_DAY)


async def test_a_call_the_provider_answered_with_an_error_is_not_charged(limited: Callable[..., Any]) -> None:
    app: App = await limited({"default": {"usd_per_day": 1.0}}, clock=FakeClock(), llm_max_retries=0)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                llm_pb2.CompleteRequest(
                    model=MODEL, messages=user("hi [[emulate: status=500]]"), max_tokens=300
                ),
                metadata=(("a2a-source-agent", "agent-a"),),
                timeout=10,
            )

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await _budget_used(app, "agent-a") == 0


async def test_a_call_cut_by_its_deadline_after_it_was_sent_keeps_its_worst_case_charged(
    limited: Callable[..., Any], emulators: Emulators
) -> None:
    app: App = await limited({"default": {"usd_per_day": 1.0}}, clock=FakeClock())

    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await llm_pb2_grpc.LLMServiceStub(channel).Complete(
                llm_pb2.CompleteRequest(model=MODEL, messages=user(SLOW), max_tokens=300),
                metadata=(("a2a-source-agent", "agent-a"),),
                timeout=0.5,
            )

    # The provider got the request and may bill it: the gateway cannot know how much, so it keeps the
    # reservation (not 0, which would let a caller spend through short deadlines).
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(emulators.completions("openai")) == 1
    assert await _budget_used(app, "agent-a") == pytest.approx(_worst_case_usd(300, SLOW), abs=1e-6)


async def test_a_fallback_models_own_limits_apply_when_it_serves_and_are_given_back_when_it_does_not(
    limited: Callable[..., Any],
) -> None:
    fallback = MODELS["gemini"]
    app: App = await limited(
        {"default": {"models": {fallback: {"requests_per_minute": 1}}}},
        clock=FakeClock(),
        llm_fallbacks={MODEL: [fallback]},
        llm_max_retries=0,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)

        async def call(text: str) -> llm_pb2.CompleteResponse:
            return await stub.Complete(
                llm_pb2.CompleteRequest(model=MODEL, messages=user(text)),
                metadata=(("a2a-source-agent", "agent-a"),),
                timeout=10,
            )

        primary = [await call("hi") for _ in range(3)]  # the fallback's limit is given back each time
        failed_over = await call("hi [[emulate: status=503 on=openai]]")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call("hi")  # might fail over again: the fallback's one request is used

    assert [r.model for r in primary] == [MODEL] * 3
    assert failed_over.model == fallback
    details = details_of(caught.value)
    assert details.reason == "RATE_LIMIT_EXCEEDED"
    assert details.metadata["scope"] == f"model:{fallback}"


async def test_the_python_client_reads_quotas_and_raises_quota_exceeded(limited: Callable[..., Any]) -> None:
    app: App = await limited({"default": {"requests_per_minute": 1}}, clock=FakeClock())

    async with AsyncLLMClient(f"127.0.0.1:{app.port}", source_agent="py-agent") as client:
        await client.complete("hi", model=MODEL)
        quota = await client.get_quota()
        with pytest.raises(QuotaExceeded) as caught:
            await client.complete("hi", model=MODEL)

    assert quota.identity == "py-agent"
    assert [(q.limit, q.used) for q in quota.quotas] == [(1, 1)]
    assert caught.value.reason == "RATE_LIMIT_EXCEEDED"
    assert caught.value.quota_violations == [("py-agent", "requests_per_minute of 1 for scope all")]
    assert caught.value.retry_delay == pytest.approx(60.0)
