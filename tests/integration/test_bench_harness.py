"""`make bench`'s harness, run at a tiny scale: it starts every side, measures, and writes a report whose
JSON has every figure the docs quote. Checks shape only: no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FIGURE_KEYS = {"value", "ci95", "rounds", "noise"}


def test_bench_harness_writes_every_figure(tmp_path: Path) -> None:
    # The base is HEAD here: any clone has it (be8ffa1, the default, needs the full history).
    tiny = ("--rounds", "2", "--scale", "0.01", "--streams", "20", "--no-variants", "--base", "HEAD")
    subprocess.run(
        [sys.executable, "-m", "tests.bench.run", *tiny, "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [report] = tmp_path.glob("bench-*.json")
    data = json.loads(report.read_text())
    assert {"cores", "cpu_model", "load_average_at_start"} <= data["machine"].keys()
    assert data["other_processes_cores"] >= 0
    figures = data["figures"]
    for scenario in ("unary_c1", "unary_c8", "unary_c64", "stream_c1", "stream_c8"):
        assert figures["overhead"][f"{scenario}_p50"].keys() == FIGURE_KEYS
        assert figures["overhead"][f"{scenario}_p99"].keys() == FIGURE_KEYS
    assert figures["ttft"]["stream_c1_overhead_p50"].keys() == FIGURE_KEYS
    for side in ("floor", "gateway"):
        assert figures["cpu"][side]["unary_c8_per_call"].keys() == FIGURE_KEYS
        assert figures["cpu"][side]["per_streamed_token"].keys() == FIGURE_KEYS
    assert set(figures["throughput"]) == {"sdk", "floor", "gateway", "gateway_features", "base"}
    assert figures["ratios"]["cpu_per_unary_call_c8"].keys() == FIGURE_KEYS
    # The three-part breakdown of a unary call's CPU, for the defaults and with limits and tracing on.
    for config in ("gateway", "gateway_features"):
        assert figures["own_cpu"][config].keys() == {"server", "floor", "sdk", "own"}
        assert figures["own_cpu"][config]["own"].keys() == FIGURE_KEYS
    assert figures["base"]["unary_overhead_p50_minus_base"].keys() == FIGURE_KEYS
    assert figures["base"]["ttft_overhead_p50_minus_base"].keys() == FIGURE_KEYS
    assert [t["target"] for t in data["targets"]] == [
        "gateway's own CPU per unary call (ms)",
        "gateway's own CPU per unary call, limits + tracing sampled out (ms)",
        "server CPU per unary call, gateway / floor",
        "server CPU per streamed token, gateway / floor",
        "unary overhead p50 at c=1, gateway minus base (ms)",
        "TTFT overhead p50 at c=1, gateway minus base (ms)",
        "responses: gateway's own CPU per unary call (ms)",
        "responses: server CPU per streamed token, gateway / floor",
        "5000 concurrent streams: 0 errors, peak RSS (MB)",
    ]
    assert all(t["verdict"] for t in data["targets"])
    assert data["many_streams"]["completed"] + data["many_streams"]["errors"] == 20
    assert data["errors"] == dict.fromkeys(figures["throughput"], 0)
    assert (tmp_path / report.name.replace(".json", ".png")).stat().st_size > 0
    assert "## Targets" in (tmp_path / report.name.replace(".json", ".md")).read_text()
