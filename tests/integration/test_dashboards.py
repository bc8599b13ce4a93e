"""The Grafana dashboard and the alerting rules ask only for metrics the gateway exports, and the rules
(and the dashboard's queries) are valid PromQL by Prometheus' own `promtool`.

The metric names come out of every PromQL expression of docs/deploy/grafana/llm-grpc.json and
docs/deploy/prometheus/llm-grpc.rules.yaml; they must all be on /metrics of a real gateway after real
traffic that touches every metric family (success, stream, retries, failover, refusals, budgets).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil

# promtool (Debian's `prometheus` package) is run on this repository's files with a fixed argv.
import subprocess  # nosec B404
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from tests.helpers import user

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "deploy" / "grafana" / "llm-grpc.json"
RULES = ROOT / "docs" / "deploy" / "prometheus" / "llm-grpc.rules.yaml"
PROMETHEUS_RULE = ROOT / "docs" / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"
SERVICE_MONITOR = ROOT / "docs" / "deploy" / "kubernetes" / "monitoring" / "servicemonitor.yaml"
SERVICES = ROOT / "docs" / "deploy" / "kubernetes" / "service.yaml"

# What in a PromQL expression is not a metric name: functions, aggregations, keywords.
PROMQL_WORDS = {
    "abs", "absent", "and", "avg", "bool", "by", "ceil", "clamp_max", "clamp_min", "count", "delta",
    "group_left", "group_right", "histogram_quantile", "ignoring", "increase", "irate", "label_replace",
    "max", "min", "offset", "on", "or", "rate", "sum", "topk", "unless", "vector", "without",
}  # fmt: skip
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `make system-deps` installs it (apt package prometheus)")
    return path


def _rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def _dashboard_expressions() -> dict[str, str]:
    """Panel title and refId → the expression, with Grafana's variables replaced by plain values."""
    found = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found[f"{panel['title']} {target['refId']}"] = expr
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers, range
    selectors, grouping clauses, numbers, functions and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\boffset\s+\w+", "", expr)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {word for word in words if word not in PROMQL_WORDS}


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (method, le) (rate(llm_x_bucket{a="b"}[5m]))) '
        "/ on (p) max(llm_y) unless llm_z offset 1w > bool 0.5"
    )

    assert metric_names(expr) == {"llm_x_bucket", "llm_y", "llm_z"}


@pytest.fixture
def limits_file(tmp_path: Path) -> Path:
    path = tmp_path / "limits.toml"
    path.write_text('[default]\nusd_per_day = 100.0\n\n[identities."greedy"]\nrequests_per_minute = 1\n')
    return path


async def _traffic(target: str) -> None:
    """Calls that make every metric family of the gateway export samples."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)
        planner = (("a2a-source-agent", "planner"),)
        for model in ("gpt-5.4-mini", "claude-haiku-4-5", "gemini-3.1-flash-lite"):
            await stub.Complete(llm_pb2.CompleteRequest(model=model, messages=user("hi")), metadata=planner)
            async for _ in stub.Stream(llm_pb2.StreamRequest(model=model, messages=user("hi there"))):
                pass
        # Retried once, then served; then a failover from Anthropic to OpenAI.
        await stub.Complete(
            llm_pb2.CompleteRequest(
                model="gpt-5.4-mini", messages=user("again [[emulate: status=503 times=1]]")
            ),
            metadata=(("a2a-trace-id", "retry-once"),),
        )
        await stub.Complete(
            llm_pb2.CompleteRequest(
                model="claude-haiku-4-5", messages=user("over [[emulate: status=503 on=anthropic]]")
            )
        )
        refused = [
            stub.Complete(llm_pb2.CompleteRequest(model="gemini-3.1-flash-lite", messages=user("third"))),
            stub.Complete(llm_pb2.CompleteRequest(model="gpt-4o", messages=user("hi"))),
            stub.Complete(
                llm_pb2.CompleteRequest(model="gpt-5.4-mini", messages=user("x [[emulate: status=401]]"))
            ),
        ]
        greedy = (("a2a-source-agent", "greedy"),)
        refused += [
            stub.Complete(llm_pb2.CompleteRequest(messages=user("hi")), metadata=greedy) for _ in range(2)
        ]
        for call in refused:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call


async def _scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return await response.text()


@pytest.fixture
async def scrape(start_gateway: Callable[..., Any], limits_file: Path) -> str:
    """/metrics of a gateway after `_traffic`."""
    app = await start_gateway(
        metrics_port=0,
        llm_limits_file=limits_file,
        llm_fallbacks={"claude-haiku-4-5": ["gpt-5.4-mini"]},
        llm_max_retries=1,
        # Gemini's model on a deployment allowing two requests a minute: the third is refused with
        # UPSTREAM_CAPACITY (the capacity metrics, docs/reliability.md#upstream-capacity).
        llm_deployments={"gemini-3.1-flash-lite": [{"provider": "gemini", "requests_per_minute": 2}]},
    )
    await _traffic(f"127.0.0.1:{app.port}")
    await app.gateway.capacity.states()  # the limit and use gauges, now
    return await _scrape(app.metrics_port)


def _exported(scrape: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(scrape) for sample in family.samples}


def test_the_dashboard_and_the_rules_have_queries() -> None:
    assert len(_dashboard_expressions()) >= 15
    assert {"LLMGatewayErrorRatioHigh", "LLMProviderDown", "LLMProviderCircuitOpen"} <= set(
        _rule_expressions()
    )
    assert {"LLMGatewayOverheadHigh", "LLMCallerBudgetNearlySpent"} <= set(_rule_expressions())


def test_every_metric_in_the_dashboard_and_the_rules_is_exported(scrape: str) -> None:
    exported = _exported(scrape)
    queries = _dashboard_expressions() | _rule_expressions()

    missing = {
        f"{where}: {name}" for where, expr in queries.items() for name in metric_names(expr) - exported
    }

    assert not missing, f"not on /metrics after real traffic: {sorted(missing)}"


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(  # nosec B603
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_on_failing_data_and_stay_quiet_on_healthy_data() -> None:
    """promtool's unit tests of the rules (docs/deploy/prometheus/llm-grpc.rules.test.yaml)."""
    result = subprocess.run(  # nosec B603
        [_promtool(), "test", "rules", RULES.with_name("llm-grpc.rules.test.yaml").name],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each panel query, as a recording rule, so promtool's PromQL parser reads it."""
    rules = [
        {"record": f"dashboard:panel_{index}", "expr": expr}
        for index, expr in enumerate(_dashboard_expressions().values())
    ]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    result = subprocess.run(  # nosec B603
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_finds_no_problem_in_a_real_scrape(scrape: str) -> None:
    result = subprocess.run(  # nosec B603
        [_promtool(), "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_rule_carries_the_same_groups_as_the_rules_file() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())

    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_the_service_monitor_scrapes_the_metrics_port_of_the_service() -> None:
    monitor = yaml.safe_load(SERVICE_MONITOR.read_text())
    services = [doc for doc in yaml.safe_load_all(SERVICES.read_text()) if doc]
    selected = [
        s
        for s in services
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]

    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    assert any(
        port["name"] == "metrics" and port["port"] == 9464 for s in selected for port in s["spec"]["ports"]
    )
