"""Models near their retirement and models the providers no longer serve: warned of at start, found by
`llm-gateway models verify` through each provider's SDK (`models.list`) against the emulators."""

from __future__ import annotations

import asyncio
import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from server.__main__ import verify_models
from tests.conftest import Emulators, make_settings


def _overlay(tmp_path: Path, *entries: tuple[str, str, datetime.date | None]) -> Path:
    """A catalogue overlay adding (model, provider, retires) entries."""
    text = ""
    for model, provider, retires in entries:
        text += (
            f"[models.'{model}']\nprovider = '{provider}'\ntier = 'fast'\ncontext_window = 8000\n"
            "max_output_tokens = 1000\ninput = 1\noutput = 2\n"
        )
        text += f"retires = {retires.isoformat()}\n\n" if retires is not None else "\n"
    path = tmp_path / "overlay.toml"
    path.write_text(text)
    return path


async def test_verify_reports_every_allowed_model_served(emulators: Emulators) -> None:
    code, report = await verify_models(make_settings(emulators), timeout=10)

    assert code == 0
    assert "claude-haiku-4-5: served" in report  # listed by the provider as its dated snapshot
    assert "gemini-3.5-flash: served" in report
    assert "NOT SERVED" not in report
    assert {r.path for r in emulators.openai.requests} == {"/v1/models"}


async def test_verify_exits_1_naming_an_allowed_model_the_provider_does_not_serve(
    emulators: Emulators, tmp_path: Path
) -> None:
    overlay = _overlay(tmp_path, ("gpt-private", "openai", None))
    settings = make_settings(
        emulators, llm_catalogue_path=str(overlay), allowed_models="gpt-5.4-mini,gpt-private"
    )

    code, report = await verify_models(settings, timeout=10)

    assert code == 1
    assert "openai: gpt-private: NOT SERVED" in report
    assert "openai: gpt-5.4-mini: served" in report


async def test_verify_exits_3_when_a_provider_cannot_be_asked(emulators: Emulators) -> None:
    settings = make_settings(emulators, anthropic_api_key="sk-ant-wrong-0123456789")

    code, report = await verify_models(settings, timeout=10)

    assert code == 3
    assert "anthropic: could not list models" in report
    assert "sk-ant-wrong" not in report


async def test_start_warns_of_allowed_models_within_30_days_of_retirement(
    start_gateway: Callable[..., Any], tmp_path: Path
) -> None:
    today = datetime.datetime.now(datetime.UTC).date()
    overlay = _overlay(
        tmp_path,
        ("gpt-soon", "openai", today + datetime.timedelta(days=10)),
        ("gpt-later", "openai", today + datetime.timedelta(days=60)),
    )

    with structlog.testing.capture_logs() as logs:
        await start_gateway(
            llm_catalogue_path=str(overlay),
            allowed_models="gpt-5.4-mini,gpt-soon,gpt-later",
            llm_default_model="gpt-5.4-mini",
        )

    warnings = [entry for entry in logs if entry["event"] == "model.retiring"]
    assert [(w["model"], w["days_left"]) for w in warnings] == [("gpt-soon", 10)]


async def test_models_verify_command_against_the_emulators_exits_0() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "models",
        "verify",
        "--demo",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0
    assert "openai: gpt-5.5: served" in out.decode()
