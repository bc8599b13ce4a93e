"""The PNG beside each run's JSON: latency by side and concurrency, server CPU against the floor,
throughput by gateway variant. Bars carry their 95 % intervals; a figure judged noise is hatched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _bar(ax: Any, x: float, figure: dict[str, Any], scale: float, color: str, label: str | None) -> None:
    value = figure["value"] * scale
    low, high = (v * scale for v in figure["ci95"])
    ax.bar(
        x,
        value,
        0.25,
        color=color,
        label=label,
        hatch="//" if figure["noise"] else None,
        alpha=0.5 if figure["noise"] else 1.0,
        yerr=[[max(0.0, value - low)], [max(0.0, high - value)]],
        capsize=3,
    )


def plot(data: dict[str, Any], path: Path) -> None:
    fig = data["figures"]
    colors = {"sdk": "#888888", "floor": "#4c72b0", "gateway": "#dd8452"}
    figure, axes = plt.subplots(1, 3, figsize=(16, 5))

    ax = axes[0]
    scenarios = ["unary_c1", "unary_c8", "unary_c64", "stream_c1", "stream_c8"]
    for i, scenario in enumerate(scenarios):
        for j, side in enumerate(("sdk", "floor", "gateway")):
            _bar(
                ax,
                i + (j - 1) * 0.27,
                fig["latency"][side][f"{scenario}_p50"],
                1000,
                colors[side],
                side if i == 0 else None,
            )
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=20)
    ax.set_ylabel("latency p50 (ms)")
    ax.set_yscale("log")
    ax.set_title("Latency p50 (log scale)")
    ax.legend()

    ax = axes[1]
    rows = [
        ("unary_c8_per_call", 1000, "unary call (ms)"),
        ("stream_c8_per_call", 1000, "20-token stream (ms)"),
        ("per_streamed_token", 1e4, "10 streamed tokens (ms)"),
    ]
    for i, (key, scale, _label) in enumerate(rows):
        for j, side in enumerate(("floor", "gateway")):
            _bar(
                ax, i + (j - 0.5) * 0.27, fig["cpu"][side][key], scale, colors[side], side if i == 0 else None
            )
    ax.set_xticks(
        range(len(rows)), ["per unary call", "per 20-token\nstream", "per 10 streamed\ntokens (slope)"]
    )
    ax.set_ylabel("ms")
    ax.set_title("Server CPU")
    ax.legend()

    ax = axes[2]
    names = {
        "sdk": "SDK direct",
        "floor": "floor",
        "gateway": "gateway\nuvloop",
        "gateway_asyncio": "gateway\nasyncio",
        "gateway_2_workers": "gateway\n2 workers",
    }
    sides = [side for side in names if side in fig["throughput"]]
    for i, side in enumerate(sides):
        _bar(ax, i, fig["throughput"][side]["unary_c64"], 1, colors.get(side, "#c44e52"), None)
    ax.set_xticks(range(len(sides)), [names[side] for side in sides])
    ax.set_ylabel("calls/s")
    ax.set_title("Unary throughput at 64 in flight")

    machine = data["machine"]
    figure.suptitle(
        f"llm-grpc bench {data['started']} · {machine['cores']} cores {machine['cpu_model']} · "
        f"machine busy {data['machine_busy_cores']:.2f} cores · hatched = noise"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
